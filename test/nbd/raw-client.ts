// A deliberately dumb NBD client over a raw socket, for sending what real clients never send.
// Reads are exact-length with a timeout; `ended()` reports whether the server closed.

import { connect, type Socket } from "node:net";
import {
  clientFlag,
  command,
  goOptionEncode,
  info,
  magicSimpleReply,
  magicStructuredReply,
  metaContextOptionEncode,
  option,
  optionEncode,
  optionReply,
  requestHeaderEncode,
} from "../../src/nbd/protocol.js";

export interface OptionReply {
  readonly option: number;
  readonly type: number;
  readonly data: Buffer;
}

export interface Reply {
  readonly structured: boolean;
  readonly errno: number;
  readonly handleLow: number;
  readonly type: number; // structured chunk type (or -1 for a simple reply)
  readonly flags: number;
  readonly payload: Buffer;
}

// Writes `data` at `offset` of an export through a fresh connection, then flushes.
export async function writeThrough(path: string, exportName: string, offset: number, data: Buffer): Promise<void> {
  const client = await RawClient.connect(path);
  try {
    await client.handshake(exportName);
    client.request(command.write, 1, offset, data.length, 0, data);
    client.request(command.flush, 2, 0, 0);
    for (let reply = 0; reply < 2; reply++) {
      const { errno } = await client.reply();
      if (errno !== 0) throw new Error(`write to ${exportName} failed with errno ${errno}`);
    }
  } finally {
    client.destroy();
  }
}

export class RawClient {
  private buffered: Buffer[] = [];
  private bufferedLength = 0;
  private waiter: (() => void) | undefined;
  private isEnded = false;

  private constructor(readonly socket: Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.buffered.push(chunk);
      this.bufferedLength += chunk.length;
      this.waiter?.();
    });
    socket.on("close", () => {
      this.isEnded = true;
      this.waiter?.();
    });
    socket.on("error", () => {});
  }

  static connect(path: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = connect({ path });
      socket.once("connect", () => resolve(new RawClient(socket)));
      socket.once("error", reject);
    });
  }

  write(data: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(data);
  }

  async read(length: number, timeoutMs = 3000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.bufferedLength < length) {
      if (this.isEnded) throw new Error(`connection closed with ${this.bufferedLength}/${length} bytes`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${length} bytes (have ${this.bufferedLength})`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = undefined;
    }
    const all = Buffer.concat(this.buffered);
    this.buffered = [all.subarray(length)];
    this.bufferedLength = all.length - length;
    return all.subarray(0, length);
  }

  // True if the server closed the connection within the time (data left unread is ignored).
  async ended(timeoutMs = 3000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.isEnded && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    return this.isEnded;
  }

  // What has arrived and not been read yet, left in place.
  peek(): Buffer {
    return Buffer.concat(this.buffered);
  }

  get bytesBuffered(): number {
    return this.bufferedLength;
  }

  destroy(): void {
    this.socket.destroy();
  }

  // Greeting (18 bytes) and client flags.
  async start(flags = clientFlag.fixedNewstyle | clientFlag.noZeroes): Promise<number> {
    const greeting = await this.read(18);
    if (greeting.subarray(0, 16).toString("latin1") !== "NBDMAGICIHAVEOPT") throw new Error("bad greeting");
    const flagsBuffer = Buffer.alloc(4);
    flagsBuffer.writeUInt32BE(flags >>> 0);
    this.write(flagsBuffer);
    return greeting.readUInt16BE(16);
  }

  async optionReply(): Promise<OptionReply> {
    const header = await this.read(20);
    if (header.readUInt32BE(0) !== 0x0003e889 || header.readUInt32BE(4) !== 0x045565a9) throw new Error("bad option reply magic");
    const length = header.readUInt32BE(16);
    return { option: header.readUInt32BE(8), type: header.readUInt32BE(12), data: await this.read(length) };
  }

  // Sends an option and collects replies up to the final one (ACK or an error).
  async option(type: number, data?: Buffer): Promise<OptionReply[]> {
    this.write(optionEncode(type, data));
    const replies: OptionReply[] = [];
    for (;;) {
      const reply = await this.optionReply();
      replies.push(reply);
      if (reply.type === optionReply.ack || reply.type >= 0x80000000) return replies;
    }
  }

  // A full fixed-newstyle handshake ending in GO; returns the size and transmission flags.
  async handshake(
    name: string,
    options: { structured?: boolean; meta?: boolean; blockSize?: boolean } = {},
  ): Promise<{ size: number; flags: number }> {
    await this.start();
    if (options.structured) await this.option(option.structuredReply);
    if (options.meta) await this.option(option.setMetaContext, metaContextOptionEncode(name, ["base:allocation"]));
    const replies = await this.option(option.go, goOptionEncode(name, options.blockSize ? [info.blockSize] : []));
    const last = replies[replies.length - 1];
    if (last?.type !== optionReply.ack) throw new Error(`GO failed: 0x${last?.type.toString(16)}`);
    const exportInfo = replies.find((reply) => reply.type === optionReply.info && reply.data.readUInt16BE(0) === info.export);
    if (!exportInfo) throw new Error("no NBD_INFO_EXPORT");
    return { size: Number(exportInfo.data.readBigUInt64BE(2)), flags: exportInfo.data.readUInt16BE(10) };
  }

  // handshake()'s options and `then` (requests) in one write, before reading anything: what a
  // client that pipelines its requests behind GO sends. Then reads the greeting and every reply.
  async handshakePipelined(name: string, options: { structured?: boolean; meta?: boolean; blockSize?: boolean }, then: Buffer): Promise<void> {
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(clientFlag.fixedNewstyle | clientFlag.noZeroes);
    const sent = [
      ...(options.structured ? [optionEncode(option.structuredReply)] : []),
      ...(options.meta ? [optionEncode(option.setMetaContext, metaContextOptionEncode(name, ["base:allocation"]))] : []),
      optionEncode(option.go, goOptionEncode(name, options.blockSize ? [info.blockSize] : [])),
    ];
    this.write(Buffer.concat([flags, ...sent, then]));
    if ((await this.read(18)).subarray(0, 16).toString("latin1") !== "NBDMAGICIHAVEOPT") throw new Error("bad greeting");
    for (let answered = 0; answered < sent.length; ) {
      const reply = await this.optionReply();
      if (reply.type >= 0x80000000) throw new Error(`option ${reply.option} failed: 0x${reply.type.toString(16)}`);
      if (reply.type === optionReply.ack) answered += 1;
    }
  }

  request(type: number, handleLow: number, offset: number, length: number, flags = 0, payload?: Buffer): void {
    const header = requestHeaderEncode({ flags, type, handleHigh: 0, handleLow, offset, length });
    this.write(payload ? Buffer.concat([header, payload]) : header);
  }

  // One reply message; for a simple READ reply pass the expected data length.
  async reply(readLength = 0): Promise<Reply> {
    const head = await this.read(4);
    const magic = head.readUInt32BE(0);
    if (magic === magicSimpleReply) {
      const rest = await this.read(12);
      const errno = rest.readUInt32BE(0);
      const payload = errno === 0 && readLength > 0 ? await this.read(readLength) : Buffer.alloc(0);
      return { structured: false, errno, handleLow: rest.readUInt32BE(8), type: -1, flags: 0, payload };
    }
    if (magic !== magicStructuredReply) throw new Error(`bad reply magic 0x${magic.toString(16)}`);
    const rest = await this.read(16);
    const type = rest.readUInt16BE(2);
    const payload = await this.read(rest.readUInt32BE(12));
    const errno = type >= 0x8000 ? payload.readUInt32BE(0) : 0;
    return { structured: true, errno, handleLow: rest.readUInt32BE(8), type, flags: rest.readUInt16BE(0), payload };
  }
}
