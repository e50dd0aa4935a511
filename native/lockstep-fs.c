/*
 * lockstep-fs: the few file-system calls that node:fs does not expose, and CRC-32C.
 *
 *   seek(fd, offset, whence)                -> offset, or -1 when SEEK_DATA/SEEK_HOLE hit ENXIO
 *   fallocate(fd, mode, offset, length)     -> Promise<void>  (mode: "punch" | "zero" | "allocate")
 *   blockRange(fd, request, offset, length) -> Promise<void>  (request: "discard" | "zeroout")
 *   startWriteback(fd, "writeback", offset, length) -> Promise<void>  sync_file_range(SYNC_FILE_RANGE_WRITE)
 *   readNoWait(fd, buffer, position)        -> bytes read, or -1 when it would block
 *   writeNoWait(fd, buffers[], position)    -> bytes written, or -1 when it would block
 *   writeBatch(fd, buffers[], positions[])  -> Promise<void>  each buffer at its position, in order
 *   writeDirect(fd, buffers[], position)    -> Promise<void>  the buffers back to back, through a
 *                                              page-aligned copy (fd opened with O_DIRECT)
 *   crc32c(bytes, initial)                  -> CRC-32C of bytes continuing from initial (crc32c.c)
 *   crc32cPortable(bytes, initial)          -> the same with the tables only (for the tests)
 *   crc32cHardware                          -> whether crc32c uses the crc32 instruction
 *
 * readNoWait/writeNoWait are preadv2/pwritev2 with RWF_NOWAIT, called on the event loop
 * thread: they succeed only when the page cache can serve them at once (no disk read, no
 * writeback throttling), and then cost one syscall instead of a thread-pool round trip. On
 * -1 the caller falls back to node:fs on the thread pool.
 *
 * seek() is synchronous: SEEK_DATA/SEEK_HOLE/SEEK_END read metadata only.
 * fallocate() and blockRange() may touch many extents, so they run on the libuv
 * thread pool and settle a promise. Errors carry `code` = the errno name (EOPNOTSUPP, ...),
 * the same shape as node:fs errors, so the caller maps them with one table.
 *
 * writeBatch() is a replica's applier: a run of logged writes to one image, each at its own
 * offset, written one after another in log order by one thread-pool job instead of one job
 * (and its promise chain) each. Written in order, the image is at every moment the result of
 * a prefix of the run, as with separate writes. The buffers array is held by a reference
 * until the job settles, so its buffers cannot be collected while the pool thread reads them.
 *
 * writeDirect() is a group log's batch write on a descriptor opened with O_DIRECT: the bytes go
 * from one page-aligned buffer to the device and never into the page cache. O_DIRECT wants the
 * memory, the position and the length aligned, and a batch is a list of buffers (record
 * headers, payloads where the client's bytes landed, zero padding) at any address, so the pool
 * thread copies them, up to DIRECT_CHUNK_BYTES at a time, into an aligned buffer of its own
 * (allocated on its first such job, kept for the life of the process) and writes each chunk.
 * A copy within the thread's own warm buffer costs far less than the page cache's: a fresh
 * page for every 4 KiB the log writes, since the log is written once and read only on
 * catch-up and recovery. Position and total length must be multiples of DIRECT_ALIGN_BYTES.
 *
 * crc32c() runs on every log record, frame and metadata page: it reads the bytes in place
 * (any Uint8Array, no copy) and does nothing else, since the call around it (about 60 ns) is
 * already a third of what a 4 KiB checksum costs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <node_api.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <limits.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>

#include "crc32c.h"

#define CHECK(call)                                  \
  do {                                               \
    if ((call) != napi_ok) return NULL;              \
  } while (0)

/* The errno's name (EIO, EDQUOT, ESPIPE, ...), as node:fs errors carry it in `code`: every
 * errno, so that fromSystemError (src/errors.ts) types a native failure as it types the same
 * failure from node:fs. */
static const char *errno_name(int error) {
  const char *name = strerrorname_np(error);
  return name != NULL ? name : "EUNKNOWN";
}

static napi_value make_error(napi_env env, int error, const char *syscall) {
  napi_value code, message, result;
  const char *name = errno_name(error);
  char text[160];
  snprintf(text, sizeof text, "%s %s: %s", syscall, name, strerror(error));
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &result);
  napi_value errno_value;
  napi_create_int32(env, -error, &errno_value);
  napi_set_named_property(env, result, "errno", errno_value);
  napi_value syscall_value;
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &syscall_value);
  napi_set_named_property(env, result, "syscall", syscall_value);
  return result;
}

static int read_int64(napi_env env, napi_value value, int64_t *out) {
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok) return 0;
  if (type == napi_bigint) {
    bool lossless;
    return napi_get_value_bigint_int64(env, value, out, &lossless) == napi_ok && lossless;
  }
  if (type != napi_number) return 0;
  return napi_get_value_int64(env, value, out) == napi_ok;
}

static napi_value seek(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd, whence;
  int64_t offset;
  if (argc != 3 || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      !read_int64(env, argv[1], &offset) || napi_get_value_int32(env, argv[2], &whence) != napi_ok) {
    napi_throw_type_error(env, NULL, "seek(fd, offset, whence)");
    return NULL;
  }
  off_t result = lseek(fd, (off_t)offset, whence);
  napi_value value;
  if (result < 0) {
    if (errno == ENXIO && (whence == SEEK_DATA || whence == SEEK_HOLE)) {
      CHECK(napi_create_int64(env, -1, &value));
      return value;
    }
    napi_throw(env, make_error(env, errno, "lseek"));
    return NULL;
  }
  CHECK(napi_create_int64(env, (int64_t)result, &value));
  return value;
}

/* The range jobs: each entry point (fallocate, blockRange, startWriteback) accepts its own
 * modes; a job's kind indexes this table for its mode name and, in errors, its syscall. */
enum { RANGE_PUNCH, RANGE_ZERO, RANGE_ALLOCATE, RANGE_DISCARD, RANGE_ZEROOUT, RANGE_WRITEBACK };
static const struct {
  const char *mode;
  const char *syscall;
} range_kinds[] = {
    [RANGE_PUNCH] = {"punch", "fallocate"},
    [RANGE_ZERO] = {"zero", "fallocate"},
    [RANGE_ALLOCATE] = {"allocate", "fallocate"},
    [RANGE_DISCARD] = {"discard", "ioctl(BLKDISCARD)"},
    [RANGE_ZEROOUT] = {"zeroout", "ioctl(BLKZEROOUT)"},
    [RANGE_WRITEBACK] = {"writeback", "sync_file_range"},
};

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int fd;
  int kind; /* RANGE_* */
  int64_t offset;
  int64_t length;
  int error;
} RangeJob;

static void range_execute(napi_env env, void *data) {
  (void)env;
  RangeJob *job = data;
  int result;
  uint64_t range[2] = {(uint64_t)job->offset, (uint64_t)job->length};
  switch (job->kind) {
    case RANGE_PUNCH:
      result = fallocate(job->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, job->offset, job->length);
      break;
    case RANGE_ZERO:
      result = fallocate(job->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, job->offset, job->length);
      break;
    case RANGE_ALLOCATE: result = fallocate(job->fd, 0, job->offset, job->length); break; /* blocks, and the size if past it */
    case RANGE_DISCARD: result = ioctl(job->fd, BLKDISCARD, range); break;
    case RANGE_ZEROOUT: result = ioctl(job->fd, BLKZEROOUT, range); break;
    default: result = sync_file_range(job->fd, job->offset, job->length, SYNC_FILE_RANGE_WRITE); break;
  }
  job->error = result < 0 ? errno : 0;
}

static void range_complete(napi_env env, napi_status status, void *data) {
  RangeJob *job = data;
  if (status != napi_ok) job->error = EINTR;
  if (job->error == 0) {
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    napi_resolve_deferred(env, job->deferred, undefined);
  } else {
    napi_reject_deferred(env, job->deferred, make_error(env, job->error, range_kinds[job->kind].syscall));
  }
  napi_delete_async_work(env, job->work);
  free(job);
}

/* (fd, mode, offset, length): `mode` must name one of `kinds` (count of them). */
static napi_value range_start(napi_env env, napi_callback_info info, const int *kinds, size_t count) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  int64_t offset, length;
  char mode[16];
  size_t mode_length;
  if (argc != 4 || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_string_utf8(env, argv[1], mode, sizeof mode, &mode_length) != napi_ok ||
      !read_int64(env, argv[2], &offset) || !read_int64(env, argv[3], &length) || offset < 0 || length <= 0) {
    napi_throw_type_error(env, NULL, "(fd, mode, offset, length) with offset >= 0 and length > 0");
    return NULL;
  }
  int kind = -1;
  for (size_t index = 0; index < count && kind < 0; index++) {
    if (strcmp(mode, range_kinds[kinds[index]].mode) == 0) kind = kinds[index];
  }
  if (kind < 0) {
    napi_throw_type_error(env, NULL, "unknown mode");
    return NULL;
  }
  RangeJob *job = calloc(1, sizeof *job);
  if (job == NULL) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  job->fd = fd;
  job->kind = kind;
  job->offset = offset;
  job->length = length;
  napi_value promise, name;
  CHECK(napi_create_promise(env, &job->deferred, &promise));
  CHECK(napi_create_string_utf8(env, "lockstep-fs", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_create_async_work(env, NULL, name, range_execute, range_complete, job, &job->work));
  CHECK(napi_queue_async_work(env, job->work));
  return promise;
}

static napi_value fallocate_range(napi_env env, napi_callback_info info) {
  static const int kinds[] = {RANGE_PUNCH, RANGE_ZERO, RANGE_ALLOCATE};
  return range_start(env, info, kinds, sizeof kinds / sizeof kinds[0]);
}

static napi_value block_range(napi_env env, napi_callback_info info) {
  static const int kinds[] = {RANGE_DISCARD, RANGE_ZEROOUT};
  return range_start(env, info, kinds, sizeof kinds / sizeof kinds[0]);
}

/* startWriteback(fd, "writeback", offset, length). */
static napi_value start_writeback(napi_env env, napi_callback_info info) {
  static const int kinds[] = {RANGE_WRITEBACK};
  return range_start(env, info, kinds, sizeof kinds / sizeof kinds[0]);
}

static int would_block(int error) {
  return error == EAGAIN || error == EOPNOTSUPP || error == EINVAL;
}

static napi_value read_nowait(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  int64_t position;
  void *data;
  size_t length;
  if (argc != 3 || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_buffer_info(env, argv[1], &data, &length) != napi_ok || !read_int64(env, argv[2], &position)) {
    napi_throw_type_error(env, NULL, "readNoWait(fd, buffer, position)");
    return NULL;
  }
  struct iovec vector = {data, length};
  ssize_t result = preadv2(fd, &vector, 1, (off_t)position, RWF_NOWAIT);
  napi_value value;
  if (result < 0) {
    if (would_block(errno)) {
      CHECK(napi_create_int64(env, -1, &value));
      return value;
    }
    napi_throw(env, make_error(env, errno, "preadv2"));
    return NULL;
  }
  CHECK(napi_create_int64(env, (int64_t)result, &value));
  return value;
}

#define WRITE_VECTORS_MAX 64

static napi_value write_nowait(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  int64_t position;
  uint32_t count;
  if (argc != 3 || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_array_length(env, argv[1], &count) != napi_ok || !read_int64(env, argv[2], &position)) {
    napi_throw_type_error(env, NULL, "writeNoWait(fd, buffers, position)");
    return NULL;
  }
  napi_value value;
  if (count == 0 || count > WRITE_VECTORS_MAX) {
    CHECK(napi_create_int64(env, -1, &value));
    return value;
  }
  struct iovec vectors[WRITE_VECTORS_MAX];
  for (uint32_t index = 0; index < count; index++) {
    napi_value element;
    CHECK(napi_get_element(env, argv[1], index, &element));
    if (napi_get_buffer_info(env, element, &vectors[index].iov_base, &vectors[index].iov_len) != napi_ok) {
      napi_throw_type_error(env, NULL, "writeNoWait: buffers must be Buffers");
      return NULL;
    }
  }
  ssize_t result = pwritev2(fd, vectors, (int)count, (off_t)position, RWF_NOWAIT);
  if (result < 0) {
    if (would_block(errno)) {
      CHECK(napi_create_int64(env, -1, &value));
      return value;
    }
    napi_throw(env, make_error(env, errno, "pwritev2"));
    return NULL;
  }
  CHECK(napi_create_int64(env, (int64_t)result, &value));
  return value;
}

#define WRITE_BATCH_MAX 1024
#define DIRECT_ALIGN_BYTES 4096
#define DIRECT_CHUNK_BYTES (1024 * 1024)

static __thread char *direct_bounce; /* one per pool thread, DIRECT_CHUNK_BYTES, page-aligned */

/* A thread-pool job that writes a list of buffers: writeBatch (each at its own position) or
 * writeDirect (back to back from one position, through the thread's aligned buffer). */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref buffers; /* keeps the buffers alive until the job settles */
  int fd;
  uint32_t count;
  int error;
  struct iovec *vectors;
  int64_t *positions; /* writeBatch: one per buffer; writeDirect: one, where the first goes */
} WriteJob;

static void job_free(WriteJob *job) {
  free(job->vectors);
  free(job->positions);
  free(job);
}

/* pwrite until every byte is down; 0 or the errno */
static int write_fully(int fd, const char *at, size_t left, off_t position) {
  while (left > 0) {
    ssize_t written = pwrite(fd, at, left, position);
    if (written < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (written == 0) return ENOSPC;
    at += written;
    left -= (size_t)written;
    position += written;
  }
  return 0;
}

static void batch_execute(napi_env env, void *data) {
  (void)env;
  WriteJob *job = data;
  for (uint32_t index = 0; index < job->count && job->error == 0; index++) {
    job->error = write_fully(job->fd, job->vectors[index].iov_base, job->vectors[index].iov_len, (off_t)job->positions[index]);
  }
}

static void direct_execute(napi_env env, void *data) {
  (void)env;
  WriteJob *job = data;
  if (direct_bounce == NULL) {
    void *memory = NULL;
    if (posix_memalign(&memory, DIRECT_ALIGN_BYTES, DIRECT_CHUNK_BYTES) != 0) {
      job->error = ENOMEM;
      return;
    }
    direct_bounce = memory;
  }
  off_t position = (off_t)job->positions[0];
  size_t filled = 0;
  for (uint32_t index = 0; index < job->count; index++) {
    const char *from = job->vectors[index].iov_base;
    size_t left = job->vectors[index].iov_len;
    while (left > 0) {
      size_t take = DIRECT_CHUNK_BYTES - filled < left ? DIRECT_CHUNK_BYTES - filled : left;
      memcpy(direct_bounce + filled, from, take);
      filled += take;
      from += take;
      left -= take;
      if (filled == DIRECT_CHUNK_BYTES) {
        job->error = write_fully(job->fd, direct_bounce, filled, position);
        if (job->error != 0) return;
        position += (off_t)filled;
        filled = 0;
      }
    }
  }
  if (filled > 0) job->error = write_fully(job->fd, direct_bounce, filled, position);
}

static void job_complete(napi_env env, napi_status status, void *data) {
  WriteJob *job = data;
  if (status != napi_ok && job->error == 0) job->error = EINTR;
  if (job->error == 0) {
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    napi_resolve_deferred(env, job->deferred, undefined);
  } else {
    napi_reject_deferred(env, job->deferred, make_error(env, job->error, "pwrite"));
  }
  napi_delete_reference(env, job->buffers);
  napi_delete_async_work(env, job->work);
  job_free(job);
}

/* A job for `count` buffers from the array `buffers` (checked: 1..WRITE_BATCH_MAX Buffers) and
 * `positions_count` positions; NULL with a TypeError (`usage`) or an Error thrown. */
static WriteJob *job_create(napi_env env, int32_t fd, napi_value buffers, uint32_t positions_count, const char *usage) {
  uint32_t count;
  if (napi_get_array_length(env, buffers, &count) != napi_ok || count == 0 || count > WRITE_BATCH_MAX) {
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  WriteJob *job = calloc(1, sizeof *job);
  if (job != NULL) {
    job->vectors = calloc(count, sizeof *job->vectors);
    job->positions = calloc(positions_count, sizeof *job->positions);
  }
  if (job == NULL || job->vectors == NULL || job->positions == NULL) {
    if (job != NULL) job_free(job);
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  job->fd = fd;
  job->count = count;
  for (uint32_t index = 0; index < count; index++) {
    napi_value element;
    if (napi_get_element(env, buffers, index, &element) != napi_ok ||
        napi_get_buffer_info(env, element, &job->vectors[index].iov_base, &job->vectors[index].iov_len) != napi_ok) {
      job_free(job);
      napi_throw_type_error(env, NULL, usage);
      return NULL;
    }
  }
  return job;
}

/* Queues the job on the thread pool (it owns `buffers` by a reference until it settles). */
static napi_value job_queue(napi_env env, WriteJob *job, napi_value buffers, napi_async_execute_callback execute) {
  napi_value promise, name;
  if (napi_create_reference(env, buffers, 1, &job->buffers) != napi_ok) {
    job_free(job);
    return NULL;
  }
  CHECK(napi_create_promise(env, &job->deferred, &promise));
  CHECK(napi_create_string_utf8(env, "lockstep-fs", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_create_async_work(env, NULL, name, execute, job_complete, job, &job->work));
  CHECK(napi_queue_async_work(env, job->work));
  return promise;
}

static napi_value write_batch(napi_env env, napi_callback_info info) {
  static const char usage[] = "writeBatch(fd, buffers, positions): 1..1024 Buffers, one non-negative integer position each";
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  uint32_t positions_count;
  if (argc != 3 || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_array_length(env, argv[2], &positions_count) != napi_ok || positions_count == 0 ||
      positions_count > WRITE_BATCH_MAX) {
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  WriteJob *job = job_create(env, fd, argv[1], positions_count, usage);
  if (job == NULL) return NULL;
  if (job->count != positions_count) {
    job_free(job);
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  for (uint32_t index = 0; index < job->count; index++) {
    napi_value position;
    if (napi_get_element(env, argv[2], index, &position) != napi_ok ||
        !read_int64(env, position, &job->positions[index]) || job->positions[index] < 0) {
      job_free(job);
      napi_throw_type_error(env, NULL, usage);
      return NULL;
    }
  }
  return job_queue(env, job, argv[1], batch_execute);
}

static napi_value write_direct(napi_env env, napi_callback_info info) {
  static const char usage[] = "writeDirect(fd, buffers, position): 1..1024 Buffers, position and total length multiples of 4096";
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  int64_t position;
  if (argc != 3 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || !read_int64(env, argv[2], &position) ||
      position < 0 || position % DIRECT_ALIGN_BYTES != 0) {
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  WriteJob *job = job_create(env, fd, argv[1], 1, usage);
  if (job == NULL) return NULL;
  job->positions[0] = position;
  size_t total = 0;
  for (uint32_t index = 0; index < job->count; index++) total += job->vectors[index].iov_len;
  if (total % DIRECT_ALIGN_BYTES != 0) {
    job_free(job);
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  return job_queue(env, job, argv[1], direct_execute);
}

static napi_value crc32c_call(napi_env env, napi_callback_info info,
                               uint32_t (*extend)(uint32_t crc, const uint8_t *data, size_t length)) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *data;
  size_t length;
  uint32_t initial;
  if (argc != 2 || napi_get_buffer_info(env, argv[0], &data, &length) != napi_ok ||
      napi_get_value_uint32(env, argv[1], &initial) != napi_ok) {
    napi_throw_type_error(env, NULL, "crc32c(bytes, initial)");
    return NULL;
  }
  napi_value value;
  CHECK(napi_create_uint32(env, extend(initial, data, length), &value));
  return value;
}

static napi_value crc32c(napi_env env, napi_callback_info info) {
  return crc32c_call(env, info, crc32c_extend);
}

static napi_value crc32c_portable(napi_env env, napi_callback_info info) {
  return crc32c_call(env, info, crc32c_extend_portable);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor properties[] = {
      {"seek", NULL, seek, NULL, NULL, NULL, napi_default, NULL},
      {"fallocate", NULL, fallocate_range, NULL, NULL, NULL, napi_default, NULL},
      {"blockRange", NULL, block_range, NULL, NULL, NULL, napi_default, NULL},
      {"readNoWait", NULL, read_nowait, NULL, NULL, NULL, napi_default, NULL},
      {"startWriteback", NULL, start_writeback, NULL, NULL, NULL, napi_default, NULL},
      {"writeNoWait", NULL, write_nowait, NULL, NULL, NULL, napi_default, NULL},
      {"writeBatch", NULL, write_batch, NULL, NULL, NULL, napi_default, NULL},
      {"writeDirect", NULL, write_direct, NULL, NULL, NULL, napi_default, NULL},
      {"crc32c", NULL, crc32c, NULL, NULL, NULL, napi_default, NULL},
      {"crc32cPortable", NULL, crc32c_portable, NULL, NULL, NULL, napi_default, NULL},
  };
  CHECK(napi_define_properties(env, exports, sizeof properties / sizeof properties[0], properties));
  napi_value constant;
  CHECK(napi_create_int32(env, SEEK_DATA, &constant));
  CHECK(napi_set_named_property(env, exports, "SEEK_DATA", constant));
  CHECK(napi_create_int32(env, SEEK_HOLE, &constant));
  CHECK(napi_set_named_property(env, exports, "SEEK_HOLE", constant));
  CHECK(napi_create_int32(env, SEEK_END, &constant));
  CHECK(napi_set_named_property(env, exports, "SEEK_END", constant));
  CHECK(napi_create_int32(env, WRITE_BATCH_MAX, &constant));
  CHECK(napi_set_named_property(env, exports, "writeSourcesMax", constant));
  CHECK(napi_create_int32(env, DIRECT_ALIGN_BYTES, &constant));
  CHECK(napi_set_named_property(env, exports, "directAlignBytes", constant));
  CHECK(napi_get_boolean(env, crc32c_hardware(), &constant));
  CHECK(napi_set_named_property(env, exports, "crc32cHardware", constant));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
