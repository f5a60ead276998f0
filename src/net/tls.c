#include "config.h"
#include "net/tls.h"

#include <stdio.h>

bool tls_server_load(struct config *cfg, char *err, size_t errlen)
{
	const char *errpos = NULL;
	int r = gnutls_priority_init(&cfg->tls_prio, cfg->tls_priority, &errpos);
	if (r < 0) {
		cfg->tls_prio = NULL;
		snprintf(err, errlen, "tls_priority: %s near \"%s\"", gnutls_strerror(r),
			 errpos ? errpos : "");
		return false;
	}
	if (cfg->tls_cert_file == NULL || cfg->tls_key_file == NULL)
		return true;
	gnutls_certificate_allocate_credentials(&cfg->tls_creds);
	r = gnutls_certificate_set_x509_key_file2(cfg->tls_creds, cfg->tls_cert_file,
						  cfg->tls_key_file, GNUTLS_X509_FMT_PEM, NULL, 0);
	if (r < 0) {
		snprintf(err, errlen, "tls_cert_file %s / tls_key_file %s: %s", cfg->tls_cert_file,
			 cfg->tls_key_file, gnutls_strerror(r));
		return false;
	}
	return true;
}
