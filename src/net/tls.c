#include "config.h"
#include "net/tls.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <gnutls/abstract.h>
#include <gnutls/x509.h>

#define TLS_MAX_CHAIN 16

/* Adds one tls_sni pair under its own names. GnuTLS chooses among the pairs
 * of a credentials structure by the names given here (exact match on the
 * client's SNI), so a hosting panel can serve one certificate per domain
 * without the session code knowing about it. */
static bool tls_server_add_sni(struct config *cfg, const struct tls_sni *e, char *err,
			       size_t errlen)
{
	gnutls_pcert_st pcerts[TLS_MAX_CHAIN];
	unsigned npcerts = TLS_MAX_CHAIN;
	int r = gnutls_pcert_list_import_x509_file(pcerts, &npcerts, e->cert_file,
						   GNUTLS_X509_FMT_PEM, NULL, NULL, 0);
	if (r < 0) {
		snprintf(err, errlen, "tls_sni %s: %s: %s", e->names[0], e->cert_file,
			 gnutls_strerror(r));
		return false;
	}
	gnutls_privkey_t key = NULL;
	gnutls_datum_t pem = {NULL, 0};
	r = gnutls_load_file(e->key_file, &pem);
	if (r >= 0)
		r = gnutls_privkey_init(&key);
	if (r >= 0)
		r = gnutls_privkey_import_x509_raw(key, &pem, GNUTLS_X509_FMT_PEM, NULL, 0);
	if (pem.data != NULL) {
		gnutls_memset(pem.data, 0, pem.size);
		gnutls_free(pem.data);
	}
	if (r < 0) {
		snprintf(err, errlen, "tls_sni %s: %s: %s", e->names[0], e->key_file,
			 gnutls_strerror(r));
		goto fail;
	}
	/* On success the credentials own the key and the certificates (the
	   array itself is copied); GnuTLS also checks that they match
	   (GnuTLS >= 3.6 semantics, see gnutls_certificate_set_key()). */
	r = gnutls_certificate_set_key(cfg->tls_creds, (const char **)e->names, (int)e->nnames,
				       pcerts, (int)npcerts, key);
	if (r < 0) {
		snprintf(err, errlen, "tls_sni %s: %s / %s: %s", e->names[0], e->cert_file,
			 e->key_file, gnutls_strerror(r));
		/* On failure (a key that does not match) GnuTLS keeps no
		   reference: the key and certificates are still ours. */
		goto fail;
	}
	return true;
fail:
	if (key != NULL)
		gnutls_privkey_deinit(key);
	for (unsigned i = 0; i < npcerts; i++)
		gnutls_pcert_deinit(&pcerts[i]);
	return false;
}

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
	if (cfg->tls_cert_file == NULL || cfg->tls_key_file == NULL) {
		if (cfg->ntls_sni > 0) {
			snprintf(err, errlen,
				 "tls_sni needs tls_cert_file and tls_key_file (the "
				 "certificate for clients without SNI)");
			return false;
		}
		return true;
	}
	/* One ticket key per configuration snapshot, shared by the workers;
	   a reload starts a new one (old tickets then fall back to a full
	   handshake). */
	if ((r = gnutls_session_ticket_key_generate(&cfg->tls_ticket_key)) < 0) {
		snprintf(err, errlen, "session ticket key: %s", gnutls_strerror(r));
		return false;
	}
	gnutls_certificate_allocate_credentials(&cfg->tls_creds);
	/* The default pair first: GnuTLS falls back to the first compatible
	   pair when no name matches. */
	r = gnutls_certificate_set_x509_key_file2(cfg->tls_creds, cfg->tls_cert_file,
						  cfg->tls_key_file, GNUTLS_X509_FMT_PEM, NULL, 0);
	if (r < 0) {
		snprintf(err, errlen, "tls_cert_file %s / tls_key_file %s: %s", cfg->tls_cert_file,
			 cfg->tls_key_file, gnutls_strerror(r));
		return false;
	}
	for (size_t i = 0; i < cfg->ntls_sni; i++)
		if (!tls_server_add_sni(cfg, &cfg->tls_sni[i], err, errlen))
			return false;
	return true;
}

void tls_server_describe(const struct config *cfg, char *out, size_t outsz)
{
	snprintf(out, outsz, "no TLS certificate");
	if (cfg->tls_creds == NULL)
		return;
	gnutls_datum_t der;
	gnutls_x509_crt_t crt;
	if (gnutls_certificate_get_crt_raw(cfg->tls_creds, 0, 0, &der) < 0 ||
	    gnutls_x509_crt_init(&crt) < 0)
		return;
	if (gnutls_x509_crt_import(crt, &der, GNUTLS_X509_FMT_DER) == 0) {
		char dn[256] = "", fp[100] = "", when[32] = "?";
		gnutls_datum_t d = {NULL, 0};
		if (gnutls_x509_crt_get_dn3(crt, &d, 0) == 0) {
			snprintf(dn, sizeof(dn), "%.*s", (int)d.size, (const char *)d.data);
			gnutls_free(d.data);
		}
		uint8_t md[32];
		size_t mdlen = sizeof(md);
		if (gnutls_x509_crt_get_fingerprint(crt, GNUTLS_DIG_SHA256, md, &mdlen) == 0) {
			for (size_t i = 0; i < mdlen && 3 * i + 3 < sizeof(fp); i++)
				snprintf(fp + 3 * i, 4, "%02X%s", md[i], i + 1 < mdlen ? ":" : "");
		}
		time_t t = gnutls_x509_crt_get_expiration_time(crt);
		struct tm tm;
		if (t != (time_t)-1 && gmtime_r(&t, &tm) != NULL)
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%SZ", &tm);
		snprintf(out, outsz,
			 "certificate \"%s\" valid until %s, SHA-256 %s, %zu SNI pair%s", dn, when,
			 fp, cfg->ntls_sni, cfg->ntls_sni == 1 ? "" : "s");
	}
	gnutls_x509_crt_deinit(crt);
}
