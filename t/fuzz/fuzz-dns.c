/* fuzz-dns: a DNS answer as the resolver takes it apart (lookup/dns_cache.c:
 * dns_answer_ttl, dns_mx_parse, and c-ares's A/AAAA parsers as lookup/dns.c
 * calls them). Properties checked on every input: TTLs within their caps,
 * never more MX hosts than asked for, every host a valid name that fits its
 * buffer, no more addresses than the array holds. */
#include "config.h"

#include <ares.h>
#include <stdlib.h>
#include <string.h>

#include "lookup/dns_cache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (dns_answer_ttl(data, size, DNS_OK) > DNS_TTL_MAX)
		abort();
	if (dns_answer_ttl(data, size, DNS_NXDOMAIN) > DNS_NEGATIVE_TTL_MAX ||
	    dns_answer_ttl(data, size, DNS_NODATA) > DNS_NEGATIVE_TTL_MAX)
		abort();
	if (dns_answer_ttl(data, size, DNS_TEMPFAIL) != 0)
		abort();
	struct dns_mx mx[4];
	bool null_mx;
	size_t bad;
	int n = dns_mx_parse(data, size, mx, 4, &null_mx, &bad);
	if (n > 4)
		abort();
	for (int i = 0; i < n; i++)
		if (strnlen(mx[i].host, sizeof(mx[i].host)) >= sizeof(mx[i].host) ||
		    !dns_name_valid(mx[i].host))
			abort();
	if (size > 65535)
		return 0;
	struct ares_addrttl a[4];
	int na = 4;
	if (ares_parse_a_reply(data, (int)size, NULL, a, &na) == ARES_SUCCESS && (na < 0 || na > 4))
		abort();
	struct ares_addr6ttl a6[4];
	int na6 = 4;
	if (ares_parse_aaaa_reply(data, (int)size, NULL, a6, &na6) == ARES_SUCCESS &&
	    (na6 < 0 || na6 > 4))
		abort();
	return 0;
}
