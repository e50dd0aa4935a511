// Stable error codes: a public contract. Add codes, never rename them.
//
// Every fault the world can cause (a client, a disk, a peer, an operator) becomes an
// OperatingError with one of these codes. The table maps each code once to the NBD errno a
// client sees, the HTTP status of the admin API, and the exit code of the CLI. Bugs are not
// errors: they are assertion failures (src/assert.ts).

export const nbdErrno = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;
export type NbdErrnoName = keyof typeof nbdErrno;

interface ErrorMapping {
  readonly nbd: NbdErrnoName;
  readonly http: number;
  readonly exit: number;
  readonly summary: string;
}

// Exit codes: 1 generic failure, 2 usage/config, 3 not found, 4 conflict, 5 unreachable/auth,
// 6 storage fault, 7 refused by state.
export const errorTable = {
  USAGE: { nbd: "EINVAL", http: 400, exit: 2, summary: "the command line is not valid" },
  CONFIG_INVALID: { nbd: "EINVAL", http: 400, exit: 2, summary: "the configuration is not valid" },
  REQUEST_INVALID: { nbd: "EINVAL", http: 400, exit: 2, summary: "the request is malformed" },
  REQUEST_MISALIGNED: { nbd: "EINVAL", http: 400, exit: 2, summary: "offset or length breaks the block size" },
  REQUEST_TOO_LARGE: { nbd: "EINVAL", http: 413, exit: 2, summary: "the request exceeds a limit" },
  OUT_OF_RANGE: { nbd: "EINVAL", http: 416, exit: 2, summary: "the request reaches past the end of the image" },
  WRITE_OUT_OF_RANGE: { nbd: "ENOSPC", http: 416, exit: 2, summary: "the write reaches past the end of the image" },
  READ_ONLY: { nbd: "EPERM", http: 403, exit: 7, summary: "the export or volume is read-only" },
  NOT_SUPPORTED: { nbd: "ENOTSUP", http: 501, exit: 1, summary: "the operation is not supported here" },
  UNAUTHORIZED: { nbd: "EPERM", http: 401, exit: 5, summary: "missing or wrong credentials" },
  NODE_UNREACHABLE: { nbd: "EIO", http: 503, exit: 5, summary: "the node's admin API cannot be reached" },
  GROUP_NOT_FOUND: { nbd: "EINVAL", http: 404, exit: 3, summary: "no such group" },
  VOLUME_NOT_FOUND: { nbd: "EINVAL", http: 404, exit: 3, summary: "no such volume" },
  EXPORT_NOT_FOUND: { nbd: "EINVAL", http: 404, exit: 3, summary: "no such export" },
  ROUTE_NOT_FOUND: { nbd: "EINVAL", http: 404, exit: 3, summary: "no such API route" },
  VOLUME_EXISTS: { nbd: "EINVAL", http: 409, exit: 4, summary: "a volume of that name exists" },
  VOLUME_BUSY: { nbd: "EIO", http: 409, exit: 4, summary: "the volume is in use" },
  LOG_FULL: { nbd: "ENOSPC", http: 507, exit: 6, summary: "the group log has no room and did not free any in time" },
  LOG_CORRUPT: { nbd: "EIO", http: 500, exit: 6, summary: "the log holds a record that fails its checks" },
  DISK_IO: { nbd: "EIO", http: 500, exit: 6, summary: "the disk returned an I/O error" },
  DISK_FULL: { nbd: "ENOSPC", http: 507, exit: 6, summary: "the disk is full" },
  SHUTTING_DOWN: { nbd: "ESHUTDOWN", http: 503, exit: 7, summary: "the node is shutting down" },
  OVERLOADED: { nbd: "ENOMEM", http: 503, exit: 7, summary: "a queue or buffer reached its limit" },
  INTERNAL: { nbd: "EIO", http: 500, exit: 1, summary: "an internal error; see the node's log" },
  PEER_UNREACHABLE: { nbd: "EIO", http: 502, exit: 5, summary: "the link's peer cannot be reached or dropped the connection" },
  LINK_REJECTED: { nbd: "EIO", http: 502, exit: 5, summary: "the link's peer or its credential was refused" },
  CREDENTIAL_INVALID: { nbd: "EINVAL", http: 400, exit: 2, summary: "the link credential is not valid" },
  PEER_NOT_CONFIGURED: { nbd: "EPERM", http: 403, exit: 5, summary: "the peer is not configured for this group" },
  GENERATION_STALE: { nbd: "EPERM", http: 409, exit: 7, summary: "the peer's generation of the group is older than ours" },
  LINK_NOT_FOUND: { nbd: "EINVAL", http: 404, exit: 3, summary: "no such link" },
  LINK_EXISTS: { nbd: "EINVAL", http: 409, exit: 4, summary: "a link to that peer exists" },
  ROLE_CONFLICT: { nbd: "EPERM", http: 409, exit: 7, summary: "the group's role on this node does not allow it" },
  REPLICA_INCONSISTENT: { nbd: "EIO", http: 409, exit: 7, summary: "the replica is being resynced and is not a consistent image" },
  VERIFY_DIFFERS: { nbd: "EIO", http: 409, exit: 1, summary: "verify found regions where a replica differs from its primary" },
  SNAPSHOT_NOT_FOUND: { nbd: "EINVAL", http: 404, exit: 3, summary: "no such snapshot" },
  SNAPSHOT_EXISTS: { nbd: "EINVAL", http: 409, exit: 4, summary: "a snapshot of that name exists" },
  SNAPSHOT_HAS_CHILDREN: { nbd: "EINVAL", http: 409, exit: 4, summary: "the snapshot has snapshots of its own; delete them first or use --recursive" },
  SNAPSHOT_CROSS_VOLUME: { nbd: "EINVAL", http: 400, exit: 2, summary: "the images belong to different volumes" },
  SNAPSHOT_STORE_FULL: { nbd: "ENOSPC", http: 507, exit: 6, summary: "the volume's snapshot store is full: the change would overwrite data a snapshot needs" },
  OPERATION_REFUSED: { nbd: "EPERM", http: 409, exit: 7, summary: "this secondary's protection policy refuses the operation" },
  TIMEOUT: { nbd: "EIO", http: 504, exit: 7, summary: "the operation did not finish in time" },
} as const satisfies Record<string, ErrorMapping>;

export type ErrorCode = keyof typeof errorTable;

export type ErrorDetail = Readonly<Record<string, string | number | bigint | boolean | undefined>>;

function formatDetail(detail: ErrorDetail | string): string {
  if (typeof detail === "string") return detail;
  return Object.entries(detail)
    .filter(([, value]) => value !== undefined)
    .map(([key, value]) => `${key}=${String(value)}`)
    .join(" ");
}

export class OperatingError<Code extends ErrorCode = ErrorCode> extends Error {
  override name = "OperatingError";
  readonly detail: ErrorDetail | string;
  constructor(
    readonly code: Code,
    detail: ErrorDetail | string,
    options?: ErrorOptions,
  ) {
    super(`${typeof detail === "string" ? detail : `${errorTable[code].summary}: ${formatDetail(detail)}`}`, options);
    this.detail = detail;
  }

  get nbdErrno(): number {
    return nbdErrno[errorTable[this.code].nbd];
  }
  get httpStatus(): number {
    return errorTable[this.code].http;
  }
  get exitCode(): number {
    return errorTable[this.code].exit;
  }
  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

export function isErrorCode(value: string): value is ErrorCode {
  return Object.hasOwn(errorTable, value);
}

// Maps a node:fs / native error (errno name in `code`) to a typed storage error.
export function fromSystemError(error: unknown, what: string): OperatingError {
  if (error instanceof OperatingError) return error;
  const code = (error as { code?: unknown } | null)?.code;
  const options = { cause: error };
  switch (code) {
    case "ENOSPC":
    case "EDQUOT":
    case "EFBIG":
      return new OperatingError("DISK_FULL", { what, errno: code }, options);
    case "EOPNOTSUPP":
    case "ENOTSUP":
    case "ENOTTY":
      return new OperatingError("NOT_SUPPORTED", { what, errno: code }, options);
    case "EROFS":
    case "EACCES":
    case "EPERM":
      return new OperatingError("READ_ONLY", { what, errno: code }, options);
    default:
      return new OperatingError("DISK_IO", { what, errno: typeof code === "string" ? code : "unknown" }, options);
  }
}
