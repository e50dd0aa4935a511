/*
 * crc32c: CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), chosen once when the addon
 * loads: hardware on x86-64 with SSE4.2 and PCLMULQDQ, slicing-by-8 tables anywhere else.
 *
 * The crc32 instruction takes 8 bytes a step, but one chain of steps is bound by its latency
 * (3 cycles) while the CPU can start one a cycle. So a buffer of STREAMS_BYTES_MIN or more is
 * cut into three parts of n bytes whose states are computed at once, then joined. In the raw
 * (uninverted) state, modulo P, with parts B and C started from zero:
 *
 *   | part A: n bytes | part B: n bytes | part C: n bytes | next round, or the rest serially
 *   state(A‖B‖C) = state(A)·x^(16n) ^ state(B)·x^(8n) ^ state(C)
 *
 * Multiplying a state by x^(8n) mod P is one carry-less multiply (PCLMULQDQ) by the constant
 * x^(8n-33) mod P, then one crc32 of the 64-bit product from state 0: the crc32 instruction
 * multiplies by x^32 and reduces, and the product of two 32-bit reflected values carries one
 * more factor x. The constants, for every part length up to PART_BYTES_MAX, are computed at
 * load with the crc32 instruction itself (eight zero bytes multiply a state by x^64).
 *
 * The portable path: table[k][b] is the state that byte b followed by k zero bytes leaves, so
 * eight lookups advance the state by one 8-byte word.
 */
#include "crc32c.h"

#include <string.h>

#define CRC32C_POLYNOMIAL 0x82F63B78u /* x^32 + ... reflected, x^32 implied */

static uint32_t table[8][256];

static void portable_tables_fill(void) {
  for (uint32_t byte = 0; byte < 256; byte++) {
    uint32_t state = byte;
    for (int bit = 0; bit < 8; bit++) state = (state >> 1) ^ (state & 1 ? CRC32C_POLYNOMIAL : 0);
    table[0][byte] = state;
  }
  for (uint32_t byte = 0; byte < 256; byte++) {
    for (int zeros = 1; zeros < 8; zeros++) {
      uint32_t previous = table[zeros - 1][byte];
      table[zeros][byte] = table[0][previous & 0xff] ^ (previous >> 8);
    }
  }
}

/* Byte by byte so the result does not depend on the CPU's byte order; compilers make it one load. */
static inline uint32_t load_le32(const uint8_t *bytes) {
  return (uint32_t)bytes[0] | (uint32_t)bytes[1] << 8 | (uint32_t)bytes[2] << 16 | (uint32_t)bytes[3] << 24;
}

uint32_t crc32c_extend_portable(uint32_t crc, const uint8_t *data, size_t length) {
  uint32_t state = ~crc;
  for (; length >= 8; data += 8, length -= 8) {
    uint32_t low = state ^ load_le32(data), high = load_le32(data + 4);
    state = table[7][low & 0xff] ^ table[6][(low >> 8) & 0xff] ^ table[5][(low >> 16) & 0xff] ^
            table[4][low >> 24] ^ table[3][high & 0xff] ^ table[2][(high >> 8) & 0xff] ^
            table[1][(high >> 16) & 0xff] ^ table[0][high >> 24];
  }
  for (; length > 0; data++, length--) state = table[0][(state ^ *data) & 0xff] ^ (state >> 8);
  return ~state;
}

static uint32_t (*extend_chosen)(uint32_t crc, const uint8_t *data, size_t length) = crc32c_extend_portable;

#if defined(__x86_64__)
#include <immintrin.h>

#define HARDWARE __attribute__((target("sse4.2,pclmul")))

/* Measured: from about 100 bytes three chains and their join (two multiplies, about 15 cycles)
 * beat one chain; at 128 bytes by a third, at 4 KiB by nearly three times (8 bytes a cycle). */
#define STREAMS_BYTES_MIN 128
/* A part's length at the most: bounds the constants table (8 KiB) and nothing else. */
#define PART_BYTES_MAX 8192
#define PART_WORDS_MAX (PART_BYTES_MAX / 8)

_Static_assert(STREAMS_BYTES_MIN >= 3 * 8, "a round needs one word in each part");
_Static_assert(PART_BYTES_MAX % 8 == 0, "parts are whole words");

/* shift_constants[m] = x^(64m-33) mod P: multiplies a state by x^(64m), m words of zeros. */
static uint32_t shift_constants[2 * PART_WORDS_MAX + 1];

HARDWARE static void shift_constants_fill(void) {
  uint64_t constant = 1; /* x^31: bit 0 of a reflected value is the x^31 term */
  for (size_t words = 1; words <= 2 * PART_WORDS_MAX; words++) {
    shift_constants[words] = (uint32_t)constant;
    constant = _mm_crc32_u64(constant, 0);
  }
}

HARDWARE static inline uint32_t shift(uint32_t state, size_t words) {
  __m128i product = _mm_clmulepi64_si128(_mm_cvtsi32_si128((int)state),
                                         _mm_cvtsi32_si128((int)shift_constants[words]), 0x00);
  return (uint32_t)_mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(product));
}

HARDWARE static inline uint64_t load_u64(const uint8_t *bytes) {
  uint64_t word;
  memcpy(&word, bytes, sizeof word); /* x86-64 is little-endian and loads unaligned words */
  return word;
}

HARDWARE static uint32_t serial(uint32_t state, const uint8_t *data, size_t length) {
  uint64_t wide = state;
  for (; length >= 8; data += 8, length -= 8) wide = _mm_crc32_u64(wide, load_u64(data));
  state = (uint32_t)wide;
  for (; length > 0; data++, length--) state = _mm_crc32_u8(state, *data);
  return state;
}

/* Three parts of `words` words each, from `data`; the state after all three. */
HARDWARE static uint32_t streams(uint32_t state, const uint8_t *data, size_t words) {
  const uint8_t *part_b = data + 8 * words, *part_c = part_b + 8 * words;
  uint64_t state_a = state, state_b = 0, state_c = 0;
  for (size_t at = 0; at < 8 * words; at += 8) {
    state_a = _mm_crc32_u64(state_a, load_u64(data + at));
    state_b = _mm_crc32_u64(state_b, load_u64(part_b + at));
    state_c = _mm_crc32_u64(state_c, load_u64(part_c + at));
  }
  return shift((uint32_t)state_a, 2 * words) ^ shift((uint32_t)state_b, words) ^ (uint32_t)state_c;
}

HARDWARE static uint32_t extend_hardware(uint32_t crc, const uint8_t *data, size_t length) {
  uint32_t state = ~crc;
  while (length >= STREAMS_BYTES_MIN) {
    size_t words = length / 24 < PART_WORDS_MAX ? length / 24 : PART_WORDS_MAX;
    state = streams(state, data, words);
    data += 24 * words;
    length -= 24 * words;
  }
  return ~serial(state, data, length);
}
#endif

__attribute__((constructor)) static void crc32c_load(void) {
  portable_tables_fill();
#if defined(__x86_64__)
  __builtin_cpu_init(); /* constructors may run before libgcc's own CPU detection */
  if (__builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("pclmul")) {
    shift_constants_fill();
    extend_chosen = extend_hardware;
  }
#endif
}

uint32_t crc32c_extend(uint32_t crc, const uint8_t *data, size_t length) {
  return extend_chosen(crc, data, length);
}

bool crc32c_hardware(void) {
  return extend_chosen != crc32c_extend_portable;
}
