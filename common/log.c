/* common/log.c — stderr logger, one write(2) per line. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *prog_name = "loom";
static int min_level = -1;

static int level_from_env(void)
{
	const char *e = getenv("LOOM_LOG");
	if (!e)
		return LOOM_LOG_INFO;
	if (!strcmp(e, "debug"))
		return LOOM_LOG_DEBUG;
	if (!strcmp(e, "warn"))
		return LOOM_LOG_WARN;
	if (!strcmp(e, "error"))
		return LOOM_LOG_ERROR;
	return LOOM_LOG_INFO;
}

void loom_log_init(const char *prog)
{
	prog_name = prog;
	min_level = level_from_env();
}

void loom_log(enum loom_log_level lvl, const char *fmt, ...)
{
	static const char *const tag[] = { "debug", "info", "warn", "error" };
	char line[1024];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int n;

	if (min_level < 0)
		min_level = level_from_env();
	if ((int)lvl < min_level)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof line, "%02d:%02d:%02d.%03ld %s %s: ", tm.tm_hour, tm.tm_min,
		     tm.tm_sec, ts.tv_nsec / 1000000, tag[lvl], prog_name);
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof line - 2)
		n = (int)sizeof line - 2;
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		return;
}
