/* core/base64: RFC 4648 §4 base64, as SASL exchanges use it (RFC 4954 §4).
 * Pure, no allocation of its own. */
#ifndef SUBMITD_BASE64_H
#define SUBMITD_BASE64_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

/* Appends the padded encoding of p[0..n) to out; n == 0 appends nothing. */
void base64_encode(struct buf *out, const uint8_t *p, size_t n);
/* Strict base64 (RFC 4648 §4, as RFC 4954 §4 requires): only A-Za-z0-9+/,
 * length a multiple of 4, '=' only as one or two trailing pad characters.
 * "" is valid. The SMTP server can use it to answer 501 5.5.2. */
bool base64_valid(const char *s, size_t len);

#endif
