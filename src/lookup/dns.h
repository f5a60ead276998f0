/* lookup/dns: asynchronous DNS with c-ares on a worker's libuv loop
 * (docs/dns.md). One resolver per worker: c-ares's sockets are watched with
 * uv_poll and its retransmissions driven by a uv_timer, so nothing waits.
 * Answers are hostile until parsed (c-ares's parsers; names and counts
 * bounded) and cached per worker (lookup/dns_cache.h).
 *
 * The settings come from the configuration snapshot a request names
 * (dns_servers, dns_timeout, dns_tries, dns_cache_size); a snapshot with
 * other settings takes effect when no query is out. */
#ifndef SUBMITD_LOOKUP_DNS_H
#define SUBMITD_LOOKUP_DNS_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "core/config.h"
#include "lookup/dns_cache.h"

/* At most this many MX hosts are tried, and this many addresses each. */
#define DNS_MX_MAX 10
#define DNS_ADDRS_PER_HOST 4
#define DNS_TARGETS_MAX (DNS_MX_MAX * DNS_ADDRS_PER_HOST * 2)

struct dns;
struct dns_req;

/* One address to connect to, with the host name it came from (the MX host,
 * or the domain itself without MX): the name for logs, SNI and TLS. */
struct dns_target {
	char host[DNS_NAME_MAX];
	struct sockaddr_storage addr; /* port 0 */
};

struct dns_result {
	enum dns_status status;
	bool null_mx; /* RFC 7505: the domain accepts no mail */
	/* dns_domain_check: MX records, every host name in them malformed
	   (Postfix's DNS_INVAL); the status is then NODATA */
	bool malformed;
	const struct dns_target *targets; /* dns_resolve_mx: in the order to try */
	size_t ntargets;
	const char *why; /* what failed, for logs ("" when OK) */
};

/* Called exactly once per request, never from inside the call that made
 * it, unless the request was cancelled first. */
typedef void dns_cb(void *ctx, const struct dns_result *r);

struct dns *dns_new(uv_loop_t *loop);
/* Answers requests still out with DNS_TEMPFAIL (from inside this call),
 * then closes the channel and the handles. */
void dns_free(struct dns **dp);

/* The addresses mail for domain goes to (RFC 5321 §5.1): its MX hosts by
 * preference (equal ones shuffled), each host's A then AAAA records; with
 * no MX record, the domain's own A/AAAA. OK when there is at least one
 * address; TEMPFAIL when none and a lookup failed temporarily. */
struct dns_req *dns_resolve_mx(struct dns *d, const struct config *cfg, const char *domain,
			       dns_cb *cb, void *ctx);
/* Whether domain can receive mail, as Postfix's reject_unknown_*_domain
 * asks: an MX record (null_mx set for RFC 7505's "."), else an A or AAAA
 * record. NXDOMAIN/NODATA when there is none, TEMPFAIL when DNS did not
 * answer. */
struct dns_req *dns_domain_check(struct dns *d, const struct config *cfg, const char *domain,
				 dns_cb *cb, void *ctx);
/* Forgets a request: its callback is not called. *rp becomes NULL. */
void dns_cancel(struct dns_req **rp);

/* Turns dns_servers ("HOST[:PORT] ...", addresses only, IPv6 in brackets)
 * into c-ares's list ("1.2.3.4:53,[::1]:53"). False with why in err. */
bool dns_servers_parse(const char *spec, char *csv, size_t csvlen, char *err, size_t errlen);

#endif
