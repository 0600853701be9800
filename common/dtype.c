/*
 * common/dtype.c — dtype names/sizes and F16/BF16 <-> F32 conversion.
 *
 * Scalar conversions are exact in the widening direction (F16 subnormals,
 * infinities and NaNs included) and round to nearest, ties to even, in the
 * narrowing direction; NaN stays NaN (quietened). Bulk loops copy blocks of
 * the (possibly unaligned) source into an aligned local buffer and convert
 * with branch-light code the compiler can vectorise.
 */
#include "dtype.h"

#include <string.h>

static const struct {
	const char *name;
	size_t size;
} info[LOOM_DT_COUNT] = {
	[LOOM_DT_F32] = { "F32", 4 },	[LOOM_DT_F16] = { "F16", 2 },
	[LOOM_DT_BF16] = { "BF16", 2 }, [LOOM_DT_F64] = { "F64", 8 },
	[LOOM_DT_I64] = { "I64", 8 },	[LOOM_DT_I32] = { "I32", 4 },
	[LOOM_DT_I16] = { "I16", 2 },	[LOOM_DT_I8] = { "I8", 1 },
	[LOOM_DT_U8] = { "U8", 1 },	[LOOM_DT_BOOL] = { "BOOL", 1 },
};

size_t loom_dtype_size(loom_dtype dt)
{
	return (unsigned)dt < LOOM_DT_COUNT ? info[dt].size : 0;
}

const char *loom_dtype_name(loom_dtype dt)
{
	return (unsigned)dt < LOOM_DT_COUNT ? info[dt].name : "?";
}

int loom_dtype_parse(const char *s, size_t len, loom_dtype *out)
{
	for (int i = 0; i < LOOM_DT_COUNT; i++) {
		if (strlen(info[i].name) == len && memcmp(info[i].name, s, len) == 0) {
			*out = (loom_dtype)i;
			return 0;
		}
	}
	return -1;
}

static inline uint32_t f2u(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

static inline float u2f(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static inline float f16_to_f32(uint16_t h)
{
	const uint32_t shifted_exp = 0x7c00u << 13;
	uint32_t o = (uint32_t)(h & 0x7fff) << 13;
	uint32_t exp = o & shifted_exp;
	o += (uint32_t)(127 - 15) << 23;
	if (exp == shifted_exp) {
		o += (uint32_t)(128 - 16) << 23; /* inf / nan */
	} else if (exp == 0) {
		/* subnormal: renormalise exactly through a float subtraction */
		o += 1u << 23;
		o = f2u(u2f(o) - u2f(113u << 23));
	}
	o |= (uint32_t)(h & 0x8000) << 16;
	return u2f(o);
}

static inline uint16_t f32_to_f16(float f)
{
	const uint32_t f32_inf = 255u << 23;
	const uint32_t f16_max = (127u + 16) << 23;       /* 2^16: rounds to inf */
	const uint32_t denorm_magic = ((127u - 15) + (23 - 10) + 1) << 23;
	uint32_t u = f2u(f);
	uint32_t sign = u & 0x80000000u;
	uint16_t o;

	u ^= sign;
	if (u >= f16_max) {
		o = u > f32_inf ? 0x7e00 : 0x7c00;
	} else if (u < (113u << 23)) {
		/* result is subnormal or zero: let the FPU round (RNE) */
		o = (uint16_t)(f2u(u2f(u) + u2f(denorm_magic)) - denorm_magic);
	} else {
		uint32_t mant_odd = (u >> 13) & 1;
		u += ((uint32_t)(15 - 127) << 23) + 0xfff;
		u += mant_odd;
		o = (uint16_t)(u >> 13);
	}
	return (uint16_t)(o | (sign >> 16));
}

static inline float bf16_to_f32(uint16_t b)
{
	return u2f((uint32_t)b << 16);
}

static inline uint16_t f32_to_bf16(float f)
{
	uint32_t u = f2u(f);
	if ((u & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((u >> 16) | 0x40); /* quiet NaN, sign kept */
	u += 0x7fff + ((u >> 16) & 1);
	return (uint16_t)(u >> 16);
}

float loom_f16_to_f32(uint16_t h) { return f16_to_f32(h); }
float loom_bf16_to_f32(uint16_t b) { return bf16_to_f32(b); }
uint16_t loom_f32_to_f16(float f) { return f32_to_f16(f); }
uint16_t loom_f32_to_bf16(float f) { return f32_to_bf16(f); }

#define BLOCK 512

int loom_to_f32(float *dst, const void *src, loom_dtype dt, size_t n)
{
	const unsigned char *s = src;
	uint16_t buf[BLOCK];

	switch (dt) {
	case LOOM_DT_F32:
		memmove(dst, src, n * sizeof(float));
		return 0;
	case LOOM_DT_F16:
	case LOOM_DT_BF16:
		break;
	default:
		return -1;
	}
	for (size_t i = 0; i < n; i += BLOCK) {
		size_t m = n - i < BLOCK ? n - i : BLOCK;
		memcpy(buf, s + i * 2, m * 2);
		if (dt == LOOM_DT_F16) {
			for (size_t j = 0; j < m; j++)
				dst[i + j] = f16_to_f32(buf[j]);
		} else {
			for (size_t j = 0; j < m; j++)
				dst[i + j] = bf16_to_f32(buf[j]);
		}
	}
	return 0;
}

int loom_from_f32(void *dst, const float *src, loom_dtype dt, size_t n)
{
	unsigned char *d = dst;
	uint16_t buf[BLOCK];

	switch (dt) {
	case LOOM_DT_F32:
		memmove(dst, src, n * sizeof(float));
		return 0;
	case LOOM_DT_F16:
	case LOOM_DT_BF16:
		break;
	default:
		return -1;
	}
	for (size_t i = 0; i < n; i += BLOCK) {
		size_t m = n - i < BLOCK ? n - i : BLOCK;
		if (dt == LOOM_DT_F16) {
			for (size_t j = 0; j < m; j++)
				buf[j] = f32_to_f16(src[i + j]);
		} else {
			for (size_t j = 0; j < m; j++)
				buf[j] = f32_to_bf16(src[i + j]);
		}
		memcpy(d + i * 2, buf, m * 2);
	}
	return 0;
}
