/* tls: server-side TLS credentials for a configuration snapshot. */
#ifndef SUBMITD_TLS_H
#define SUBMITD_TLS_H

#include <stddef.h>

#include "core/config.h"

/* Loads tls_cert_file/tls_key_file (PEM, full chain allowed) and
 * tls_priority into cfg. Refuses a key that does not match the certificate.
 * On error returns false with a message naming the file. */
bool tls_server_load(struct config *cfg, char *err, size_t errlen);

#endif
