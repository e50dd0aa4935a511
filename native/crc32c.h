/*
 * crc32c: CRC-32C (Castagnoli), the checksum of every format in docs/FORMAT.md and
 * docs/PROTOCOL.md. Both functions give the standard CRC (pre- and post-inverted) and chain:
 * crc32c_extend(crc32c_extend(0, a), b) is the CRC of a followed by b.
 */
#ifndef LOCKSTEP_CRC32C_H
#define LOCKSTEP_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The fastest implementation this CPU has (chosen when the addon loads). */
uint32_t crc32c_extend(uint32_t crc, const uint8_t *data, size_t length);

/* Slicing-by-8 tables only: what CPUs without SSE4.2 and PCLMULQDQ run; the tests call it. */
uint32_t crc32c_extend_portable(uint32_t crc, const uint8_t *data, size_t length);

/* Whether crc32c_extend uses the crc32 instruction. */
bool crc32c_hardware(void);

#endif
