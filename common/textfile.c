/*
 * common/textfile.c — reading a whole (small) text file.
 */
#include "textfile.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"

loom_err loom_text_read(const char *path, size_t max, char **text, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, n = 0;
	loom_err rc = LOOM_OK;

	*text = NULL;
	if (!fp)
		return loom_fail(errno == ENOENT ? LOOM_ENOTFOUND : LOOM_EIO, "%s: cannot open: %s",
				 path, strerror(errno));
	for (;;) {
		if (n + 4096 + 1 > cap) {
			cap = cap ? cap * 2 : 8192;
			char *nb = loom_realloc(buf, cap);
			if (!nb) {
				rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", path);
				goto out;
			}
			buf = nb;
		}
		size_t r = fread(buf + n, 1, cap - n - 1, fp);
		n += r;
		if (n > max) {
			rc = loom_fail(LOOM_EFORMAT, "%s: larger than %zu bytes", path, max);
			goto out;
		}
		if (r == 0) {
			if (ferror(fp))
				rc = loom_fail(LOOM_EIO, "%s: read failed", path);
			break;
		}
	}
	if (rc == LOOM_OK) {
		buf[n] = '\0';
		*text = buf;
		*len = n;
		buf = NULL;
	}
out:
	loom_free(buf);
	fclose(fp);
	return rc;
}

