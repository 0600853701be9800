/*
 * common/log.h — one-line logging to stderr for loom processes.
 *
 * Owns: the log level (LOOM_LOG env: debug|info|warn|error, default info) and
 * the line format "<time> <level> <prog>: message". Thread-safe (one write(2)
 * per line). Must not: exit or abort.
 */
#ifndef LOOM_LOG_H
#define LOOM_LOG_H

enum loom_log_level { LOOM_LOG_DEBUG, LOOM_LOG_INFO, LOOM_LOG_WARN, LOOM_LOG_ERROR };

/* Sets the program name printed on each line (pointer kept, not copied). */
void loom_log_init(const char *prog);
void loom_log(enum loom_log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define LOOM_DEBUG(...) loom_log(LOOM_LOG_DEBUG, __VA_ARGS__)
#define LOOM_INFO(...) loom_log(LOOM_LOG_INFO, __VA_ARGS__)
#define LOOM_WARN(...) loom_log(LOOM_LOG_WARN, __VA_ARGS__)
#define LOOM_ERROR(...) loom_log(LOOM_LOG_ERROR, __VA_ARGS__)

#endif
