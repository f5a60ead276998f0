/* tls: server-side TLS credentials for a configuration snapshot. */
#ifndef SUBMITD_TLS_H
#define SUBMITD_TLS_H

#include <stddef.h>

#include "core/config.h"

/* Loads tls_cert_file/tls_key_file (PEM, full chain allowed), every
 * tls_sni pair, and tls_priority into cfg. One credentials structure holds
 * them all (cfg->tls_creds), so whoever starts a TLS session needs nothing
 * else: GnuTLS picks, during the handshake, the pair whose tls_sni names
 * contain the client's SNI (exact, lower-case), and tls_cert_file for a
 * client without SNI or with another name. Refuses a key that does not
 * match its certificate. On error returns false with a message naming the
 * file; cfg keeps whatever was loaded, and config_unref() frees it. */
bool tls_server_load(struct config *cfg, char *err, size_t errlen);

/* One line for the log about the default certificate: subject, expiry and
 * SHA-256 fingerprint, and the number of SNI certificates. */
void tls_server_describe(const struct config *cfg, char *out, size_t outsz);

#endif
