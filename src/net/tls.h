/* tls: server-side TLS credentials for a configuration snapshot. */
#ifndef SUBMITD_TLS_H
#define SUBMITD_TLS_H

#include <stddef.h>

#include "core/config.h"

/* Loads every tls_cert_file/tls_key_file pair (PEM, full chain allowed;
 * the Nth of each pair up, the key may sit in the certificate's file),
 * every tls_sni pair, and tls_priority into cfg. One credentials structure
 * holds them all (cfg->tls_creds), so whoever starts a TLS session needs
 * nothing else: GnuTLS picks, during the handshake, among the pairs whose
 * tls_sni names contain the client's SNI (exact, lower-case), else among
 * the default pairs, the first one the client can verify; ECDSA and EdDSA
 * pairs are tried before RSA whatever the order in the file. Refuses
 * different numbers of certificate and key files, a key that does not
 * match its certificate, and two pairs of one key type for the same names.
 * On error returns false with a message naming the file; cfg keeps
 * whatever was loaded, and config_unref() frees it. */
bool tls_server_load(struct config *cfg, char *err, size_t errlen);

/* One line for the log about each default pair: key type, subject, expiry
 * and SHA-256 fingerprint, and the number of SNI pairs. */
void tls_server_describe(const struct config *cfg, char *out, size_t outsz);

/* The pairs loaded: the default ones first, in the order GnuTLS tries them,
 * then the tls_sni ones. */
size_t tls_server_npairs(const struct config *cfg);

/* Pair i < tls_server_npairs(): key type, subject, expiry, fingerprint. */
void tls_server_describe_pair(const struct config *cfg, size_t i, char *out, size_t outsz);

#endif
