// The node's replication: the links of its primary groups (replication/group-links.ts), the
// replicas of its secondary groups (group/replica.ts), and the one TLS listener through which
// a secondary's primaries reach it (io/link-tls.ts).
//
// Security domains: the listener accepts only the replication protocol, only over TLS with a
// client certificate of a link this node accepted (each link has its own CA), and a session
// only for the group that link names, from the primary it names. Accepting a link is an
// operator's step on this node with this node's own admin token (`link accept`), so the
// primary has no way of its own to reach this node's storage.
//
// The primary's link sockets live in one thread of their own (io/link-worker.ts): TLS sealing
// and the kernel's sends stay off the event loop that serves NBD. The listener's sockets (this
// node as a secondary) stay on the main thread.
//
// One session per replica at a time: a new connection from its primary supersedes the old one
// (after a crash of the primary the old TCP connection may linger until its silence limit).

import { join } from "node:path";
import { OperatingError } from "../errors.js";
import { readFileBounded, writeFileAtomic } from "../io/atomic-file.js";
import { LinkListener, linkCredentialsGenerate } from "../io/link-tls.js";
import { LinkIoThread } from "../io/link-worker.js";
import type { Logger } from "../logger.js";
import { systemClock } from "../log/group-log.js";
import type { Group } from "../group/group.js";
import type { Replica } from "../group/replica.js";
import { GroupLinks } from "../replication/group-links.js";
import type { LinkMetricsView } from "../api/metrics.js";
import { type LinkCredential, linkCredentialParse, linkCredentialSerialize } from "../replication/link-credential.js";
import type { LinkMode, OverflowPolicy } from "../replication/primary-link.js";
import { ReplicaSession, ReplicaSessionSlot } from "../replication/replica-session.js";
import type { VolumeRegion } from "../replication/resync.js";
import { linkPeriodicIntervalMsDefault, stateFileBytesMax } from "../constants.js";

export interface LinkAddRequest {
  readonly group: string;
  readonly peer: string;
  readonly host: string;
  readonly port: number;
  readonly mode: LinkMode;
  readonly intervalMs?: number;
  readonly overflow?: OverflowPolicy;
}

export class NodeReplication {
  private readonly links = new Map<string, GroupLinks>();
  private readonly replicas = new Map<string, Replica>();
  private readonly accepted = new Map<string, LinkCredential>(); // group → the secondary half
  private readonly sessions = new Map<string, ReplicaSessionSlot>(); // by group
  private listener: LinkListener | null = null;
  private readonly linkIo: LinkIoThread; // the primary links' sockets; the thread starts at the first connect
  listenAddress: { host: string; port: number } | null = null;

  constructor(
    private readonly node: string,
    private readonly logger: Logger,
  ) {
    this.linkIo = new LinkIoThread(logger);
  }

  // ---- Primary groups ----

  // Loads a primary group's links and makes the group answer to them (before its recovery,
  // which releases the log only as far as the links allow).
  async openPrimary(group: Group, groupDir: string): Promise<GroupLinks> {
    const links = await GroupLinks.open(group, join(groupDir, "links"), {
      node: this.node,
      logger: this.logger.child({ subsystem: "link", group: group.name }),
      clock: systemClock,
      connect: (credential, host, port) => this.linkIo.connect(credential, host, port),
    });
    group.replication = links;
    this.links.set(group.name, links);
    return links;
  }

  // After recovery: regions that were hot at a crash may differ from what peers have.
  async startPrimary(group: Group, hotRegions: readonly VolumeRegion[]): Promise<void> {
    const links = this.links.get(group.name)!;
    for (const link of links.list()) await link.markRegions(hotRegions);
    links.start();
  }

  groupLinks(group: string): GroupLinks {
    const links = this.links.get(group);
    if (links === undefined) throw new OperatingError("ROLE_CONFLICT", { group, what: "links are added on the group's primary" });
    return links;
  }

  // Creates the link's credentials, keeps the primary's half and returns the secondary's (the
  // operator carries it to the peer and runs `link accept` there).
  async addLink(request: LinkAddRequest, nowMs: number): Promise<{ link: Record<string, unknown>; credential: string }> {
    const links = this.groupLinks(request.group);
    const pair = await linkCredentialsGenerate({ group: request.group, primary: this.node, secondary: request.peer });
    const link = await links.add(
      {
        peer: request.peer,
        address: { host: request.host, port: request.port },
        mode: request.mode,
        intervalMs: request.intervalMs ?? linkPeriodicIntervalMsDefault,
        overflow: request.overflow ?? "bitmap",
        credential: pair.primary,
      },
      nowMs,
    );
    this.logger.info({ group: request.group, peer: request.peer, mode: request.mode }, "link added");
    return { link: await link.status(), credential: linkCredentialSerialize(pair.secondary) };
  }

  linkMetrics(): LinkMetricsView[] {
    return [...this.links.values()].flatMap((links) => links.list().map((link) => link.metricsView()));
  }

  async linkList(): Promise<Record<string, unknown>[]> {
    const result: Record<string, unknown>[] = [];
    for (const [group, links] of this.links) for (const link of links.list()) result.push({ group, ...(await link.status()) });
    return result;
  }

  // ---- Secondary groups ----

  async openSecondary(replica: Replica, groupDir: string): Promise<void> {
    this.replicas.set(replica.name, replica);
    const path = join(groupDir, "link.json");
    const bytes = await readFileBounded(path, stateFileBytesMax, (size) => new OperatingError("CREDENTIAL_INVALID", `${path}: ${size} bytes is too large`));
    if (bytes !== null) this.accepted.set(replica.name, linkCredentialParse(bytes.toString("utf8"), path));
  }

  replica(group: string): Replica {
    const replica = this.replicas.get(group);
    if (replica === undefined) throw new OperatingError("ROLE_CONFLICT", { group, what: "the group is not a secondary on this node" });
    return replica;
  }

  // Installs the secondary's half of a link's credential for one of this node's secondary groups.
  async acceptLink(text: string, groupDirOf: (group: string) => string): Promise<{ group: string; primary: string }> {
    const credential = linkCredentialParse(text, "credential");
    if (credential.role !== "secondary") throw new OperatingError("CREDENTIAL_INVALID", "this is the primary's half of the credential; accept the secondary's half");
    if (credential.self !== this.node) throw new OperatingError("CREDENTIAL_INVALID", `the credential is for node ${credential.self}, this is ${this.node}`);
    this.replica(credential.group);
    await writeFileAtomic(join(groupDirOf(credential.group), "link.json"), linkCredentialSerialize(credential));
    this.accepted.set(credential.group, credential);
    this.listener?.setCredentials([...this.accepted.values()]);
    this.sessions.get(credential.group)?.close("the link's credential was replaced");
    this.logger.info({ group: credential.group, primary: credential.peer }, "link accepted");
    return { group: credential.group, primary: credential.peer };
  }

  acceptedPrimary(group: string): string | null {
    return this.accepted.get(group)?.peer ?? null;
  }

  sessionActive(group: string): boolean {
    return this.sessions.get(group)?.active ?? false;
  }

  async listen(host: string, port: number): Promise<{ host: string; port: number }> {
    const listener = new LinkListener(this.logger);
    listener.setCredentials([...this.accepted.values()]);
    listener.onLink((socket, credential) => void this.onLink(socket, credential));
    this.listenAddress = await listener.listen(host, port);
    this.listener = listener;
    return this.listenAddress;
  }

  private async onLink(socket: import("node:tls").TLSSocket, credential: LinkCredential): Promise<void> {
    const replica = this.replicas.get(credential.group);
    if (replica === undefined || this.accepted.get(credential.group)?.linkId !== credential.linkId) {
      socket.destroy();
      return;
    }
    let slot = this.sessions.get(credential.group);
    if (slot === undefined) this.sessions.set(credential.group, (slot = new ReplicaSessionSlot()));
    const reason = await slot.run(
      () =>
        new ReplicaSession(socket, {
          node: this.node,
          replica,
          expected: { group: credential.group, primary: credential.peer, generation: replica.log.generation },
          logger: this.logger.child({ subsystem: "replica-link", group: credential.group }),
          clock: systemClock,
        }),
    );
    if (reason === null) {
      socket.destroy();
      return;
    }
    this.logger.info({ group: credential.group, reason }, "replica link closed");
  }

  // ---- Stop ----

  async stop(): Promise<void> {
    await this.listener?.close();
    for (const slot of this.sessions.values()) slot.close("stopping");
    await Promise.all([...this.sessions.values()].map((slot) => slot.finished()));
    await Promise.all([...this.links.values()].map((links) => links.stop()));
    await this.linkIo.close(); // after the links: each has closed its connection by now
  }
}
