#!/usr/bin/python3
# A crash-consistency client on libnbd (Debian's python3-libnbd; run with /usr/bin/python3).
#
#   write  URI BLOCKS SECONDS JOURNAL SEED   random 4 KiB tagged writes at QD16, FUA on some,
#                                            FLUSH every 32; stops at SECONDS or when the
#                                            server dies, then saves what it knows is durable
#   verify URI JOURNAL                       reads every block back and checks it
#
# A block's tag is (magic, block, seq, crc32) + bytes derived from seq. A write is durable
# once it was acknowledged with FUA, or acknowledged before a FLUSH that then completed. After
# a crash every block that had a durable write must hold a valid tag of a write issued to that
# block which is not older than any durable write: a write acknowledged before a durable write
# was issued is older, and reading it back means the durable write was lost. (Writes in
# flight at the same time have no order between them, as NBD says.)
import json, random, struct, sys, time, zlib
import nbd

BS = 4096
MAGIC = 0x4C535447
QD = 16


def block_data(block, seq):
    header = struct.pack("<IIQ", MAGIC, block, seq)
    body = random.Random(seq).randbytes(BS - 20)
    return header + struct.pack("<I", zlib.crc32(header + body)) + body


def write(uri, blocks, seconds, journal, seed):
    rng = random.Random(seed)
    h = nbd.NBD()
    h.connect_uri(uri)
    inflight = {}  # cookie -> ("w", block, seq, fua) | ("f", covered)
    acked = []  # (block, seq) acknowledged, not yet covered by an issued flush
    durable_seqs = {}  # block -> [seq] durable
    issued = {}  # block -> {seq: [issue tick, ack tick or None]}
    tick = 0
    seq = seed * 1_000_000_000  # seqs of different trials never collide
    since_flush = 0
    counts = {"writes": 0, "acked": 0, "fua": 0, "flushes": 0}
    reason = "time"
    deadline = time.time() + seconds

    def durable(block, s):
        durable_seqs.setdefault(block, []).append(s)

    try:
        while time.time() < deadline:
            while len(inflight) < QD:
                if since_flush >= 32 and not any(v[0] == "f" for v in inflight.values()):
                    cookie = h.aio_flush()
                    inflight[cookie] = ("f", acked)
                    acked = []
                    since_flush = 0
                    continue
                since_flush += 1
                seq += 1
                block = rng.randrange(blocks)
                fua = rng.random() < 0.1
                tick += 1
                issued.setdefault(block, {})[seq] = [tick, None]
                buf = nbd.Buffer.from_bytearray(bytearray(block_data(block, seq)))
                cookie = h.aio_pwrite(buf, block * BS, flags=nbd.CMD_FLAG_FUA if fua else 0)
                inflight[cookie] = ("w", block, seq, fua, buf)
                counts["writes"] += 1
            h.poll(-1)
            for cookie in list(inflight):
                if h.aio_command_completed(cookie):
                    entry = inflight.pop(cookie)
                    tick += 1
                    if entry[0] == "w":
                        issued[entry[1]][entry[2]][1] = tick
                        counts["acked"] += 1
                        acked.append((entry[1], entry[2]))
                        if entry[3]:
                            counts["fua"] += 1
                            durable(entry[1], entry[2])
                    else:
                        counts["flushes"] += 1
                        for block, s in entry[1]:
                            durable(block, s)
    except nbd.Error as error:
        reason = "server gone: %s" % error
    with open(journal, "w") as out:
        json.dump({"durable": durable_seqs, "issued": issued, "counts": counts, "reason": reason, "base": seed * 1_000_000_000}, out)
    print(json.dumps({"counts": counts, "durableBlocks": len(durable_seqs), "reason": reason}))


def verify(uri, journal):
    with open(journal) as source:
        state = json.load(source)
    h = nbd.NBD()
    h.connect_uri(uri)
    violations = []
    checked = 0
    for key, writes in state["issued"].items():
        block = int(key)
        data = h.pread(BS, block * BS)
        durables = state["durable"].get(key, [])
        magic, tagged_block, seq = struct.unpack_from("<IIQ", data)
        valid = magic == MAGIC and tagged_block == block and data == block_data(block, seq)
        checked += 1
        if not valid:
            if durables or any(data):
                violations.append({"block": block, "problem": "no valid tag", "durable": durables})
            continue
        if seq <= state["base"]:
            if durables:
                violations.append({"block": block, "problem": "durable write lost (older trial's data)", "seq": seq})
            continue
        entry = writes.get(str(seq))
        if entry is None:
            violations.append({"block": block, "problem": "seq never issued for this block", "seq": seq})
            continue
        for d in durables:
            if entry[1] is not None and entry[1] < writes[str(d)][0]:
                violations.append({"block": block, "problem": "durable write lost", "seq": seq, "durable": d})
                break
    print(json.dumps({"checked": checked, "durableBlocks": len(state["durable"]), "violations": violations[:20], "violationCount": len(violations)}))


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5], int(sys.argv[6]))
    else:
        verify(sys.argv[2], sys.argv[3])
