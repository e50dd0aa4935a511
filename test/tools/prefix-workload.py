#!/usr/bin/python3
# A write-order workload on libnbd (Debian's python3-libnbd; run with /usr/bin/python3), so a
# test can prove that a replica's image equals the primary's after SOME prefix of the writes
# while they are still going on. test/tools/prefix-checker.ts checks the images.
#
#   URI BLOCKS SECONDS SEED PROGRESS_FILE [QUEUE_DEPTH] [--fua-percent P] [--flush-every N]
#       [--first W]                                      write until SECONDS or SIGTERM/SIGINT
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
# Durability. --fua-percent P sends P % of the writes with FUA (seeded by write number, so a
# replay sends the same ones); --flush-every N issues a FLUSH on every export after every N
# writes (at most one flush in flight). A write is durable once acknowledged with FUA, or
# acknowledged before a FLUSH that then completed on every export: after a crash of the
# server every durable write must still be there. --first W starts at write number W instead
# of 1 (writes 1..W-1 are taken as already on the volume, durable): a crashed server's
# workload continues where the image it recovered stands, rewriting any number >= W with the
# same content it had, so the write order the checker sees is still 1, 2, 3, ...
#
# Progress: every ~50 ms and at exit PROGRESS_FILE is replaced atomically (write + rename)
# with {"acknowledged": N, "issued": M, "durable": D, "stoppedBecause": ...}: N is the highest
# number such that every write <= N is acknowledged, M the highest issued, D the highest such
# that every write <= D is durable. On SECONDS or a signal the workload stops issuing, waits
# for writes in flight, flushes once more when flushes were asked for (at most
# DRAIN_SECONDS_MAX in all), writes the final progress, prints it on stdout and exits 0. If
# the server fails or goes away it exits 3 after writing what it knows (usage errors exit 2).
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


def is_fua(seed, write_number, fua_percent):
    return fua_percent > 0 and mix32(mix32(seed ^ 0x7F4A7C15) ^ write_number) % 100 < fua_percent


class Workload:
    def __init__(self, handles, blocks, seed, queue_depth, fua_percent=0, flush_every=0, first=1):
        self.handles = handles
        self.blocks_per_handle = blocks // len(handles)
        self.blocks = blocks
        self.seed = seed
        self.queue_depth = queue_depth
        self.fua_percent = fua_percent
        self.flush_every = flush_every
        self.first = first
        self.in_flight = {}  # cookie -> (write number, block, buffer kept alive, handle, fua)
        self.blocks_in_flight = set()
        self.completed_ahead = set()  # acknowledged, but an earlier write is not yet
        self.durable_ahead = set()  # acknowledged with FUA, above the durable prefix
        self.flush_in_flight = None  # {"covers": N, "cookies": {(handle id, cookie): handle}}
        self.issued_since_flush = 0
        self.acknowledged = first - 1
        self.issued = first - 1
        self.durable = first - 1
        self.counts = {"fua": 0, "flushes": 0}

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
        fua = is_fua(self.seed, write_number, self.fua_percent)
        flags = nbd.CMD_FLAG_FUA if fua else 0
        cookie = (id(handle), handle.aio_pwrite(buffer, (block % self.blocks_per_handle) * BLOCK_SIZE, flags=flags))
        self.in_flight[cookie] = (write_number, block, buffer, handle, fua)
        self.blocks_in_flight.add(block)
        self.issued = write_number
        self.issued_since_flush += 1

    def flush_due(self):
        return self.flush_every > 0 and self.flush_in_flight is None and self.issued_since_flush >= self.flush_every

    # A FLUSH on every export; it covers the writes acknowledged before it was issued.
    def flush(self):
        cookies = {(id(handle), handle.aio_flush()): handle for handle in self.handles}
        self.flush_in_flight = {"covers": self.acknowledged, "cookies": cookies}
        self.issued_since_flush = 0

    def busy(self):
        return bool(self.in_flight) or self.flush_in_flight is not None

    def poll(self, milliseconds):
        # the handle of the oldest write (else of the flush) in flight waits; the others are only checked
        if self.in_flight:
            oldest = min(self.in_flight.values(), key=lambda entry: entry[0])[3]
        else:
            oldest = next(iter(self.flush_in_flight["cookies"].values()))
        oldest.poll(milliseconds)
        for handle in self.handles:
            if handle is not oldest:
                handle.poll(0)

    def collect(self):
        for cookie in list(self.in_flight):
            handle = self.in_flight[cookie][3]
            if handle.aio_command_completed(cookie[1]):  # raises nbd.Error if the write failed
                write_number, block, _, _, fua = self.in_flight.pop(cookie)
                self.blocks_in_flight.discard(block)
                self.completed_ahead.add(write_number)
                if fua:
                    self.counts["fua"] += 1
                    self.durable_ahead.add(write_number)
        while self.acknowledged + 1 in self.completed_ahead:
            self.completed_ahead.remove(self.acknowledged + 1)
            self.acknowledged += 1
        flush = self.flush_in_flight
        if flush is not None:
            for cookie in list(flush["cookies"]):
                if flush["cookies"][cookie].aio_command_completed(cookie[1]):
                    del flush["cookies"][cookie]
            if not flush["cookies"]:
                self.flush_in_flight = None
                self.counts["flushes"] += 1
                self.durable = max(self.durable, flush["covers"])
        self.durable_ahead = {number for number in self.durable_ahead if number > self.durable}
        while self.durable + 1 in self.durable_ahead:
            self.durable_ahead.remove(self.durable + 1)
            self.durable += 1

    def progress(self, stopped_because):
        return {"acknowledged": self.acknowledged, "issued": self.issued, "durable": self.durable,
                "first": self.first, "fua": self.counts["fua"], "flushes": self.counts["flushes"],
                "stoppedBecause": stopped_because, "seed": self.seed, "blocks": self.blocks,
                "queueDepth": self.queue_depth}


def run(uris, blocks, seconds, seed, progress_path, queue_depth, fua_percent=0, flush_every=0, first=1):
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
    workload = Workload(handles, blocks, seed, queue_depth, fua_percent, flush_every, first)
    stop = {"because": None}

    def on_signal(number, _frame):
        stop["because"] = stop["because"] or signal.Signals(number).name

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    deadline = time.monotonic() + seconds
    drain_deadline = None
    final_flush = flush_every > 0  # at a stop, one last FLUSH makes every acknowledged write durable
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
                    if workload.flush_due():
                        workload.flush()
                if not workload.busy():
                    stop["because"] = "write numbers exhausted"  # only can_issue's number limit
            elif drain_deadline is None:
                drain_deadline = now + DRAIN_SECONDS_MAX
            if final_flush and stop["because"] is not None and not workload.busy():
                final_flush = False
                workload.flush()
            if not workload.busy() or (drain_deadline is not None and now >= drain_deadline):
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


def split_options(arguments):
    # "--name value" pairs anywhere; the rest are positional
    positional, options = [], {}
    index = 0
    while index < len(arguments):
        if arguments[index] in ("--fua-percent", "--flush-every", "--first") and index + 1 < len(arguments):
            options[arguments[index]] = int(arguments[index + 1])
            index += 2
        else:
            positional.append(arguments[index])
            index += 1
    return positional, options


def main(arguments):
    if len(arguments) == 4 and arguments[0] == "selftest":
        return selftest(int(arguments[1]), int(arguments[2]), int(arguments[3]))
    arguments, options = split_options(arguments)
    if len(arguments) not in (5, 6):
        print("usage: URI BLOCKS SECONDS SEED PROGRESS_FILE [QUEUE_DEPTH] [--fua-percent P] [--flush-every N] [--first W]"
              " | selftest SEED BLOCKS COUNT", file=sys.stderr)
        return EXIT_USAGE
    uri, blocks, seconds, seed, progress_path = arguments[0], int(arguments[1]), float(arguments[2]), int(arguments[3]), arguments[4]
    queue_depth = int(arguments[5]) if len(arguments) == 6 else 1
    fua_percent, flush_every, first = options.get("--fua-percent", 0), options.get("--flush-every", 0), options.get("--first", 1)
    if not (0 < blocks <= BLOCKS_MAX and 0 <= seed <= MASK32 and 1 <= queue_depth <= QUEUE_DEPTH_MAX and seconds >= 0
            and 0 <= fua_percent <= 100 and flush_every >= 0 and 1 <= first <= WRITE_NUMBER_MAX):
        print("need 0 < BLOCKS <= %d, 0 <= SEED < 2^32, 1 <= QUEUE_DEPTH <= %d, 0 <= P <= 100, N >= 0, W >= 1"
              % (BLOCKS_MAX, QUEUE_DEPTH_MAX), file=sys.stderr)
        return EXIT_USAGE
    return run(uri.split(","), blocks, seconds, seed, progress_path, queue_depth, fua_percent, flush_every, first)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
