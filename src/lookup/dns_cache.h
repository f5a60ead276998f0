/* lookup/dns_cache: the parts of lookup/dns.c that do no I/O, so they are
 * tested with a fake clock and fake answers (t/unit/test-dns.c): the
 * per-worker answer cache, the TTL of an answer (RFC 2308 for negative
 * ones) and the order of MX hosts (RFC 5321 §5.1). */
#ifndef SUBMITD_LOOKUP_DNS_CACHE_H
#define SUBMITD_LOOKUP_DNS_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What one query found. */
enum dns_status {
	DNS_OK,       /* records of the type asked for */
	DNS_NXDOMAIN, /* the name does not exist */
	DNS_NODATA,   /* the name exists, no record of that type */
	DNS_TEMPFAIL, /* no answer, SERVFAIL, timeout, malformed: try later */
};

/* A DNS name (RFC 1035 §2.3.4: 255 octets) as text, with its NUL. */
#define DNS_NAME_MAX 256
/* An answer larger than this is used but not cached. */
#define DNS_CACHE_ANSWER_MAX 4096
/* Negative answers are kept at most this long (seconds; RFC 2308 §5 allows
 * up to 3 hours, a submission server wants to see a fixed zone soon). */
#define DNS_NEGATIVE_TTL_MAX 300
/* Positive answers at most a day, whatever the zone says. */
#define DNS_TTL_MAX 86400

struct dns_cache;

/* A cache of at most max answers (0: no caching). */
struct dns_cache *dns_cache_new(size_t max);
void dns_cache_free(struct dns_cache **cp);
/* Stores the answer to (name, type) until now_ms + ttl seconds; a TEMPFAIL
 * is never stored, nor a ttl of 0. When full, the entry that expires first
 * makes room. name is compared without case. */
void dns_cache_put(struct dns_cache *c, const char *name, int type, enum dns_status st,
		   const unsigned char *abuf, size_t alen, uint32_t ttl, uint64_t now_ms);
/* The stored answer, if any and not expired at now_ms: its status, and the
 * raw answer (valid until the next put) in *abuf_r / *alen_r. */
bool dns_cache_get(struct dns_cache *c, const char *name, int type, uint64_t now_ms,
		   enum dns_status *st_r, const unsigned char **abuf_r, size_t *alen_r);
size_t dns_cache_count(const struct dns_cache *c);

/* The TTL an answer may be cached for (seconds): for DNS_OK the lowest TTL
 * of the answer section's records, else min(SOA TTL, SOA MINIMUM) from the
 * authority section (RFC 2308 §5), 0 when there is none; capped by
 * DNS_TTL_MAX / DNS_NEGATIVE_TTL_MAX. A malformed answer gives 0. */
uint32_t dns_answer_ttl(const unsigned char *abuf, size_t alen, enum dns_status st);

/* One MX record. */
struct dns_mx {
	char host[DNS_NAME_MAX];
	unsigned pref;
};
/* Sorts by preference, lowest first, and shuffles hosts of equal
 * preference (RFC 5321 §5.1) with rnd(n) returning 0..n-1. */
void dns_mx_order(struct dns_mx *mx, size_t n, unsigned (*rnd)(unsigned n));
/* The MX records of an answer, the max of them with the lowest
 * preferences, invalid host names (dns_name_valid) skipped: the number
 * kept, or -1 when the answer does not parse. *null_mx_r: an MX "." was
 * among them (RFC 7505). lookup/dns.c keeps DNS_MX_SCAN_MAX. */
#define DNS_MX_SCAN_MAX 64
int dns_mx_parse(const unsigned char *abuf, size_t alen, struct dns_mx *mx, size_t max,
		 bool *null_mx_r, size_t *bad_r);
/* A host name we will look up: 1..253 octets of letters, digits, '-', '_'
 * and dots, labels 1..63 octets (names from a DNS answer are checked too). */
bool dns_name_valid(const char *name);

#endif
