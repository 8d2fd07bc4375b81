/*
 * siphash.h: SipHash-2-4, a keyed hash for tables whose keys a client
 * chooses (connection IDs, tokens): without the key, no one can aim many
 * of them at one bucket.
 */
#ifndef QPROXY_SIPHASH_H
#define QPROXY_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

uint64_t	siphash24(const uint64_t key[2], const uint8_t *in, size_t len);

#endif
