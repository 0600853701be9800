/*
 * gateway/gw_policy.c — admin authentication and the folder rule. The
 * folder rule resolves with realpath (so ".." and symlink escapes land where
 * they really point) and compares whole path components; a folder that does
 * not exist is judged by its lexical form, so the answer never tells a
 * client whether a path outside the allowed directories exists.
 */
#include "gw_policy.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool gw_addr_is_loopback(const struct sockaddr *sa)
{
	if (!sa)
		return false;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
		return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
		const uint8_t *b = a->sin6_addr.s6_addr;
		static const uint8_t one[16] = {[15] = 1};
		static const uint8_t mapped[12] = {[10] = 0xff, [11] = 0xff};
		if (!memcmp(b, one, 16))
			return true;
		return !memcmp(b, mapped, 12) && b[12] == 127;
	}
	return false;
}

bool gw_secret_equal(const char *a, const char *b)
{
	size_t na = strlen(a), nb = strlen(b);
	unsigned char d = na != nb;
	for (size_t i = 0; i < na; i++)
		d |= (unsigned char)a[i] ^ (unsigned char)(nb ? b[i % nb] : 0);
	return d == 0;
}

gw_auth gw_auth_check(const char *token, const char *authorization, const struct sockaddr *peer,
		      char *why, size_t n)
{
	if (!token || !*token) {
		if (gw_addr_is_loopback(peer))
			return GW_AUTH_OK;
		snprintf(why, n, "the admin API accepts only loopback clients when no admin token "
				 "is configured (--admin-token or LOOM_ADMIN_TOKEN)");
		return GW_AUTH_FORBIDDEN;
	}
	if (!authorization) {
		snprintf(why, n, "missing 'Authorization: Bearer <token>' header");
		return GW_AUTH_UNAUTHORIZED;
	}
	const char *p = authorization;
	while (*p == ' ' || *p == '\t')
		p++;
	if (strncasecmp(p, "Bearer", 6) || (p[6] != ' ' && p[6] != '\t')) {
		snprintf(why, n, "the Authorization header must be 'Bearer <token>'");
		return GW_AUTH_UNAUTHORIZED;
	}
	p += 6;
	while (*p == ' ' || *p == '\t')
		p++;
	char given[512];
	size_t len = strlen(p);
	while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
		len--;
	if (len >= sizeof given) {
		snprintf(why, n, "incorrect admin token");
		return GW_AUTH_UNAUTHORIZED;
	}
	memcpy(given, p, len);
	given[len] = '\0';
	if (!gw_secret_equal(given, token)) {
		snprintf(why, n, "incorrect admin token");
		return GW_AUTH_UNAUTHORIZED;
	}
	return GW_AUTH_OK;
}

bool gw_path_normalize(const char *path, char *out)
{
	char buf[2 * PATH_MAX];
	if (path[0] == '/') {
		if (strlen(path) >= sizeof buf)
			return false;
		strcpy(buf, path);
	} else {
		char cwd[PATH_MAX];
		if (!getcwd(cwd, sizeof cwd))
			return false;
		if ((size_t)snprintf(buf, sizeof buf, "%s/%s", cwd, path) >= sizeof buf)
			return false;
	}
	/* rebuild component by component */
	size_t o = 0;
	out[o] = '\0';
	char *save = NULL;
	for (char *c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		if (!strcmp(c, "."))
			continue;
		if (!strcmp(c, "..")) {
			while (o > 0 && out[o - 1] != '/')
				o--;
			if (o > 0)
				o--; /* the '/' */
			out[o] = '\0';
			continue;
		}
		size_t cl = strlen(c);
		if (o + 1 + cl + 1 > PATH_MAX)
			return false;
		out[o++] = '/';
		memcpy(out + o, c, cl);
		o += cl;
		out[o] = '\0';
	}
	if (o == 0)
		strcpy(out, "/");
	return true;
}

/* abs lies in dir (both absolute, normalized). */
static bool inside(const char *abs, const char *dir)
{
	size_t n = strlen(dir);
	while (n > 1 && dir[n - 1] == '/')
		n--;
	if (n == 1 && dir[0] == '/')
		return true;
	return !strncmp(abs, dir, n) && (abs[n] == '/' || abs[n] == '\0');
}

static bool inside_any(const char *const *allowed, size_t n, const char *abs)
{
	for (size_t i = 0; i < n; i++)
		if (inside(abs, allowed[i]))
			return true;
	return false;
}

/* Every symlink directly in dir must resolve inside an allowed directory. */
static bool links_stay_inside(const char *const *allowed, size_t n, const char *dir, char *why,
			      size_t n_why)
{
	DIR *d = opendir(dir);
	if (!d)
		return true; /* the importer reports an unreadable folder itself */
	bool ok = true;
	struct dirent *e;
	while (ok && (e = readdir(d))) {
		char p[PATH_MAX + 256], target[PATH_MAX];
		struct stat st;
		snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
		if (lstat(p, &st) || !S_ISLNK(st.st_mode))
			continue;
		if (!realpath(p, target) || !inside_any(allowed, n, target)) {
			snprintf(why, n_why, "'%s' in the folder is a link that leads outside the "
					     "allowed directories", e->d_name);
			ok = false;
		}
	}
	closedir(d);
	return ok;
}

gw_path_rc gw_path_check(const char *const *allowed, size_t n, const char *path, char *abs,
			 char *why, size_t n_why)
{
	char lex[PATH_MAX];
	abs[0] = '\0';
	if (!n) {
		snprintf(why, n_why, "importing from the gateway's disk is disabled: no --adapter-dir "
				     "is configured");
		return GW_PATH_FORBIDDEN;
	}
	if (!*path) {
		snprintf(why, n_why, "the path is empty");
		return GW_PATH_MISSING;
	}
	if (!realpath(path, abs)) {
		int err = errno;
		abs[0] = '\0';
		if ((err == ENOENT || err == ENOTDIR) && gw_path_normalize(path, lex) &&
		    inside_any(allowed, n, lex)) {
			snprintf(why, n_why, "%s: %s", path, strerror(err));
			return GW_PATH_MISSING;
		}
		snprintf(why, n_why, "path '%s' is outside the directories allowed by --adapter-dir",
			 path);
		return GW_PATH_FORBIDDEN;
	}
	if (!inside_any(allowed, n, abs)) {
		abs[0] = '\0';
		snprintf(why, n_why, "path '%s' is outside the directories allowed by --adapter-dir",
			 path);
		return GW_PATH_FORBIDDEN;
	}
	struct stat st;
	if (stat(abs, &st) || !S_ISDIR(st.st_mode)) {
		snprintf(why, n_why, "%s: not a folder", path);
		abs[0] = '\0';
		return GW_PATH_MISSING;
	}
	if (!links_stay_inside(allowed, n, abs, why, n_why)) {
		abs[0] = '\0';
		return GW_PATH_FORBIDDEN;
	}
	return GW_PATH_OK;
}
