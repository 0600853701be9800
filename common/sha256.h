/*
 * common/sha256.h — SHA-256 (FIPS 180-4), for content addressing.
 *
 * Owns: the hash and its lowercase hex form. Streaming (init/update/final)
 * and one-shot. No allocation. Uses the x86 SHA extensions when the CPU has
 * them, else portable C. Written here because loom's chosen dependencies
 * include no crypto library.
 */
#ifndef LOOM_SHA256_H
#define LOOM_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct loom_sha256_ctx {
	uint32_t h[8];
	uint64_t len;          /* bytes hashed so far */
	uint8_t buf[64];
	size_t fill;
} loom_sha256_ctx;

void loom_sha256_init(loom_sha256_ctx *c);
void loom_sha256_update(loom_sha256_ctx *c, const void *data, size_t n);
void loom_sha256_final(loom_sha256_ctx *c, uint8_t out[32]);
void loom_sha256(const void *data, size_t n, uint8_t out[32]);

/* 64 lowercase hex digits + NUL into hex[65]. */
void loom_sha256_hex(const uint8_t sha[32], char hex[65]);
/* Parses 64 hex digits (either case); 0 on success, -1 otherwise. */
int loom_sha256_parse(const char *hex, uint8_t sha[32]);

/* Which compression function runs: "x86 SHA extensions" (when the CPU has
 * them) or "portable C". force_portable: 1 forces the portable one, 0 lets
 * the CPU decide, -1 only asks. Process-wide; for tests and diagnostics. */
const char *loom_sha256_impl(int force_portable);

#endif
