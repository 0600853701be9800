/*
 * tests/support/netns.h — a private network of Linux network namespaces,
 * for tests that put loom's processes on "hosts" of their own: a hub
 * namespace holding a bridge (the switch) and N node namespaces, each with
 * an eth0 veth whose other end is a port of that bridge, node i at
 * 10.231.0.(i+1)/24, loopback up. Nothing is added to the namespace the test
 * started in (no interface, no route), so the subnet cannot collide with the
 * machine's own networks nor with another run's.
 *
 * Names are loomnet<PID>-<node> (and -hub). Cleanup: lt_net_destroy; at exit;
 * on SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGABRT (the handler forks one shell,
 * async-signal-safe); processes started by lt_net_spawn die with the test
 * thread that started them (PR_SET_PDEATHSIG); and lt_net_create removes the
 * namespaces of earlier runs whose PID is gone (a run SIGKILLed), killing
 * the processes left in them. Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and
 * iproute2's ip; lt_net_create says why not where it cannot.
 * One network per process at a time. Linux only.
 */
#ifndef LT_NETNS_H
#define LT_NETNS_H

#include <stdbool.h>
#include <stddef.h>

#include "harness.h"

#define LT_NET_MAX 6

typedef struct lt_net {
	int n;                       /* nodes */
	char node[LT_NET_MAX][16];   /* the caller's names: "gw", "w0", ... */
	char ns[LT_NET_MAX][48];     /* namespace names: loomnet<PID>-<node> */
	char hub[48];                /* the bridge's namespace */
	char addr[LT_NET_MAX][16];   /* node i's address: 10.231.0.(i+1) */
} lt_net;

/*
 * Creates the hub and n nodes (1..LT_NET_MAX, names of up to 10 characters)
 * after removing stale ones. 0; or -1 with why (a sentence: not root, no
 * ip, the kernel refused a namespace, ...) and nothing left behind.
 */
int lt_net_create(lt_net *net, const char *const *nodes, int n, char *why, size_t why_len);
/* Kills what is left in the namespaces (never the calling process) and
 * deletes them. Idempotent. */
void lt_net_destroy(lt_net *net);
/* Moves the calling thread into node i's namespace (threads it starts
 * later inherit it): the test becomes a client on that host. 0 or -1. */
int lt_net_enter(const lt_net *net, int i);
/* lt_spawn, the child in node i's namespace and killed (SIGKILL) when the
 * calling thread ends. 0 or -1. */
int lt_net_spawn(const lt_net *net, int i, lt_proc *p, const char *log_path, char *const argv[]);
/* Unplugs node i's cable at the switch (its bridge port leaves the bridge:
 * frames either way are lost, with no carrier change and no FIN or RST, as
 * when a host drops off the network) or plugs it back. 0 or -1. */
int lt_net_cable(const lt_net *net, int i, bool plugged);
/* Bytes received and sent by eth0 of the namespace process pid is in
 * (/proc/PID/net/dev). 0 or -1. */
int lt_net_bytes(int pid, unsigned long long *rx, unsigned long long *tx);

#endif
