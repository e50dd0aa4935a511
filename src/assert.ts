// Assertions are for bugs, never for the world's faults (those are OperatingError).
// They are always on: a failed assertion ends the process, and recovery replays the log.

export class AssertionError extends Error {
  override name = "AssertionError";
}

// A message that has to be built (a template naming values) is passed as a function, so that
// it is built only when the assertion fails: on a per-request path, formatting an LSN into a
// string that is then thrown away costs more than the check itself.
export function assert(condition: unknown, message: string | (() => string) = "assertion failed"): asserts condition {
  if (!condition) throw new AssertionError(typeof message === "string" ? message : message());
}

export function unreachable(value: never, message = "unreachable"): never {
  throw new AssertionError(`${message}: ${JSON.stringify(value)}`);
}
