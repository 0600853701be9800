/*
 * kernels/cpu/lora_tmpl.h — the bodies of kernels/cpu/lora.c's shrink and
 * expand loops, included once per (weight element type, vector width):
 * ELEM (float, or uint16_t holding BF16), VT / VL (the float vector type
 * and its lanes), LDX / STX (float vector load and store), HSUM (the
 * fixed-tree sum of a VT's lanes), LDV(p) (VL weights from p as a VT),
 * LDS(w) (one weight as a float), MAC(acc, x, w) (acc += x * w: a fused
 * multiply-add where the variant has one), LT(name) (the name with the variant's
 * suffix), FN (the attributes of the outer functions: target clones, or
 * the AVX-512 target) and HELPER (those of the inlined helpers).
 * A BF16 weight widens to float exactly, and every sum has the
 * same order in both, so a BF16 adapter gives the bits of a float32 one
 * holding the same (rounded) values. Only lora.c includes it.
 */
/* v[j] = x . a[j, :] for 4 consecutive rows of a (row stride K); two
 * accumulators per row (16 floats per step). The pn rows from pf on (the
 * next ones the caller reads) are prefetched as it goes: an adapter's rows
 * are short streams the hardware prefetcher barely ramps up on. */
HELPER void LT(dot4)(float *v, const float *x, const ELEM *a, int K, const ELEM *pf, int pn)
{
	const ELEM *a0 = a, *a1 = a + K, *a2 = a + 2 * (size_t)K, *a3 = a + 3 * (size_t)K;
	VT s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0}, u0 = {0}, u1 = {0}, u2 = {0}, u3 = {0};
	int k = 0;
	for (; k + 2 * VL <= K; k += 2 * VL) {
		for (int q = 0; q < pn; q++) {
			const char *c = (const char *)(pf + (size_t)q * K + k);
			__builtin_prefetch(c);
			if (2 * VL * sizeof(ELEM) > 64)
				__builtin_prefetch(c + 64);
		}
		VT x0 = LDX(x + k), x1 = LDX(x + k + VL);
		MAC(s0, x0, LDV(a0 + k));
		MAC(u0, x1, LDV(a0 + k + VL));
		MAC(s1, x0, LDV(a1 + k));
		MAC(u1, x1, LDV(a1 + k + VL));
		MAC(s2, x0, LDV(a2 + k));
		MAC(u2, x1, LDV(a2 + k + VL));
		MAC(s3, x0, LDV(a3 + k));
		MAC(u3, x1, LDV(a3 + k + VL));
	}
	for (; k + VL <= K; k += VL) {
		VT x0 = LDX(x + k);
		MAC(s0, x0, LDV(a0 + k));
		MAC(s1, x0, LDV(a1 + k));
		MAC(s2, x0, LDV(a2 + k));
		MAC(s3, x0, LDV(a3 + k));
	}
	s0 += u0;
	s1 += u1;
	s2 += u2;
	s3 += u3;
	float t0 = HSUM(&s0), t1 = HSUM(&s1), t2 = HSUM(&s2), t3 = HSUM(&s3);
	for (; k < K; k++) {
		t0 += x[k] * LDS(a0[k]);
		t1 += x[k] * LDS(a1[k]);
		t2 += x[k] * LDS(a2[k]);
		t3 += x[k] * LDS(a3[k]);
	}
	v[0] = t0;
	v[1] = t1;
	v[2] = t2;
	v[3] = t3;
}

/* The same sum for one row (same order as each row of dot4). */
HELPER float LT(dot1)(const float *x, const ELEM *a, int K)
{
	VT s = {0}, u = {0};
	int k = 0;
	for (; k + 2 * VL <= K; k += 2 * VL) {
		MAC(s, LDX(x + k), LDV(a + k));
		MAC(u, LDX(x + k + VL), LDV(a + k + VL));
	}
	for (; k + VL <= K; k += VL)
		MAC(s, LDX(x + k), LDV(a + k));
	s += u;
	float t = HSUM(&s);
	for (; k < K; k++)
		t += x[k] * LDS(a[k]);
	return t;
}

/* v[i, j] = x[i, :] . a[j, :] for i < R, j < r. */
FN static void LT(shrink_rows)(float *v, int ldv, const float *x, int K, const ELEM *a,
				  int r, int R)
{
	for (int i = 0; i < R; i++) {
		const float *xi = x + (size_t)i * K;
		float *vi = v + (size_t)i * ldv;
		int j = 0;
		for (; j + 4 <= r; j += 4) {
			int pn = r - (j + 4) < 4 ? r - (j + 4) : 4;
			LT(dot4)(vi + j, xi, a + (size_t)j * K, K, a + (size_t)(j + 4) * K, pn);
		}
		for (; j < r; j++)
			vi[j] = LT(dot1)(xi, a + (size_t)j * K, K);
	}
}

/* yi[n] += sum of the m (<= 8) products c[j] * b[j][n], in a fixed tree;
 * requesting the lines of pf (what the caller reads next: the next pass's
 * rows, or the next item's first ones), `per` lines per step of VL. */
HELPER void LT(axpy_rows)(float *yi, const ELEM *const *b, const float *c, int m, int N,
			  kn_pf pf)
{
	int n = 0;
	if (m == 8) {
		for (; n + VL <= N; n += VL) {
			KN_PF_STEP(pf);
			VT p = LDV(b[0] + n) * c[0] + LDV(b[1] + n) * c[1];
			VT q = LDV(b[2] + n) * c[2] + LDV(b[3] + n) * c[3];
			VT u = LDV(b[4] + n) * c[4] + LDV(b[5] + n) * c[5];
			VT w = LDV(b[6] + n) * c[6] + LDV(b[7] + n) * c[7];
			STX(yi + n, LDX(yi + n) + ((p + q) + (u + w)));
		}
		for (; n < N; n++)
			yi[n] += ((LDS(b[0][n]) * c[0] + LDS(b[1][n]) * c[1]) + (LDS(b[2][n]) * c[2] + LDS(b[3][n]) * c[3])) +
				 ((LDS(b[4][n]) * c[4] + LDS(b[5][n]) * c[5]) + (LDS(b[6][n]) * c[6] + LDS(b[7][n]) * c[7]));
	} else if (m == 4) {
		for (; n + VL <= N; n += VL) {
			KN_PF_STEP(pf);
			VT p = LDV(b[0] + n) * c[0] + LDV(b[1] + n) * c[1];
			VT q = LDV(b[2] + n) * c[2] + LDV(b[3] + n) * c[3];
			STX(yi + n, LDX(yi + n) + (p + q));
		}
		for (; n < N; n++)
			yi[n] += (LDS(b[0][n]) * c[0] + LDS(b[1][n]) * c[1]) + (LDS(b[2][n]) * c[2] + LDS(b[3][n]) * c[3]);
	} else {
		for (; n + VL <= N; n += VL) {
			KN_PF_STEP(pf);
			STX(yi + n, LDX(yi + n) + LDV(b[0] + n) * c[0]);
		}
		for (; n < N; n++)
			yi[n] += LDS(b[0][n]) * c[0];
	}
}

/* y[i, :] += sum_j (scale * v[i, j]) * bt[j, :] for i < R: eight (then four,
 * then one) Bt rows per pass over y, so y is loaded and stored ~r/8 times
 * and each Bt row streamed once per row of y. Each pass requests the next
 * pass's rows; the last one requests `then` (up to 8 * N elements: the
 * start of what the caller reads next), so a chain of items streams
 * without a cold start each. */
FN static void LT(expand_rows)(float *y, int N, const float *v, int ldv, const ELEM *bt,
				  int r, float scale, int R, const void *then, size_t then_bytes)
{
	for (int i = 0; i < R; i++) {
		float *yi = y + (size_t)i * N;
		const float *vi = v + (size_t)i * ldv;
		int j = 0;
		while (j < r) {
			int m = r - j >= 8 ? 8 : r - j >= 4 ? 4 : 1;
			const ELEM *b[8];
			float c[8];
			for (int k = 0; k < m; k++) {
				b[k] = bt + (size_t)(j + k) * N;
				c[k] = scale * vi[j + k];
			}
			int pn = r - (j + m) < 8 ? r - (j + m) : 8;
			const void *pp = bt + (size_t)(j + m) * N;
			size_t pb = (size_t)pn * (size_t)N * sizeof(ELEM);
			if (pn == 0 && i + 1 == R) {
				pp = then;
				pb = then_bytes;
			}
			LT(axpy_rows)(yi, b, c, m, N, kn_pf_make(pp, pb, N / VL));
			j += m;
		}
	}
}

