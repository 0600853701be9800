/*
 * common/dtype.h — tensor element types and scalar conversions.
 *
 * Owns: loom_dtype (the safetensors dtypes loom reads), their sizes and
 * names, and F16/BF16 <-> F32 conversion (round-to-nearest-even on the way
 * down). Pure functions, no allocation.
 */
#ifndef LOOM_DTYPE_H
#define LOOM_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum loom_dtype {
	LOOM_DT_F32 = 0,
	LOOM_DT_F16,
	LOOM_DT_BF16,
	LOOM_DT_F64,
	LOOM_DT_I64,
	LOOM_DT_I32,
	LOOM_DT_I16,
	LOOM_DT_I8,
	LOOM_DT_U8,
	LOOM_DT_BOOL,
	LOOM_DT_COUNT
} loom_dtype;

/* Bytes per element. */
size_t loom_dtype_size(loom_dtype dt);
/* safetensors spelling ("F32", "BF16", ...). */
const char *loom_dtype_name(loom_dtype dt);
/* Parses a safetensors dtype string; returns 0 and sets *out, or -1. */
int loom_dtype_parse(const char *s, size_t len, loom_dtype *out);

float loom_f16_to_f32(uint16_t h);
float loom_bf16_to_f32(uint16_t b);
uint16_t loom_f32_to_f16(float f);
uint16_t loom_f32_to_bf16(float f);

/* Converts n elements of F32, F16 or BF16 at src to float32 at dst.
 * Returns 0, or -1 for any other dtype. src may be unaligned. */
int loom_to_f32(float *dst, const void *src, loom_dtype dt, size_t n);
/* Converts n float32 values to F32, F16 or BF16 at dst. Returns 0 or -1. */
int loom_from_f32(void *dst, const float *src, loom_dtype dt, size_t n);

#endif
