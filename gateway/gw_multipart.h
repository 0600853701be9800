/*
 * gateway/gw_multipart.h — a streaming multipart/form-data parser (RFC 7578
 * over RFC 2046's multipart syntax), for uploads too large to buffer.
 *
 * Owns: finding the boundary in a Content-Type header, and turning body
 * bytes fed in pieces of any size into callbacks: a part begins (its form
 * field name, file name, content type), its data arrives in runs, it ends.
 * Part headers are capped (GW_MP_HEADER_MAX bytes per part); data is never
 * buffered beyond the boundary's length. A body that ends before the closing
 * boundary, a missing Content-Disposition or name, or over-long headers are
 * errors (LOOM_EFORMAT with a message naming the problem).
 * Must not: know what the parts mean or where they go (the admin upload
 * route decides). One parser per request; not thread-safe.
 */
#ifndef GW_MULTIPART_H
#define GW_MULTIPART_H

#include <stddef.h>

#include "common/err.h"

#define GW_MP_BOUNDARY_MAX 70   /* RFC 2046 */
#define GW_MP_HEADER_MAX 8192

/* What the parser calls. Each returns LOOM_OK to go on, or an error that
 * gw_mp_feed then returns (with the callback's loom_fail message). */
typedef struct gw_mp_cbs {
	loom_err (*part_begin)(void *ctx, const char *name, const char *filename,
			       const char *content_type);
	loom_err (*part_data)(void *ctx, const void *data, size_t n);
	loom_err (*part_end)(void *ctx);
	void *ctx;
} gw_mp_cbs;

typedef struct gw_mp gw_mp;

/*
 * Extracts the boundary parameter of a multipart/form-data Content-Type
 * (quoted or not) into out (GW_MP_BOUNDARY_MAX + 1 bytes). LOOM_EINVAL when
 * the type is not multipart/form-data or the boundary is missing or invalid.
 */
loom_err gw_mp_boundary(const char *content_type, char *out);

/* A parser for boundary; the callbacks are copied. */
loom_err gw_mp_create(const char *boundary, const gw_mp_cbs *cbs, gw_mp **out);
void gw_mp_destroy(gw_mp *p);
/* Feeds n more body bytes. After an error every later call fails the same way. */
loom_err gw_mp_feed(gw_mp *p, const void *data, size_t n);
/* The body ended: LOOM_OK only when the closing boundary was seen. */
loom_err gw_mp_finish(gw_mp *p);

#endif
