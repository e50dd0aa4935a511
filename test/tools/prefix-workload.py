#!/usr/bin/python3
# A write-order workload on libnbd (Debian's python3-libnbd; run with /usr/bin/python3), so a
# test can prove that a replica's image equals the primary's after SOME prefix of the writes
# while they are still going on. test/tools/prefix-checker.ts checks the images.
#
#   URI BLOCKS SECONDS SEED PROGRESS_FILE [QUEUE_DEPTH]   write until SECONDS or SIGTERM/SIGINT
#     URI may list several exports, comma-separated: the BLOCKS are then split evenly across
#     them in order (block b is block b mod (BLOCKS/n) of export b div (BLOCKS/n)), one write
#     order over all: the checker reads their images concatenated, so a set of images taken
#     together (a group snapshot) is checked as one consistent point.
#   selftest SEED BLOCKS COUNT                            print blockOf and content hashes as JSON,
#                                                         for the test that TS and Python agree
#
# Write number i (1, 2, 3, ...) is 4 KiB to block block_of(seed, i) and holds block_content(
# seed, block, i): the write names itself, and a torn or foreign block fails its checksum.
# Block layout (little-endian; the checksum covers everything after it):
#
#    0  u32  crc32 (zlib, IEEE) of bytes 4..4095
#    4  u32  magic 0x5750534C ("LSPW")
#    8  u32  format version (1)
#   12  u32  seed
#   16  u32  block
#   20  u32  write number
#   24  4072 bytes: SHAKE-128 of bytes 4..23
#
# Order. With QUEUE_DEPTH 1 (the default) write i+1 is issued only after write i is
# acknowledged, so the primary applies writes in write-number order, and any consistent
# replica state is exactly "writes 1..P". With QUEUE_DEPTH Q > 1, write j is issued only when
# every write <= j - Q is acknowledged and no write in flight targets the same block: writes Q
# or more apart, and writes to one block, are then ordered; writes closer than Q may be
# applied in either order, and the checker must be told Q.
#
# Progress: every ~50 ms and at exit PROGRESS_FILE is replaced atomically (write + rename)
# with {"acknowledged": N, "issued": M, "stoppedBecause": ...}: N is the highest number such
# that every write <= N is acknowledged, M the highest issued. On SECONDS or a signal the
# workload stops issuing, waits for writes in flight (at most DRAIN_SECONDS_MAX), writes the
# final progress, prints it on stdout and exits 0. If the server fails or goes away it exits
# 3 after writing what it knows (usage errors exit 2).
import hashlib, json, os, signal, struct, sys, time, zlib
import nbd

BLOCK_SIZE = 4096
HEADER_SIZE = 24
MAGIC = 0x5750534C
FORMAT_VERSION = 1
MASK32 = 0xFFFFFFFF
WRITE_NUMBER_MAX = MASK32  # numbers are u32 in the block and in block_of
BLOCKS_MAX = 1 << 20  # 4 GiB of volume; the checker keeps one u32 per block
QUEUE_DEPTH_MAX = 64
PROGRESS_SECONDS = 0.05
DRAIN_SECONDS_MAX = 10
POLL_MS = 50  # bounds how late a signal or a progress update can be
EXIT_USAGE = 2
EXIT_SERVER = 3


def mix32(value):
    # The finaliser of MurmurHash3: a bijection on u32 that mixes every input bit.
    value &= MASK32
    value ^= value >> 16
    value = (value * 0x85EBCA6B) & MASK32
    value ^= value >> 13
    value = (value * 0xC2B2AE35) & MASK32
    value ^= value >> 16
    return value


def block_of(seed, write_number, blocks):
    return mix32(mix32(seed ^ 0x9E3779B9) ^ write_number) % blocks


def block_content(seed, block, write_number):
    identity = struct.pack("<IIIII", MAGIC, FORMAT_VERSION, seed, block, write_number)
    body = identity + hashlib.shake_128(identity).digest(BLOCK_SIZE - HEADER_SIZE)
    return struct.pack("<I", zlib.crc32(body)) + body


def save_progress(path, progress):
    temporary = path + ".tmp"
    with open(temporary, "w") as out:
        json.dump(progress, out)
    os.replace(temporary, path)


class Workload:
    def __init__(self, handles, blocks, seed, queue_depth):
        self.handles = handles
        self.blocks_per_handle = blocks // len(handles)
        self.blocks = blocks
        self.seed = seed
        self.queue_depth = queue_depth
        self.in_flight = {}  # cookie -> (write number, block, buffer kept alive)
        self.blocks_in_flight = set()
        self.completed_ahead = set()  # acknowledged, but an earlier write is not yet
        self.acknowledged = 0
        self.issued = 0

    def can_issue(self):
        upcoming = self.issued + 1
        return (len(self.in_flight) < self.queue_depth
                and upcoming - self.queue_depth <= self.acknowledged
                and upcoming <= WRITE_NUMBER_MAX
                and block_of(self.seed, upcoming, self.blocks) not in self.blocks_in_flight)

    def issue(self):
        write_number = self.issued + 1
        block = block_of(self.seed, write_number, self.blocks)
        buffer = nbd.Buffer.from_bytearray(bytearray(block_content(self.seed, block, write_number)))
        handle = self.handles[block // self.blocks_per_handle]
        cookie = (id(handle), handle.aio_pwrite(buffer, (block % self.blocks_per_handle) * BLOCK_SIZE))
        self.in_flight[cookie] = (write_number, block, buffer, handle)
        self.blocks_in_flight.add(block)
        self.issued = write_number

    def poll(self, milliseconds):
        # the handle of the oldest write in flight waits; the others are only checked
        oldest = min(self.in_flight.values(), key=lambda entry: entry[0])[3]
        oldest.poll(milliseconds)
        for handle in self.handles:
            if handle is not oldest:
                handle.poll(0)

    def collect(self):
        for cookie in list(self.in_flight):
            handle = self.in_flight[cookie][3]
            if handle.aio_command_completed(cookie[1]):  # raises nbd.Error if the write failed
                write_number, block, _, _ = self.in_flight.pop(cookie)
                self.blocks_in_flight.discard(block)
                self.completed_ahead.add(write_number)
        while self.acknowledged + 1 in self.completed_ahead:
            self.completed_ahead.remove(self.acknowledged + 1)
            self.acknowledged += 1

    def progress(self, stopped_because):
        return {"acknowledged": self.acknowledged, "issued": self.issued, "stoppedBecause": stopped_because,
                "seed": self.seed, "blocks": self.blocks, "queueDepth": self.queue_depth}


def run(uris, blocks, seconds, seed, progress_path, queue_depth):
    if blocks % len(uris) != 0:
        print("BLOCKS must split evenly across %d exports" % len(uris), file=sys.stderr)
        return EXIT_USAGE
    handles = []
    for uri in uris:
        handle = nbd.NBD()
        handle.connect_uri(uri)
        if handle.get_size() < blocks // len(uris) * BLOCK_SIZE:
            print("%s holds fewer than %d blocks" % (uri, blocks // len(uris)), file=sys.stderr)
            return EXIT_USAGE
        handles.append(handle)
    workload = Workload(handles, blocks, seed, queue_depth)
    stop = {"because": None}

    def on_signal(number, _frame):
        stop["because"] = stop["because"] or signal.Signals(number).name

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    deadline = time.monotonic() + seconds
    drain_deadline = None
    progress_due = 0.0
    code = 0
    try:
        while True:
            now = time.monotonic()
            if stop["because"] is None and now >= deadline:
                stop["because"] = "time"
            if stop["because"] is None:
                while workload.can_issue():
                    workload.issue()
                if not workload.in_flight:
                    stop["because"] = "write numbers exhausted"  # only can_issue's number limit
            elif drain_deadline is None:
                drain_deadline = now + DRAIN_SECONDS_MAX
            if not workload.in_flight or (drain_deadline is not None and now >= drain_deadline):
                if stop["because"] is not None:
                    break
            else:
                workload.poll(POLL_MS)
                workload.collect()
            if now >= progress_due:
                save_progress(progress_path, workload.progress(None))
                progress_due = now + PROGRESS_SECONDS
    except nbd.Error as error:
        stop["because"] = "server: %s" % error
        code = EXIT_SERVER
    final = workload.progress(stop["because"])
    save_progress(progress_path, final)
    print(json.dumps(final))
    return code


def selftest(seed, blocks, count):
    written = [block_of(seed, number, blocks) for number in range(1, count + 1)]
    hashes = [hashlib.sha256(block_content(seed, block, number)).hexdigest() for number, block in enumerate(written, 1)]
    print(json.dumps({"blocks": written, "contentSha256": hashes}))
    return 0


def main(arguments):
    if len(arguments) == 4 and arguments[0] == "selftest":
        return selftest(int(arguments[1]), int(arguments[2]), int(arguments[3]))
    if len(arguments) not in (5, 6):
        print("usage: URI BLOCKS SECONDS SEED PROGRESS_FILE [QUEUE_DEPTH] | selftest SEED BLOCKS COUNT", file=sys.stderr)
        return EXIT_USAGE
    uri, blocks, seconds, seed, progress_path = arguments[0], int(arguments[1]), float(arguments[2]), int(arguments[3]), arguments[4]
    queue_depth = int(arguments[5]) if len(arguments) == 6 else 1
    if not (0 < blocks <= BLOCKS_MAX and 0 <= seed <= MASK32 and 1 <= queue_depth <= QUEUE_DEPTH_MAX and seconds >= 0):
        print("need 0 < BLOCKS <= %d, 0 <= SEED < 2^32, 1 <= QUEUE_DEPTH <= %d" % (BLOCKS_MAX, QUEUE_DEPTH_MAX), file=sys.stderr)
        return EXIT_USAGE
    return run(uri.split(","), blocks, seconds, seed, progress_path, queue_depth)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
