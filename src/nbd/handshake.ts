// Option haggling of the fixed newstyle handshake, as a pure state machine: the connection
// hands it one decoded option at a time and sends the replies it returns. It never touches a
// socket or a clock, so every rule of the spec here can be tested with plain buffers.
//
//   haggling ──EXPORT_NAME (known) / GO (known, ACK)──▶ transmission (a Session)
//       │  └─ INFO, LIST, STRUCTURED_REPLY, {LIST,SET}_META_CONTEXT, STARTTLS, unknown: reply, stay
//       └──ABORT (ACK) / EXPORT_NAME (unknown) / too many options──▶ close
//
// TLS is refused by policy (NOTLS mode). Only the "base:allocation" meta context exists.

import { nbdMetaContextsMax, nbdOptionsPerHandshakeMax, nbdPayloadSizeMax, volumeSizeMax } from "../constants.js";
import { assert } from "../assert.js";
import type { NbdExport, NbdExportFlags, NbdExportRegistry } from "./export.js";
import { nbdBlockSizeMinimum, nbdBlockSizePreferred } from "../constants.js";
import {
  NbdFrameError,
  exportNameReplyEncode,
  goOptionDecode,
  info,
  infoBlockSizeEncode,
  infoExportEncode,
  infoStringEncode,
  metaContextBaseAllocation,
  metaContextOptionDecode,
  metaContextReplyDataEncode,
  option,
  optionReply,
  optionReplyEncode,
  optionReplyErrorEncode,
  serverReplyDataEncode,
  stringDecode,
  transmissionFlag,
} from "./protocol.js";

// The context id this server gives "base:allocation" in NBD_OPT_SET_META_CONTEXT replies.
export const metaContextIdBaseAllocation = 1;

// What the handshake agreed on; read-only for the whole transmission phase.
export interface Session {
  readonly export: NbdExport;
  readonly exportName: string;
  readonly size: number; // bytes, as told to the client
  readonly transmissionFlags: number;
  readonly structuredReplies: boolean;
  // The client asked for NBD_INFO_BLOCK_SIZE in NBD_OPT_GO and so promised to honour it:
  // only then are misaligned requests refused (otherwise byte granularity is accepted).
  readonly blockSizeNegotiated: boolean;
  readonly metaContextId: number; // 0: no meta context selected (BLOCK_STATUS is refused)
}

export type HandshakeStep =
  | { readonly kind: "continue"; readonly replies: readonly Buffer[] }
  | { readonly kind: "close"; readonly replies: readonly Buffer[]; readonly hard: boolean; readonly reason: string }
  | { readonly kind: "transmission"; readonly replies: readonly Buffer[]; readonly session: Session };

export function transmissionFlagsFor(flags: NbdExportFlags, structuredReplies: boolean): number {
  // FLUSH, FUA and CACHE are always understood (FUA may arrive on any command, even reads).
  let value = transmissionFlag.hasFlags | transmissionFlag.sendFlush | transmissionFlag.sendFua | transmissionFlag.sendCache;
  if (flags.readOnly) {
    value |= transmissionFlag.readOnly;
  } else {
    if (flags.canTrim) value |= transmissionFlag.sendTrim;
    // FAST_ZERO is advertised with WRITE_ZEROES; without canFastZero it fails fast with ENOTSUP.
    if (flags.canZero) value |= transmissionFlag.sendWriteZeroes | transmissionFlag.sendFastZero;
  }
  if (structuredReplies) value |= transmissionFlag.sendDf; // every read is one content chunk
  if (flags.canMultiConn) value |= transmissionFlag.canMultiConn;
  return value;
}

export class Handshake {
  private optionsSeen = 0;
  private structuredReplies = false;
  // The export name and selection of the last NBD_OPT_SET_META_CONTEXT (undefined: none sent).
  private metaContext: { readonly exportName: string; readonly selected: boolean } | undefined;

  constructor(
    private readonly registry: NbdExportRegistry,
    private readonly noZeroes: boolean,
  ) {}

  // An option whose data was too large to read (it was drained, never buffered).
  optionTooBig(optionType: number): HandshakeStep {
    if (!this.countOption()) return close("too many options", true);
    if (optionType === option.exportName) return close("export name too long", true);
    return reply(optionReplyErrorEncode(optionType, optionReply.errTooBig, "option data too large"));
  }

  option(optionType: number, data: Buffer): HandshakeStep {
    if (!this.countOption()) return close("too many options", true);
    switch (optionType) {
      case option.exportName:
        return this.exportName(data);
      case option.abort:
        return { kind: "close", replies: [optionReplyEncode(optionType, optionReply.ack)], hard: false, reason: "abort" };
      case option.list:
        return this.list(data);
      case option.startTls:
        if (data.length !== 0) return invalid(optionType, "STARTTLS carries no data");
        return reply(optionReplyErrorEncode(optionType, optionReply.errPolicy, "TLS is not offered on this server"));
      case option.info:
      case option.go:
        return this.infoOrGo(optionType, data);
      case option.structuredReply:
        if (data.length !== 0) return invalid(optionType, "STRUCTURED_REPLY carries no data");
        this.structuredReplies = true;
        return reply(optionReplyEncode(optionType, optionReply.ack));
      case option.listMetaContext:
      case option.setMetaContext:
        return this.metaContextOption(optionType, data);
      default:
        return reply(optionReplyErrorEncode(optionType, optionReply.errUnsupported, `option ${optionType} is not supported`));
    }
  }

  private countOption(): boolean {
    this.optionsSeen += 1;
    return this.optionsSeen <= nbdOptionsPerHandshakeMax;
  }

  // NBD_OPT_EXPORT_NAME cannot be answered with an error: an unknown export ends the session.
  private exportName(data: Buffer): HandshakeStep {
    let name: string;
    try {
      name = stringDecode(data, 0, data.length, "export name");
    } catch (error) {
      if (error instanceof NbdFrameError) return close("export name is not a valid string", true);
      throw error;
    }
    const found = this.registry.lookup(name);
    if (!found) return close(`unknown export "${name}"`, true);
    const session = this.sessionFor(found, name, false);
    return { kind: "transmission", replies: [exportNameReplyEncode(session.size, session.transmissionFlags, this.noZeroes)], session };
  }

  private list(data: Buffer): HandshakeStep {
    if (data.length !== 0) return invalid(option.list, "LIST carries no data");
    const replies = this.registry
      .list()
      .map((entry) => optionReplyEncode(option.list, optionReply.server, serverReplyDataEncode(entry.name, entry.description)));
    replies.push(optionReplyEncode(option.list, optionReply.ack));
    return { kind: "continue", replies };
  }

  private infoOrGo(optionType: number, data: Buffer): HandshakeStep {
    let request;
    try {
      request = goOptionDecode(data);
    } catch (error) {
      if (error instanceof NbdFrameError) return invalid(optionType, `malformed request (${error.reason})`);
      throw error;
    }
    const found = this.registry.lookup(request.name);
    if (!found) return reply(optionReplyErrorEncode(optionType, optionReply.errUnknown, `unknown export "${request.name}"`));
    const blockSizeRequested = request.infoRequests.includes(info.blockSize);
    const session = this.sessionFor(found, request.name, optionType === option.go && blockSizeRequested);
    const replies = [optionReplyEncode(optionType, optionReply.info, infoExportEncode(session.size, session.transmissionFlags))];
    if (request.infoRequests.includes(info.name)) {
      replies.push(optionReplyEncode(optionType, optionReply.info, infoStringEncode(info.name, found.name)));
    }
    if (request.infoRequests.includes(info.description) && found.description !== "") {
      replies.push(optionReplyEncode(optionType, optionReply.info, infoStringEncode(info.description, found.description)));
    }
    // Sent even when not requested (the spec allows it); enforced only when requested in GO.
    replies.push(
      optionReplyEncode(optionType, optionReply.info, infoBlockSizeEncode(nbdBlockSizeMinimum, nbdBlockSizePreferred, nbdPayloadSizeMax)),
    );
    replies.push(optionReplyEncode(optionType, optionReply.ack));
    if (optionType === option.info) return { kind: "continue", replies };
    return { kind: "transmission", replies, session };
  }

  private metaContextOption(optionType: number, data: Buffer): HandshakeStep {
    const selecting = optionType === option.setMetaContext;
    if (selecting) this.metaContext = undefined; // replaced even when this request fails
    if (!this.structuredReplies) return invalid(optionType, "negotiate structured replies first");
    let request;
    try {
      request = metaContextOptionDecode(data, nbdMetaContextsMax);
    } catch (error) {
      if (!(error instanceof NbdFrameError)) throw error;
      if (error.reason === "size") return reply(optionReplyErrorEncode(optionType, optionReply.errTooBig, "too many queries"));
      return invalid(optionType, `malformed request (${error.reason})`);
    }
    if (!this.registry.lookup(request.exportName)) {
      return reply(optionReplyErrorEncode(optionType, optionReply.errUnknown, `unknown export "${request.exportName}"`));
    }
    // SET selects only the exact name; LIST also answers the empty list and the "base:" wildcard.
    const matches = request.queries.some(
      (query) => query === metaContextBaseAllocation || (!selecting && query === "base:"),
    ) || (!selecting && request.queries.length === 0);
    const replies: Buffer[] = [];
    if (matches) {
      const id = selecting ? metaContextIdBaseAllocation : 0;
      replies.push(optionReplyEncode(optionType, optionReply.metaContext, metaContextReplyDataEncode(id, metaContextBaseAllocation)));
    }
    replies.push(optionReplyEncode(optionType, optionReply.ack));
    if (selecting) this.metaContext = { exportName: request.exportName, selected: matches };
    return { kind: "continue", replies };
  }

  private sessionFor(found: NbdExport, name: string, blockSizeNegotiated: boolean): Session {
    const size = found.size();
    assert(Number.isSafeInteger(size) && size >= 0 && size <= volumeSizeMax, "an export's size is within volumeSizeMax");
    const metaContextSelected =
      this.structuredReplies && this.metaContext !== undefined && this.metaContext.selected && this.metaContext.exportName === name;
    return {
      export: found,
      exportName: found.name,
      size,
      transmissionFlags: transmissionFlagsFor(found.flags, this.structuredReplies),
      structuredReplies: this.structuredReplies,
      blockSizeNegotiated,
      metaContextId: metaContextSelected ? metaContextIdBaseAllocation : 0,
    };
  }
}

function reply(buffer: Buffer): HandshakeStep {
  return { kind: "continue", replies: [buffer] };
}

function invalid(optionType: number, message: string): HandshakeStep {
  return reply(optionReplyErrorEncode(optionType, optionReply.errInvalid, message));
}

function close(reason: string, hard: boolean): HandshakeStep {
  return { kind: "close", replies: [], hard, reason };
}
