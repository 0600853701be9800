/*
 * common/tlslink.h — TLS with mutual authentication for the gateway <->
 * worker link (nng's tls+tcp:// transport; Debian's nng uses mbedTLS).
 *
 * Owns: building the nng TLS configuration each side puts on its dialer
 * (the gateway, client mode) or listener (a worker, server mode): its own
 * certificate and private key, the CA its peers' certificates must chain
 * to, and peer authentication required on both sides (a peer without a
 * certificate from that CA fails the handshake). nng 1.5.2 checks no host
 * name: a peer is whoever holds a certificate of the CA, so the link wants
 * CAs of its own (the strict setup: one CA signs the gateways' certificates
 * and the workers trust only it, another signs the workers' and the gateway
 * trusts only that). Files are read through loom_file_open (regular files).
 * Must not: dial, listen or log. Called by gateway/main.c and worker/main.c.
 */
#ifndef LOOM_TLSLINK_H
#define LOOM_TLSLINK_H

#include <stdbool.h>

#include "err.h"

struct nng_tls_config;

/* True for a tls+tcp:// (or tls+tcp4://, tls+tcp6://) URL. */
bool loom_url_is_tls(const char *url);

/*
 * A TLS configuration for the link: server (a worker's listener) or client
 * (the gateway's dialers), own certificate (PEM, a chain: own first) and its
 * unencrypted PEM key, peers verified against the PEM CA file, TLS 1.2 at
 * least. flag_prefix ("--tls-", "--link-tls-") names the flags in errors,
 * which also name the file and nng's reason. *out holds one reference
 * (nng_tls_config_free); dialers and listeners take their own.
 */
loom_err loom_tls_link_config(bool server, const char *cert, const char *key, const char *ca,
			      const char *flag_prefix, struct nng_tls_config **out);

#endif
