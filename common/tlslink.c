/*
 * common/tlslink.c — the link's TLS configuration (see tlslink.h).
 */
#include "tlslink.h"

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "textfile.h"

#define PEM_MAX (1u << 20)

bool loom_url_is_tls(const char *url)
{
	return url && (!strncmp(url, "tls+tcp://", 10) || !strncmp(url, "tls+tcp4://", 11) ||
		       !strncmp(url, "tls+tcp6://", 11));
}

loom_err loom_tls_link_config(bool server, const char *cert, const char *key, const char *ca,
			      const char *flag_prefix, struct nng_tls_config **out)
{
	char *cert_pem = NULL, *key_pem = NULL, *ca_pem = NULL;
	size_t cert_len = 0, key_len = 0, ca_len = 0;
	nng_tls_config *cfg = NULL;
	loom_err rc;
	int rv;
	*out = NULL;
	if ((rc = loom_text_read(cert, PEM_MAX, &cert_pem, &cert_len)) ||
	    (rc = loom_text_read(key, PEM_MAX, &key_pem, &key_len)) ||
	    (rc = loom_text_read(ca, PEM_MAX, &ca_pem, &ca_len))) {
		char why[512];
		snprintf(why, sizeof why, "%s", loom_errmsg()); /* loom_fail writes over it */
		rc = loom_fail(rc, "link TLS: %s", why);
		goto out;
	}
	if ((rv = nng_tls_config_alloc(&cfg, server ? NNG_TLS_MODE_SERVER : NNG_TLS_MODE_CLIENT))) {
		rc = loom_fail(LOOM_EUNSUPPORTED, "link TLS: this nng has no TLS (%s)",
			       nng_strerror(rv));
		goto out;
	}
	/* mbedTLS 2.28 has no TLS 1.3: 1.2 alone then */
	if (nng_tls_config_version(cfg, NNG_TLS_1_2, NNG_TLS_1_3))
		nng_tls_config_version(cfg, NNG_TLS_1_2, NNG_TLS_1_2);
	if ((rv = nng_tls_config_own_cert(cfg, cert_pem, key_pem, NULL))) {
		rc = loom_fail(LOOM_EINVAL, "link TLS: %scert %s / %skey %s: %s (PEM certificate and "
			       "its unencrypted PEM private key)", flag_prefix, cert, flag_prefix, key,
			       nng_strerror(rv));
		goto out;
	}
	if ((rv = nng_tls_config_ca_chain(cfg, ca_pem, NULL))) {
		rc = loom_fail(LOOM_EINVAL, "link TLS: %sca %s: %s (PEM CA certificates)", flag_prefix,
			       ca, nng_strerror(rv));
		goto out;
	}
	if ((rv = nng_tls_config_auth_mode(cfg, NNG_TLS_AUTH_MODE_REQUIRED))) {
		rc = loom_fail(LOOM_EINTERNAL, "link TLS: cannot require peer certificates: %s",
			       nng_strerror(rv));
		goto out;
	}
	*out = cfg;
	cfg = NULL;
	rc = LOOM_OK;
out:
	if (cfg)
		nng_tls_config_free(cfg);
	if (key_pem)
		memset(key_pem, 0, key_len);
	loom_free(key_pem);
	loom_free(cert_pem);
	loom_free(ca_pem);
	return rc;
}
