/*
 * common/textfile.c — opening regular files only, and reading whole (small)
 * files through that.
 */
#include "textfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"

/* What a file that is not a regular one is, for messages. */
static const char *kind_of(mode_t m)
{
	if (S_ISFIFO(m))
		return "a FIFO";
	if (S_ISCHR(m))
		return "a character device";
	if (S_ISBLK(m))
		return "a block device";
	if (S_ISSOCK(m))
		return "a socket";
	if (S_ISDIR(m))
		return "a folder";
	return "not a plain file";
}

loom_err loom_file_open(const char *path, int *fd, off_t *size)
{
	struct stat st;
	*fd = -1;
	/* stat never blocks on a FIFO; the O_NONBLOCK open below covers a name
	 * swapped for one in between */
	if (stat(path, &st))
		return loom_fail(errno == ENOENT ? LOOM_ENOTFOUND : LOOM_EIO, "%s: cannot open: %s",
				 path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return loom_fail(LOOM_EIO, "%s: not a regular file (%s)", path, kind_of(st.st_mode));
	int f = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (f < 0)
		return loom_fail(errno == ENOENT ? LOOM_ENOTFOUND : LOOM_EIO, "%s: cannot open: %s",
				 path, strerror(errno));
	if (fstat(f, &st) || !S_ISREG(st.st_mode)) {
		close(f);
		return loom_fail(LOOM_EIO, "%s: not a regular file (%s)", path, kind_of(st.st_mode));
	}
	int fl = fcntl(f, F_GETFL);
	if (fl < 0 || fcntl(f, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		close(f);
		return loom_fail(LOOM_EIO, "%s: fcntl: %s", path, strerror(errno));
	}
	*fd = f;
	if (size)
		*size = st.st_size;
	return LOOM_OK;
}

loom_err loom_text_read(const char *path, size_t max, char **text, size_t *len)
{
	char *buf = NULL;
	size_t cap = 0, n = 0;
	int fd;
	loom_err rc;

	*text = NULL;
	if ((rc = loom_file_open(path, &fd, NULL)))
		return rc;
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
		ssize_t r = read(fd, buf + n, cap - n - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = loom_fail(LOOM_EIO, "%s: read failed: %s", path, strerror(errno));
			goto out;
		}
		n += (size_t)r;
		if (n > max) {
			rc = loom_fail(LOOM_EFORMAT, "%s: larger than %zu bytes", path, max);
			goto out;
		}
		if (r == 0)
			break;
	}
	buf[n] = '\0';
	*text = buf;
	*len = n;
	buf = NULL;
out:
	loom_free(buf);
	close(fd);
	return rc;
}

json_t *loom_json_load_file(const char *path, size_t flags, json_error_t *jerr)
{
	int fd;
	if (loom_file_open(path, &fd, NULL)) {
		memset(jerr, 0, sizeof *jerr);
		jerr->line = jerr->column = -1;
		snprintf(jerr->source, sizeof jerr->source, "%s", path);
		const char *msg = loom_errmsg();
		size_t n = strlen(path); /* the message without its "PATH: " */
		if (!strncmp(msg, path, n) && msg[n] == ':' && msg[n + 1] == ' ')
			msg += n + 2;
		snprintf(jerr->text, sizeof jerr->text, "%s", msg);
		return NULL;
	}
	json_t *root = json_loadfd(fd, flags, jerr);
	close(fd);
	return root;
}
