/*
 * kernels/cpu/vec8.h — the 8-float GCC vector type and helpers the CPU
 * kernels built with target_clones share (attn.c, lora.c); private to
 * kernels/cpu. The build has no -march flag: KN_CLONES compiles a function
 * twice (AVX2, baseline) and picks one at load time by the CPU.
 */
#ifndef KN_VEC8_H
#define KN_VEC8_H

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

#endif
