/*
 * bench/bn_extract.c — `loom-bench --extract FILE KEY...`: JSON report
 * fields as whitespace-separated columns, so that bench/plot (gnuplot) needs
 * neither Python nor jq.
 */
#include "bench/bn_report.h"

#include <string.h>

/* Resolves a dot path in point p; NULL when any step is missing. */
static json_t *resolve(json_t *p, const char *key)
{
	char part[256];
	const char *s = key;
	json_t *v = p;
	while (v && *s) {
		const char *dot = strchr(s, '.');
		size_t n = dot ? (size_t)(dot - s) : strlen(s);
		if (n >= sizeof part)
			return NULL;
		memcpy(part, s, n);
		part[n] = '\0';
		v = json_is_object(v) ? json_object_get(v, part) : NULL;
		s = dot ? dot + 1 : s + n;
	}
	return v;
}

static void print_value(FILE *out, json_t *v)
{
	if (json_is_integer(v)) {
		fprintf(out, "%lld", (long long)json_integer_value(v));
	} else if (json_is_real(v)) {
		fprintf(out, "%.10g", json_real_value(v));
	} else if (json_is_true(v) || json_is_false(v)) {
		fprintf(out, "%d", json_is_true(v) ? 1 : 0);
	} else if (json_is_string(v)) {
		const char *s = json_string_value(v);
		if (!*s)
			fputc('-', out);
		for (; *s; s++) /* one column per value: blanks become '_' */
			fputc(*s == ' ' || *s == '\t' || *s == '\n' ? '_' : *s, out);
	} else {
		fputs("NaN", out);
	}
}

/* The member names of object v joined by ',' (NaN when v is not an object). */
static void print_keys(FILE *out, json_t *v)
{
	const char *key;
	json_t *val;
	int first = 1;
	if (!json_is_object(v) || json_object_size(v) == 0) {
		fputs("NaN", out);
		return;
	}
	json_object_foreach(v, key, val) {
		(void)val;
		if (!first)
			fputc(',', out);
		first = 0;
		for (const char *s = key; *s; s++)
			fputc(*s == ' ' || *s == '\t' || *s == '\n' ? '_' : *s, out);
	}
}

loom_err bn_extract(FILE *out, const char *path, char *const *keys, int n_keys)
{
	json_error_t e;
	json_t *root = json_load_file(path, 0, &e), *points;
	loom_err rc = LOOM_OK;
	if (!root)
		return loom_fail(LOOM_EFORMAT, "%s:%d:%d: %s", path, e.line, e.column, e.text);
	if (json_is_array(root)) {
		points = root;
		json_incref(points);
	} else if (json_is_object(root)) {
		points = json_pack("[O]", root);
	} else {
		json_decref(root);
		return loom_fail(LOOM_EFORMAT, "%s: not a loom-bench report (an object or an array "
				 "of objects)", path);
	}
	if (n_keys < 1) {
		rc = loom_fail(LOOM_EINVAL, "--extract %s: name at least one KEY (e.g. ttft.p50)",
			       path);
		goto out;
	}
	size_t np = json_array_size(points);
	for (size_t i = 0; i < np; i++) {
		json_t *p = json_array_get(points, i), *vals[64];
		size_t rows = 0;
		int rows_mode = 0;
		if (n_keys > 64) {
			rc = loom_fail(LOOM_EINVAL, "--extract: at most 64 keys");
			goto out;
		}
		for (int k = 0; k < n_keys; k++) {
			vals[k] = keys[k][0] == '@' ? NULL : resolve(p, keys[k]);
			if (keys[k][0] == '@' && strcmp(keys[k], "@index") &&
			    strncmp(keys[k], "@keys:", 6)) {
				rc = loom_fail(LOOM_EINVAL, "--extract: unknown special key '%s' "
					       "(@index, @keys:PATH)", keys[k]);
				goto out;
			}
			if (json_is_object(vals[k])) {
				const char *f = json_object_iter_key(json_object_iter(vals[k]));
				rc = loom_fail(LOOM_EINVAL, "--extract %s: '%s' is an object; name one "
					       "of its fields (e.g. %s.%s)", path, keys[k], keys[k],
					       f ? f : "...");
				goto out;
			}
			if (json_is_array(vals[k])) {
				rows_mode = 1;
				if (json_array_size(vals[k]) > rows)
					rows = json_array_size(vals[k]);
			}
		}
		if (!rows_mode || rows == 0)
			rows = 1; /* an empty column still prints one NaN row, keeping blocks aligned */
		for (size_t r = 0; r < rows; r++) {
			for (int k = 0; k < n_keys; k++) {
				json_t *v = vals[k];
				if (k)
					fputc('\t', out);
				if (!strcmp(keys[k], "@index")) {
					fprintf(out, "%zu", i);
					continue;
				}
				if (!strncmp(keys[k], "@keys:", 6)) {
					print_keys(out, resolve(p, keys[k] + 6));
					continue;
				}
				print_value(out, json_is_array(v) ? json_array_get(v, r) : v);
			}
			fputc('\n', out);
		}
		if (rows_mode && i + 1 < np)
			fputs("\n\n", out);
	}
out:
	json_decref(points);
	json_decref(root);
	return rc;
}
