/*
 * gateway/gw_policy.h — who may use the admin API, and which folders of the
 * gateway's disk it may import from.
 *
 * Owns: the admin authentication rule (a configured Bearer token, or with
 * none configured, loopback clients only), the path rule (a folder given to
 * the admin API must resolve — after "..", "." and every symlink — inside
 * one of the allowed directories, and so must every symlink inside it), and
 * constant-time token comparison. Pure functions; any thread.
 * Must not: know HTTP libraries or read file contents. Called by gw_admin
 * and its tests.
 */
#ifndef GW_POLICY_H
#define GW_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "common/err.h"

typedef enum gw_auth {
	GW_AUTH_OK = 0,
	GW_AUTH_UNAUTHORIZED = 401,  /* token configured: missing or wrong */
	GW_AUTH_FORBIDDEN = 403,     /* no token configured and not a loopback client */
} gw_auth;

/* True for 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104. NULL is false. */
bool gw_addr_is_loopback(const struct sockaddr *sa);

/*
 * The admin rule. token: the configured token (NULL or "" = none);
 * authorization: the request's Authorization header (NULL = absent); peer:
 * the client's address. why (n bytes) gets a sentence for the error body.
 */
gw_auth gw_auth_check(const char *token, const char *authorization, const struct sockaddr *peer,
		      char *why, size_t n);

/* Compares two strings in time that depends only on their lengths. */
bool gw_secret_equal(const char *a, const char *b);

typedef enum gw_path_rc {
	GW_PATH_OK = 0,
	GW_PATH_FORBIDDEN,   /* outside every allowed directory (403) */
	GW_PATH_MISSING,     /* inside, but no such folder (400) */
} gw_path_rc;

/*
 * Resolves path (relative paths against the current directory) and checks
 * it against allowed (n absolute, already realpath'ed directories; none =
 * every path is forbidden). On GW_PATH_OK, abs (PATH_MAX bytes) holds the
 * resolved folder. Symlinks directly inside the folder must resolve inside
 * an allowed directory too. why (n_why bytes) explains a refusal.
 */
gw_path_rc gw_path_check(const char *const *allowed, size_t n, const char *path, char *abs,
			 char *why, size_t n_why);

/* Lexical normalization (no file system access): cwd-joined, "." and ".."
 * and repeated '/' removed. out has PATH_MAX bytes; false if too long. */
bool gw_path_normalize(const char *path, char *out);

#endif
