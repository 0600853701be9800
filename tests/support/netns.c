/* tests/support/netns.c — a private network of network namespaces for
 * multi-host tests (see netns.h). The namespaces are made and removed with
 * iproute2's ip (what an operator would type); entering one is setns(2). */
#include "netns.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define PREFIX "loomnet"

/* The shell line that empties and deletes the current network's
 * namespaces; built before the handlers can run, read by them. */
static char cleanup_cmd[2048];
static bool handlers_set;

/* Runs cmd in a forked shell and waits; async-signal-safe (fork, execve,
 * waitpid). The shell's $PPID is the caller, which the command spares. */
static void run_cleanup(const char *cmd)
{
	pid_t p = fork();
	if (p == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	if (p > 0)
		while (waitpid(p, NULL, 0) < 0 && errno == EINTR)
			;
}

static void on_signal(int sig)
{
	if (cleanup_cmd[0])
		run_cleanup(cleanup_cmd);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void at_exit(void)
{
	if (cleanup_cmd[0])
		run_cleanup(cleanup_cmd);
	cleanup_cmd[0] = '\0';
}

static void set_handlers(void)
{
	static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGABRT};
	if (handlers_set)
		return;
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
		struct sigaction sa = {.sa_handler = on_signal};
		sigemptyset(&sa.sa_mask);
		sigaction(sigs[i], &sa, NULL);
	}
	atexit(at_exit);
	handlers_set = true;
}

/* Appends to cmd the lines that kill what runs in namespace ns (but the
 * shell and its parent) and delete it. */
static void append_removal(char *cmd, size_t cap, const char *ns)
{
	size_t o = strlen(cmd);
	snprintf(cmd + o, cap - o,
		 "for p in $(ip netns pids %s 2>/dev/null); do "
		 "[ \"$p\" = $$ ] || [ \"$p\" = $PPID ] || kill -9 \"$p\" 2>/dev/null; done; "
		 "ip netns del %s 2>/dev/null; ",
		 ns, ns);
}

/* Removes the namespaces of earlier runs whose process is gone. */
static void remove_stale(void)
{
	char line[256], cmd[8192] = "";
	FILE *f = popen("ip netns list 2>/dev/null", "r");
	if (!f)
		return;
	while (fgets(line, sizeof line, f)) {
		int pid;
		char name[128];
		if (sscanf(line, "%127s", name) != 1 || sscanf(name, PREFIX "%d-", &pid) != 1)
			continue;
		if (pid == getpid() || kill(pid, 0) == 0 || errno != ESRCH)
			continue;
		fprintf(stderr, "netns: removing %s, left by a run that is gone\n", name);
		if (strlen(cmd) + 512 < sizeof cmd)
			append_removal(cmd, sizeof cmd, name);
	}
	pclose(f);
	if (cmd[0])
		lt_sh("%s true", cmd);
}

/* Runs a command line quietly; its output (stderr included) goes to out. */
static int sh_out(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int sh_out(char *out, size_t n, const char *fmt, ...)
{
	char cmd[1024], buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	size_t len = strlen(cmd);
	snprintf(cmd + len, sizeof cmd - len, " 2>&1");
	FILE *f = popen(cmd, "r");
	if (!f)
		return -1;
	size_t o = 0;
	if (out && n)
		out[0] = '\0';
	while (fgets(buf, sizeof buf, f))
		if (out && o + 1 < n) {
			snprintf(out + o, n - o, "%s", buf);
			o = strlen(out);
		}
	int st = pclose(f);
	while (o && out && (out[o - 1] == '\n' || out[o - 1] == ' '))
		out[--o] = '\0';
	return st == 0 ? 0 : -1;
}

int lt_net_create(lt_net *net, const char *const *nodes, int n, char *why, size_t why_len)
{
	char out[512];
	memset(net, 0, sizeof *net);
	why[0] = '\0';
	if (n < 1 || n > LT_NET_MAX) {
		snprintf(why, why_len, "%d nodes: 1 to %d", n, LT_NET_MAX);
		return -1;
	}
	if (geteuid() != 0) {
		snprintf(why, why_len, "network namespaces need root (CAP_NET_ADMIN and "
			 "CAP_SYS_ADMIN); running as uid %d", (int)geteuid());
		return -1;
	}
	if (sh_out(out, sizeof out, "ip -V")) {
		snprintf(why, why_len, "no iproute2 'ip' command (%s)", out);
		return -1;
	}
	set_handlers();
	remove_stale();
	snprintf(net->hub, sizeof net->hub, PREFIX "%d-hub", (int)getpid());
	net->n = n;
	for (int i = 0; i < n; i++) {
		snprintf(net->node[i], sizeof net->node[i], "%.10s", nodes[i]);
		snprintf(net->ns[i], sizeof net->ns[i], PREFIX "%d-%s", (int)getpid(),
			 net->node[i]);
		snprintf(net->addr[i], sizeof net->addr[i], "10.231.0.%d", i + 1);
	}
	/* the cleanup line first: a signal from now on removes whatever exists */
	cleanup_cmd[0] = '\0';
	for (int i = 0; i < n; i++)
		append_removal(cleanup_cmd, sizeof cleanup_cmd, net->ns[i]);
	append_removal(cleanup_cmd, sizeof cleanup_cmd, net->hub);
	if (sh_out(out, sizeof out, "ip netns add %s", net->hub)) {
		snprintf(why, why_len, "'ip netns add' fails here: %s", out);
		goto fail;
	}
	if (sh_out(out, sizeof out, "ip -n %s link add br0 type bridge && ip -n %s link set br0 up",
		   net->hub, net->hub)) {
		snprintf(why, why_len, "cannot make a bridge in a namespace: %s", out);
		goto fail;
	}
	for (int i = 0; i < n; i++) {
		const char *ns = net->ns[i], *hub = net->hub;
		if (sh_out(out, sizeof out, "ip netns add %s", ns) ||
		    sh_out(out, sizeof out,
			   "ip -n %s link add p-%s type veth peer name eth0 netns %s && "
			   "ip -n %s link set p-%s master br0 up && "
			   "ip -n %s addr add %s/24 dev eth0 && ip -n %s link set eth0 up && "
			   "ip -n %s link set lo up",
			   hub, net->node[i], ns, hub, net->node[i], ns, net->addr[i], ns, ns)) {
			snprintf(why, why_len, "cannot wire namespace %s (veth into a bridge): %s",
				 ns, out);
			goto fail;
		}
	}
	return 0;
fail:
	lt_net_destroy(net);
	return -1;
}

void lt_net_destroy(lt_net *net)
{
	if (cleanup_cmd[0])
		lt_sh("%s true", cleanup_cmd);
	cleanup_cmd[0] = '\0';
	net->n = 0;
}

static int enter_ns(const char *ns)
{
	char path[128];
	snprintf(path, sizeof path, "/run/netns/%s", ns);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = setns(fd, CLONE_NEWNET);
	close(fd);
	return rc;
}

int lt_net_enter(const lt_net *net, int i)
{
	if (i < 0 || i >= net->n)
		return -1;
	return enter_ns(net->ns[i]);
}

int lt_net_spawn(const lt_net *net, int i, lt_proc *p, const char *log_path, char *const argv[])
{
	if (i < 0 || i >= net->n)
		return -1;
	pid_t parent = getpid();
	snprintf(p->log, sizeof p->log, "%s", log_path);
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		if (enter_ns(net->ns[i])) {
			fprintf(stderr, "setns %s: %s\n", net->ns[i], strerror(errno));
			_exit(127);
		}
		execv(argv[0], argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	p->pid = pid;
	return 0;
}

int lt_net_cable(const lt_net *net, int i, bool plugged)
{
	if (i < 0 || i >= net->n)
		return -1;
	return lt_sh("ip -n %s link set p-%s %s", net->hub, net->node[i],
		     plugged ? "master br0" : "nomaster") ? -1 : 0;
}

int lt_net_bytes(int pid, unsigned long long *rx, unsigned long long *tx)
{
	char path[64], line[512];
	snprintf(path, sizeof path, "/proc/%d/net/dev", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	int rc = -1;
	while (fgets(line, sizeof line, f)) {
		const char *p = line;
		while (*p == ' ')
			p++;
		unsigned long long v[9];
		if (strncmp(p, "eth0:", 5) ||
		    sscanf(p + 5, "%llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
			   &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8]) != 9)
			continue;
		*rx = v[0];
		*tx = v[8];
		rc = 0;
	}
	fclose(f);
	return rc;
}
