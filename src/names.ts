// The rule for every name an administrator gives (node, group, volume, snapshot, peer): a
// letter or digit, then letters, digits, '_', '.' or '-'. Each kind has its own length limit.
// (Protective snapshots, which the node names itself, start with '~' so that no given name can
// clash with them: verify-hashes.ts accepts those too.)

export const nameLengthMax = 64; // node, group and peer names

const namePattern = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

export const nameRuleText = "letters, digits, '_', '.' or '-', starting with a letter or digit";

export function isName(value: string, lengthMax: number = nameLengthMax): boolean {
  return value.length <= lengthMax && namePattern.test(value);
}
