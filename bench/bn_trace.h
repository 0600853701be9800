/*
 * bench/bn_trace.h — request traces (CSV) and adapter name lists.
 *
 * Owns: parsing a trace CSV, one request a line,
 *     timestamp_s,adapter,prompt_tokens,output_tokens
 * (header line optional; blank lines and lines starting with '#' skipped;
 * an empty adapter field means the base model), and parsing an adapter
 * list file (one name a line, same skipping rules). Rows are sorted by
 * timestamp (stable) and replayed relative to the first one. Errors name
 * the file, line and field.
 * Must not: do network I/O. Called by bn_workload.c and tests.
 */
#ifndef BN_TRACE_H
#define BN_TRACE_H

#include <stddef.h>

#include "common/err.h"

typedef struct bn_trace_row {
	double t;          /* seconds after the first row (>= 0) */
	int adapter;       /* index into bn_trace.names, -1 = base model */
	int prompt_tokens; /* >= 1 */
	int output_tokens; /* >= 1 */
} bn_trace_row;

typedef struct bn_trace {
	bn_trace_row *rows; /* (n) sorted by t */
	size_t n;
	char **names;       /* (n_names) distinct adapter names, first-seen order */
	int n_names;
} bn_trace;

/* Parses text[0..len) (name is used in errors, e.g. the path). On success
 * *out is owned by the caller (bn_trace_destroy); on error *out = NULL. */
loom_err bn_trace_parse(const char *text, size_t len, const char *name, bn_trace **out);
/* Reads and parses the file at path. */
loom_err bn_trace_load(const char *path, bn_trace **out);
void bn_trace_destroy(bn_trace *t);

/* Parses a list of adapter names: *names (n entries) owned by the caller,
 * free with bn_names_free. At least one name, each <= 255 bytes, printable,
 * no spaces. */
loom_err bn_names_parse(const char *text, size_t len, const char *name, char ***names, int *n);
loom_err bn_names_load(const char *path, char ***names, int *n);
void bn_names_free(char **names, int n);

/* Reads a whole file into a NUL-terminated loom_malloc'ed buffer. */
loom_err bn_read_file(const char *path, char **text, size_t *len);

#endif
