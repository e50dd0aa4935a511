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
# a crash every block must hold a valid tag for that block whose seq is at least the newest
# durable seq, and that seq must be one that was issued for the block.
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
    floor = {}
    issued = {}
    seq = seed * 1_000_000_000  # seqs of different trials never collide
    since_flush = 0
    counts = {"writes": 0, "acked": 0, "fua": 0, "flushes": 0}
    reason = "time"
    deadline = time.time() + seconds

    def durable(block, s):
        if s > floor.get(block, 0):
            floor[block] = s

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
                issued.setdefault(block, []).append(seq)
                buf = nbd.Buffer.from_bytearray(bytearray(block_data(block, seq)))
                cookie = h.aio_pwrite(buf, block * BS, flags=nbd.CMD_FLAG_FUA if fua else 0)
                inflight[cookie] = ("w", block, seq, fua, buf)
                counts["writes"] += 1
            h.poll(-1)
            for cookie in list(inflight):
                if h.aio_command_completed(cookie):
                    entry = inflight.pop(cookie)
                    if entry[0] == "w":
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
        json.dump({"floor": floor, "issued": issued, "counts": counts, "reason": reason, "base": seed * 1_000_000_000}, out)
    print(json.dumps({"counts": counts, "durableBlocks": len(floor), "reason": reason}))


def verify(uri, journal):
    with open(journal) as source:
        state = json.load(source)
    h = nbd.NBD()
    h.connect_uri(uri)
    violations = []
    checked = 0
    for key, seqs in state["issued"].items():
        block = int(key)
        data = h.pread(BS, block * BS)
        floor = state["floor"].get(key, 0)
        magic, tagged_block, seq = struct.unpack_from("<IIQ", data)
        valid = magic == MAGIC and tagged_block == block and data == block_data(block, seq)
        checked += 1
        if not valid:
            if floor > 0 or any(data):
                violations.append({"block": block, "problem": "no valid tag", "floor": floor})
            continue
        if seq <= state["base"] and floor == 0:
            continue  # an earlier trial's block; this trial's writes to it were never durable
        if seq not in seqs:
            violations.append({"block": block, "problem": "seq never issued for this block", "seq": seq})
        elif seq < floor:
            violations.append({"block": block, "problem": "durable write lost", "seq": seq, "floor": floor})
    print(json.dumps({"checked": checked, "durableBlocks": len(state["floor"]), "violations": violations[:20], "violationCount": len(violations)}))


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5], int(sys.argv[6]))
    else:
        verify(sys.argv[2], sys.argv[3])
