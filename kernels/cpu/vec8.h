/*
 * kernels/cpu/vec8.h — the 8-float GCC vector type and helpers (loads,
 * stores, BF16 widening) the CPU
 * kernels built with target_clones share (attn.c, lora.c); private to
 * kernels/cpu. The build has no -march flag: KN_CLONES compiles a function
 * twice (AVX2, baseline) and picks one at load time by the CPU.
 */
#ifndef KN_VEC8_H
#define KN_VEC8_H

#include <stdint.h>
#include <string.h>

typedef float v8 __attribute__((vector_size(32)));

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KN_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define KN_CLONES
#endif
#define KN_INLINE static inline __attribute__((always_inline))

/* Unaligned 32-byte load and store (macros: passing vectors by value to
 * functions is an ABI change GCC warns about without AVX). */
#define ld(p) (__extension__({ v8 r_; memcpy(&r_, (p), sizeof r_); r_; }))
#define st(p, x) (__extension__({ v8 x_ = (x); memcpy((p), &x_, sizeof x_); }))

typedef uint16_t u16x8 __attribute__((vector_size(16)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));

/* 8 BF16 values widened to floats (exact: a BF16 is a float's top half). */
#define ldb(p)                                                                              \
	(__extension__({                                                                    \
		u16x8 h_;                                                                   \
		memcpy(&h_, (p), sizeof h_);                                                \
		u32x8 w_ = __builtin_convertvector(h_, u32x8) << 16;                        \
		v8 r_;                                                                      \
		memcpy(&r_, &w_, sizeof r_);                                                \
		r_;                                                                         \
	}))

/* One BF16 value as a float (exact). */
KN_INLINE float bf16f(uint16_t h)
{
	uint32_t w = (uint32_t)h << 16;
	float f;
	memcpy(&f, &w, sizeof f);
	return f;
}

#endif
