/* common/err.c — error names and the per-thread detail buffer. */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char detail[512];

static const char *const names[LOOM_ERR_COUNT] = {
	[LOOM_OK] = "success",
	[LOOM_ENOMEM] = "out of memory",
	[LOOM_EINVAL] = "invalid argument",
	[LOOM_EIO] = "I/O error",
	[LOOM_EFORMAT] = "malformed data",
	[LOOM_ENOTFOUND] = "not found",
	[LOOM_ERANGE] = "out of range",
	[LOOM_EPROTO] = "protocol error",
	[LOOM_ECLOSED] = "connection closed",
	[LOOM_ETIMEDOUT] = "timed out",
	[LOOM_EUNSUPPORTED] = "unsupported",
	[LOOM_EBUSY] = "busy",
	[LOOM_ECANCELED] = "canceled",
	[LOOM_EEXIST] = "already exists",
	[LOOM_EINTERNAL] = "internal error",
};

const char *loom_strerror(loom_err rc)
{
	if ((unsigned)rc >= LOOM_ERR_COUNT || !names[rc])
		return "unknown error";
	return names[rc];
}

loom_err loom_fail(loom_err rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof detail, fmt, ap);
	va_end(ap);
	return rc;
}

const char *loom_errmsg(void)
{
	return detail;
}

void loom_errclear(void)
{
	detail[0] = '\0';
}
