/* tests/common/test_dtype.c — dtype names/sizes, F16/BF16 <-> F32 bit patterns. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "common/dtype.h"

static uint32_t bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

static float flt(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static void names_sizes(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		size_t size;
	} want[LOOM_DT_COUNT] = { { "F32", 4 }, { "F16", 2 }, { "BF16", 2 }, { "F64", 8 },
				  { "I64", 8 }, { "I32", 4 }, { "I16", 2 },  { "I8", 1 },
				  { "U8", 1 },	{ "BOOL", 1 } };
	for (int i = 0; i < LOOM_DT_COUNT; i++) {
		loom_dtype dt;
		assert_string_equal(loom_dtype_name((loom_dtype)i), want[i].name);
		assert_int_equal(loom_dtype_size((loom_dtype)i), want[i].size);
		assert_int_equal(loom_dtype_parse(want[i].name, strlen(want[i].name), &dt), 0);
		assert_int_equal(dt, i);
	}
	loom_dtype dt;
	assert_int_equal(loom_dtype_parse("F3", 2, &dt), -1);
	assert_int_equal(loom_dtype_parse("F32X", 4, &dt), -1);
	assert_int_equal(loom_dtype_parse("F32", 2, &dt), -1); /* "F3" */
	assert_int_equal(loom_dtype_parse("f32", 3, &dt), -1);
	assert_int_equal(loom_dtype_parse("U16", 3, &dt), -1);
}

/* Known half-precision patterns, both directions. */
static void f16_known(void **state)
{
	(void)state;
	static const struct {
		uint16_t h;
		float f;
	} cases[] = {
		{ 0x3c00, 1.0f },	  { 0xc100, -2.5f },	  { 0x7bff, 65504.0f },
		{ 0x0000, 0.0f },	  { 0x3555, 0.333251953125f }, { 0x0400, 6.103515625e-05f },
		{ 0x0001, 5.9604644775390625e-08f }, /* smallest subnormal 2^-24 */
		{ 0x03ff, 6.097555160522461e-05f },  /* largest subnormal */
		{ 0x8001, -5.9604644775390625e-08f }, { 0x7c00, INFINITY }, { 0xfc00, -INFINITY },
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		assert_int_equal(bits(loom_f16_to_f32(cases[i].h)), bits(cases[i].f));
		assert_int_equal(loom_f32_to_f16(cases[i].f), cases[i].h);
	}
	assert_int_equal(bits(loom_f16_to_f32(0x8000)), 0x80000000u);
	assert_int_equal(loom_f32_to_f16(-0.0f), 0x8000);
	assert_true(isnan(loom_f16_to_f32(0x7e00)));
	assert_true(isnan(loom_f16_to_f32(0x7c01)));
	uint16_t hn = loom_f32_to_f16(NAN);
	assert_true((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff) != 0);
	/* overflow and rounding at the top: 65519 -> 65504, 65520 -> inf */
	assert_int_equal(loom_f32_to_f16(65519.0f), 0x7bff);
	assert_int_equal(loom_f32_to_f16(65520.0f), 0x7c00);
	assert_int_equal(loom_f32_to_f16(1e10f), 0x7c00);
	assert_int_equal(loom_f32_to_f16(-1e10f), 0xfc00);
	/* underflow: half the smallest subnormal is a tie -> 0; a bit more -> 1 */
	assert_int_equal(loom_f32_to_f16(0x1p-25f), 0x0000);
	assert_int_equal(loom_f32_to_f16(0x1.0001p-25f), 0x0001);
	assert_int_equal(loom_f32_to_f16(0x1.8p-24f), 0x0002); /* 1.5 ulp ties to even 2 */
	assert_int_equal(loom_f32_to_f16(1e-10f), 0x0000);
	/* ties to even in the normal range: 1 + 2^-11 is halfway 1 and 1+2^-10 */
	assert_int_equal(loom_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
	assert_int_equal(loom_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
	assert_int_equal(loom_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
}

/* Every half value survives f16 -> f32 -> f16 exactly (NaNs stay NaN). */
static void f16_round_trip_all(void **state)
{
	(void)state;
	for (uint32_t h = 0; h < 0x10000; h++) {
		float f = loom_f16_to_f32((uint16_t)h);
		uint16_t back = loom_f32_to_f16(f);
		if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
			assert_true(isnan(f));
			assert_true((back & 0x7c00) == 0x7c00 && (back & 0x3ff));
			assert_int_equal(back & 0x8000, h & 0x8000);
		} else {
			assert_int_equal(back, h);
		}
	}
}

/* f32 -> f16 against a slow reference (nearest by value, ties to even). */
static uint16_t f16_ref(float f)
{
	if (isnan(f))
		return 0x7e00;
	uint16_t sign = signbit(f) ? 0x8000 : 0;
	double a = fabs((double)f);
	uint16_t best = 0;
	double bestd = INFINITY;
	for (uint32_t h = 0; h <= 0x7c00; h++) {
		double v = (double)loom_f16_to_f32((uint16_t)h);
		if (h == 0x7c00)
			v = 65520.0; /* values >= 65520 round to inf */
		double d = fabs(v - a);
		if (d < bestd || (d == bestd && (h & 1) == 0)) {
			best = (uint16_t)h;
			bestd = d;
		}
		if (v > a)
			break;
	}
	if (a >= 65520.0)
		best = 0x7c00;
	return sign | best;
}

static void f16_vs_reference(void **state)
{
	(void)state;
	uint32_t x = 12345;
	for (int i = 0; i < 3000; i++) {
		x = x * 1664525u + 1013904223u;
		/* exponents around the half range, random mantissas */
		uint32_t e = 100 + (x >> 8) % 45;
		uint32_t u = (x & 0x80000000u) | (e << 23) | ((x * 2654435761u) & 0x7fffff);
		float f = flt(u);
		assert_int_equal(loom_f32_to_f16(f), f16_ref(f));
	}
}

static void bf16_known(void **state)
{
	(void)state;
	assert_int_equal(loom_f32_to_bf16(1.0f), 0x3f80);
	assert_int_equal(loom_f32_to_bf16(-2.5f), 0xc020);
	assert_int_equal(bits(loom_bf16_to_f32(0x3f80)), bits(1.0f));
	assert_int_equal(bits(loom_bf16_to_f32(0xc020)), bits(-2.5f));
	assert_int_equal(loom_f32_to_bf16(INFINITY), 0x7f80);
	assert_int_equal(loom_f32_to_bf16(-INFINITY), 0xff80);
	assert_true(isnan(loom_bf16_to_f32(loom_f32_to_bf16(NAN))));
	/* a NaN whose payload sits only in the low 16 bits must stay NaN */
	assert_true(isnan(loom_bf16_to_f32(loom_f32_to_bf16(flt(0x7f800001u)))));
	/* ties to even: 0x3f808000 is halfway 0x3f80 / 0x3f81 -> 0x3f80 (even);
	 * 0x3f818000 halfway 0x3f81 / 0x3f82 -> 0x3f82 */
	assert_int_equal(loom_f32_to_bf16(flt(0x3f808000u)), 0x3f80);
	assert_int_equal(loom_f32_to_bf16(flt(0x3f818000u)), 0x3f82);
	assert_int_equal(loom_f32_to_bf16(flt(0x3f808001u)), 0x3f81);
	assert_int_equal(loom_f32_to_bf16(flt(0x3f807fffu)), 0x3f80);
	/* largest finite rounds up to inf past the halfway point */
	assert_int_equal(loom_f32_to_bf16(flt(0x7f7fffffu)), 0x7f80);
	assert_int_equal(loom_f32_to_bf16(flt(0x7f7f7fffu)), 0x7f7f);
	/* subnormals pass through */
	assert_int_equal(loom_f32_to_bf16(flt(0x00010000u)), 0x0001);
	for (uint32_t b = 0; b < 0x10000; b++) {
		float f = loom_bf16_to_f32((uint16_t)b);
		if (isnan(f))
			continue;
		assert_int_equal(loom_f32_to_bf16(f), b);
	}
}

/* Bulk conversion from an unaligned source matches the scalar functions. */
static void bulk_unaligned(void **state)
{
	(void)state;
	enum { N = 1237 };
	static float src[N], back[N], out[N];
	static unsigned char raw[2 * N + 1], raw32[4 * N + 3];
	for (int i = 0; i < N; i++)
		src[i] = (float)((i * 37) % 1001 - 500) / 37.0f;
	const loom_dtype dts[] = { LOOM_DT_F16, LOOM_DT_BF16 };
	for (int k = 0; k < 2; k++) {
		assert_int_equal(loom_from_f32(raw + 1, src, dts[k], N), 0);
		assert_int_equal(loom_to_f32(out, raw + 1, dts[k], N), 0);
		for (int i = 0; i < N; i++) {
			uint16_t h;
			memcpy(&h, raw + 1 + 2 * i, 2);
			uint16_t want = dts[k] == LOOM_DT_F16 ? loom_f32_to_f16(src[i])
							      : loom_f32_to_bf16(src[i]);
			assert_int_equal(h, want);
			float wf = dts[k] == LOOM_DT_F16 ? loom_f16_to_f32(h) : loom_bf16_to_f32(h);
			assert_int_equal(bits(out[i]), bits(wf));
		}
	}
	assert_int_equal(loom_from_f32(raw32 + 3, src, LOOM_DT_F32, N), 0);
	assert_int_equal(loom_to_f32(back, raw32 + 3, LOOM_DT_F32, N), 0);
	assert_memory_equal(back, src, sizeof src);
	assert_int_equal(loom_to_f32(back, raw, LOOM_DT_I32, 4), -1);
	assert_int_equal(loom_from_f32(raw, src, LOOM_DT_U8, 4), -1);
	assert_int_equal(loom_to_f32(back, raw, LOOM_DT_F16, 0), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(names_sizes),	    cmocka_unit_test(f16_known),
		cmocka_unit_test(f16_round_trip_all), cmocka_unit_test(f16_vs_reference),
		cmocka_unit_test(bf16_known),	    cmocka_unit_test(bulk_unaligned),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
