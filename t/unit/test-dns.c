/* lookup/dns_cache.c and lookup/dns.c without a network: MX order, answer
 * TTLs (RFC 2308), the cache with a fake clock, names, dns_servers, and the
 * resolver's callbacks (exactly once, never inside the call, none after
 * dns_cancel, TEMPFAIL from dns_free) against a server that never answers. */
#include "config.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/config.h"
#include "lookup/dns.h"
#include "lookup/dns_cache.h"
#include "tap.h"
#include "loop-wait.h"

static unsigned rnd_zero(unsigned n)
{
	(void)n;
	return 0;
}

static unsigned rnd_real(unsigned n)
{
	return arc4random_uniform(n);
}

static void test_mx_order(void)
{
	struct dns_mx mx[5] = {{"c", 20}, {"a1", 10}, {"a2", 10}, {"d", 30}, {"a3", 10}};
	dns_mx_order(mx, 5, rnd_zero);
	ok(mx[0].pref == 10 && mx[1].pref == 10 && mx[2].pref == 10 && mx[3].pref == 20 &&
		   mx[4].pref == 30,
	   "MX sorted by preference");
	ok(strcmp(mx[3].host, "c") == 0 && strcmp(mx[4].host, "d") == 0,
	   "unique preferences keep their host");
	int seen[3] = {0, 0, 0};
	bool sorted = true;
	for (int i = 0; i < 300; i++) {
		struct dns_mx m[5] = {{"c", 20}, {"a1", 10}, {"a2", 10}, {"d", 30}, {"a3", 10}};
		dns_mx_order(m, 5, rnd_real);
		seen[m[0].host[1] - '1']++;
		for (int k = 1; k < 5; k++)
			sorted &= m[k - 1].pref <= m[k].pref;
	}
	ok(sorted, "always sorted when shuffled");
	ok(seen[0] > 30 && seen[1] > 30 && seen[2] > 30,
	   "equal preferences shuffled: each first %d/%d/%d times of 300", seen[0], seen[1],
	   seen[2]);
	struct dns_mx one = {"only", 5};
	dns_mx_order(&one, 1, rnd_real);
	ok(strcmp(one.host, "only") == 0, "one MX: unchanged");
}

/* A DNS message: header, question "a.test" type qtype, then records. */
struct pkt {
	unsigned char b[4096];
	size_t n;
};

static void put16(struct pkt *p, unsigned v)
{
	p->b[p->n++] = (unsigned char)(v >> 8);
	p->b[p->n++] = (unsigned char)v;
}

static void put32(struct pkt *p, uint32_t v)
{
	put16(p, v >> 16);
	put16(p, v & 0xffff);
}

static void pkt_start(struct pkt *p, unsigned rcode, unsigned an, unsigned ns)
{
	p->n = 0;
	put16(p, 0x1234);
	put16(p, 0x8180 | rcode);
	put16(p, 1);
	put16(p, an);
	put16(p, ns);
	put16(p, 0);
	static const unsigned char q[] = {1, 'a', 4, 't', 'e', 's', 't', 0};
	memcpy(p->b + p->n, q, sizeof(q));
	p->n += sizeof(q);
	put16(p, ns_t_mx);
	put16(p, ns_c_in);
}

/* An MX record for the question's name (a compression pointer to it). */
static void pkt_mx(struct pkt *p, uint32_t ttl)
{
	put16(p, 0xc00c);
	put16(p, ns_t_mx);
	put16(p, ns_c_in);
	put32(p, ttl);
	put16(p, 4);
	put16(p, 10);
	put16(p, 0xc00c);
}

static void pkt_soa(struct pkt *p, uint32_t ttl, uint32_t minimum)
{
	put16(p, 0xc00c);
	put16(p, ns_t_soa);
	put16(p, ns_c_in);
	put32(p, ttl);
	put16(p, 2 + 2 + 20);
	put16(p, 0xc00c); /* mname */
	put16(p, 0xc00c); /* rname */
	put32(p, 1);
	put32(p, 2);
	put32(p, 3);
	put32(p, 4);
	put32(p, minimum);
}

static void test_ttl(void)
{
	struct pkt p;
	pkt_start(&p, 0, 2, 0);
	pkt_mx(&p, 300);
	pkt_mx(&p, 120);
	is_int(dns_answer_ttl(p.b, p.n, DNS_OK), 120, "positive: the lowest TTL of the answers");
	is_int(dns_answer_ttl(p.b, p.n - 1, DNS_OK), 0, "truncated: 0 (not cached)");
	struct dns_mx mx[4];
	bool null_mx;
	size_t bad;
	int got = dns_mx_parse(p.b, p.n, mx, 4, &null_mx, &bad);
	ok(got == 2 && strcmp(mx[0].host, "a.test") == 0 && mx[0].pref == 10 && !null_mx,
	   "dns_mx_parse: two hosts");
	is_int(dns_mx_parse(p.b, p.n, mx, 1, &null_mx, &bad), 1, "...at most max of them");
	is_int(dns_mx_parse(p.b, p.n - 3, mx, 4, &null_mx, &bad), -1, "...truncated: -1");
	pkt_start(&p, 0, 1, 0);
	put16(&p, 0xc00c);
	put16(&p, ns_t_mx);
	put16(&p, ns_c_in);
	put32(&p, 60);
	put16(&p, 3);
	put16(&p, 0);
	p.b[p.n++] = 0;
	got = dns_mx_parse(p.b, p.n, mx, 4, &null_mx, &bad);
	ok(got == 0 && null_mx, "dns_mx_parse: null MX (RFC 7505)");
	pkt_start(&p, 0, 1, 0);
	put16(&p, 0xc00c);
	put16(&p, ns_t_mx);
	put16(&p, ns_c_in);
	put32(&p, 60);
	put16(&p, 2 + 6);
	put16(&p, 5);
	static const unsigned char evil[] = {4, 'a', '\r', '\n', 'b', 0};
	memcpy(p.b + p.n, evil, sizeof(evil));
	p.n += sizeof(evil);
	got = dns_mx_parse(p.b, p.n, mx, 4, &null_mx, &bad);
	ok(got == 0 && bad == 1, "dns_mx_parse: a host name with CR LF is dropped");
	pkt_start(&p, 0, 1, 0);
	pkt_mx(&p, 999999);
	is_int(dns_answer_ttl(p.b, p.n, DNS_OK), DNS_TTL_MAX, "capped at DNS_TTL_MAX");
	pkt_start(&p, 0, 1, 0);
	pkt_mx(&p, 0x80000001u);
	is_int(dns_answer_ttl(p.b, p.n, DNS_OK), 0, "a TTL with the top bit set counts as 0");
	pkt_start(&p, 3, 0, 1);
	pkt_soa(&p, 3600, 60);
	is_int(dns_answer_ttl(p.b, p.n, DNS_NXDOMAIN), 60, "NXDOMAIN: SOA MINIMUM (RFC 2308)");
	pkt_start(&p, 0, 0, 1);
	pkt_soa(&p, 30, 600);
	is_int(dns_answer_ttl(p.b, p.n, DNS_NODATA), 30, "NODATA: the SOA's own TTL when lower");
	pkt_start(&p, 3, 0, 1);
	pkt_soa(&p, 86400, 86400);
	is_int(dns_answer_ttl(p.b, p.n, DNS_NXDOMAIN), DNS_NEGATIVE_TTL_MAX,
	       "negative answers capped at DNS_NEGATIVE_TTL_MAX");
	pkt_start(&p, 3, 0, 0);
	is_int(dns_answer_ttl(p.b, p.n, DNS_NXDOMAIN), 0, "negative without SOA: not cached");
	/* a name that points at itself */
	pkt_start(&p, 0, 1, 0);
	put16(&p, 0xc000 | (unsigned)p.n);
	is_int(dns_answer_ttl(p.b, p.n, DNS_OK), 0, "a compression loop: 0");
	is_int(dns_answer_ttl(p.b, 5, DNS_OK), 0, "shorter than a header: 0");
	is_int(dns_answer_ttl(p.b, p.n, DNS_TEMPFAIL), 0, "TEMPFAIL: never cached");
}

/* An answer whose only record is a CNAME (the name is an alias of a name
 * without MX): no MX record, so the domain's address is used (RFC 5321
 * §5.1), not a temporary failure. A long MX list: the best preferences are
 * kept wherever they are in the answer. */
static void test_mx_parse_edges(void)
{
	struct pkt p;
	struct dns_mx mx[DNS_MX_SCAN_MAX];
	bool null_mx;
	size_t bad;
	pkt_start(&p, 0, 1, 0);
	put16(&p, 0xc00c);
	put16(&p, ns_t_cname);
	put16(&p, ns_c_in);
	put32(&p, 60);
	put16(&p, 4);
	static const unsigned char b[] = {1, 'b', 0xc0, 14}; /* b.test */
	memcpy(p.b + p.n, b, sizeof(b));
	p.n += sizeof(b);
	int got = dns_mx_parse(p.b, p.n, mx, 4, &null_mx, &bad);
	ok(got == 0 && !null_mx && bad == 0, "dns_mx_parse: a CNAME and no MX: no MX (got %d)",
	   got);

	pkt_start(&p, 0, 100, 0);
	for (unsigned i = 0; i < 100; i++) {
		put16(&p, 0xc00c);
		put16(&p, ns_t_mx);
		put16(&p, ns_c_in);
		put32(&p, 60);
		put16(&p, 2 + 6);
		put16(&p, 100 - i); /* the best last */
		unsigned char h[] = {
			3,    'h', (unsigned char)('0' + i / 10), (unsigned char)('0' + i % 10),
			0xc0, 14};
		memcpy(p.b + p.n, h, sizeof(h));
		p.n += sizeof(h);
	}
	got = dns_mx_parse(p.b, p.n, mx, 10, &null_mx, &bad);
	unsigned best = 1000;
	for (int i = 0; i < got; i++)
		best = mx[i].pref < best ? mx[i].pref : best;
	ok(got == 10 && best == 1, "100 MX records: the 10 best kept (best preference %u)", best);
	unsigned worst = 0;
	for (int i = 0; i < got; i++)
		worst = mx[i].pref > worst ? mx[i].pref : worst;
	is_int(worst, 10, "...and only those");
}

static void test_cache(void)
{
	struct dns_cache *c = dns_cache_new(3);
	const unsigned char ans[] = "answer";
	enum dns_status st;
	const unsigned char *a;
	size_t n;
	dns_cache_put(c, "Example.TEST", ns_t_mx, DNS_OK, ans, sizeof(ans), 60, 1000);
	ok(dns_cache_get(c, "example.test", ns_t_mx, 1000 + 59999, &st, &a, &n) && st == DNS_OK &&
		   n == sizeof(ans) && memcmp(a, ans, n) == 0,
	   "hit before the TTL ends (name without case)");
	ok(!dns_cache_get(c, "example.test", ns_t_a, 2000, &st, &a, &n), "another type: miss");
	ok(!dns_cache_get(c, "example.test", ns_t_mx, 61000, &st, &a, &n),
	   "miss once the TTL has passed (fake clock)");
	dns_cache_put(c, "tmp.test", ns_t_mx, DNS_TEMPFAIL, ans, sizeof(ans), 60, 1000);
	ok(!dns_cache_get(c, "tmp.test", ns_t_mx, 1000, &st, &a, &n), "TEMPFAIL is not stored");
	dns_cache_put(c, "zero.test", ns_t_mx, DNS_OK, ans, sizeof(ans), 0, 1000);
	ok(!dns_cache_get(c, "zero.test", ns_t_mx, 1000, &st, &a, &n), "TTL 0 is not stored");
	dns_cache_put(c, "nx.test", ns_t_mx, DNS_NXDOMAIN, ans, sizeof(ans), 30, 1000);
	ok(dns_cache_get(c, "nx.test", ns_t_mx, 30999, &st, &a, &n) && st == DNS_NXDOMAIN,
	   "a negative answer is kept for its TTL");
	dns_cache_put(c, "b.test", ns_t_mx, DNS_OK, ans, sizeof(ans), 100, 1000);
	dns_cache_put(c, "c.test", ns_t_mx, DNS_OK, ans, sizeof(ans), 200, 1000);
	dns_cache_put(c, "d.test", ns_t_mx, DNS_OK, ans, sizeof(ans), 300, 1000);
	is_int((long long)dns_cache_count(c), 3, "bounded: 3 entries");
	ok(!dns_cache_get(c, "nx.test", ns_t_mx, 1000, &st, &a, &n) &&
		   dns_cache_get(c, "d.test", ns_t_mx, 1000, &st, &a, &n),
	   "the entry expiring first made room");
	unsigned char big[DNS_CACHE_ANSWER_MAX + 1] = {0};
	dns_cache_put(c, "big.test", ns_t_mx, DNS_OK, big, sizeof(big), 60, 1000);
	ok(!dns_cache_get(c, "big.test", ns_t_mx, 1000, &st, &a, &n),
	   "an oversized answer is not kept");
	dns_cache_free(&c);
	ok(c == NULL, "freed");
	struct dns_cache *none = dns_cache_new(0);
	dns_cache_put(none, "a.test", ns_t_mx, DNS_OK, ans, sizeof(ans), 60, 0);
	ok(!dns_cache_get(none, "a.test", ns_t_mx, 0, &st, &a, &n), "dns_cache_size 0: no caching");
	dns_cache_free(&none);
}

static void test_names(void)
{
	ok(dns_name_valid("mx1.example.com"), "a host name");
	ok(dns_name_valid("example.com."), "a trailing dot");
	ok(!dns_name_valid(""), "empty");
	ok(!dns_name_valid("a..b"), "an empty label");
	ok(!dns_name_valid(".a"), "a leading dot");
	ok(!dns_name_valid("a b.test"), "a space");
	ok(!dns_name_valid("a\r\n.test"), "CR LF");
	char l64[80];
	memset(l64, 'a', 64);
	strcpy(l64 + 64, ".test");
	ok(!dns_name_valid(l64), "a 64-octet label");
	char long_name[300];
	for (int i = 0; i < 127; i++)
		memcpy(long_name + 2 * i, "a.", 2);
	strcpy(long_name + 254, "a");
	ok(!dns_name_valid(long_name), "more than 253 octets");
}

static void test_servers(void)
{
	char csv[256], err[200];
	ok(dns_servers_parse("127.0.0.1:5353 [::1] 192.0.2.1", csv, sizeof(csv), err,
			     sizeof(err)) &&
		   strcmp(csv, "127.0.0.1:5353,[::1]:53,192.0.2.1:53") == 0,
	   "dns_servers: %s", csv);
	ok(!dns_servers_parse("ns.example.com", csv, sizeof(csv), err, sizeof(err)) &&
		   strstr(err, "not an IP address") != NULL,
	   "a name is refused: %s", err);
	ok(!dns_servers_parse("::1", csv, sizeof(csv), err, sizeof(err)),
	   "IPv6 without brackets refused");
	ok(!dns_servers_parse("127.0.0.1:0", csv, sizeof(csv), err, sizeof(err)), "port 0 refused");
	ok(!dns_servers_parse("127.0.0.1:65536", csv, sizeof(csv), err, sizeof(err)),
	   "port 65536 refused");
	ok(!dns_servers_parse("  ", csv, sizeof(csv), err, sizeof(err)), "empty refused");
	ok(!dns_servers_parse("1.1.1.1 1.1.1.2 1.1.1.3 1.1.1.4 1.1.1.5 1.1.1.6 1.1.1.7 1.1.1.8 "
			      "1.1.1.9",
			      csv, sizeof(csv), err, sizeof(err)),
	   "more than 8 servers refused");
}

/* Which destinations config_relay_parse marks for an MX lookup. */
static void test_relay_dest(void)
{
	static const struct {
		const char *text;
		bool mx;
		unsigned port;
	} cases[] = {
		{"example.com", true, 25},
		{"example.com:587", true, 587},
		{"smtp:example.com:submission", true, 587},
		{"smtps:example.com", true, 25},
		{"[example.com]", false, 25},
		{"[example.com]:587", false, 587},
		{"192.0.2.1:25", false, 25},
		{"lmtp:host.example:24", false, 24},
		{"lmtp:unix:/run/lmtp", false, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct relay_dest *d = NULL;
		size_t n = 0;
		char err[200] = "";
		bool parsed = config_relay_parse(cases[i].text, &d, &n, err, sizeof(err));
		ok(parsed && n == 1 && d[0].mx == cases[i].mx && d[0].port == cases[i].port,
		   "%s: %s, port %u %s", cases[i].text, cases[i].mx ? "MX lookup" : "as written",
		   cases[i].port, err);
		if (parsed)
			config_relay_free(d, n);
	}
}

static int ncalls[4];
static enum dns_status last[4];

static void count_cb(void *ctx, const struct dns_result *r)
{
	int i = (int)(intptr_t)ctx;
	ncalls[i]++;
	last[i] = r->status;
}

static void test_resolver(void)
{
	uv_loop_init(loop);
	uv_timer_init(loop, &guard);
	/* a server that never answers */
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
	bind(fd, (struct sockaddr *)&sin, sizeof(sin));
	socklen_t sl = sizeof(sin);
	getsockname(fd, (struct sockaddr *)&sin, &sl);
	char servers[64];
	snprintf(servers, sizeof(servers), "127.0.0.1:%u", ntohs(sin.sin_port));
	struct config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.dns_servers = servers;
	cfg.dns_timeout_ms = 200;
	cfg.dns_tries = 1;
	cfg.dns_cache_size = 10;

	struct dns *d = dns_new(loop);
	struct dns_req *bad = dns_resolve_mx(d, &cfg, "bad name..test", count_cb, (void *)0);
	ok(bad != NULL && ncalls[0] == 0, "an invalid name: not answered inside the call");
	SETTLE(20);
	is_int(ncalls[0], 1, "...but on the next turn, once");
	ok(last[0] == DNS_NXDOMAIN, "...as not found");

	struct dns_req *gone = dns_resolve_mx(d, &cfg, "example.test", count_cb, (void *)1);
	dns_cancel(&gone);
	ok(gone == NULL, "dns_cancel clears the pointer");
	struct dns_req *t = dns_domain_check(d, &cfg, "example.test", count_cb, (void *)2);
	(void)t;
	WAIT(ncalls[2] > 0, 3000);
	is_int(ncalls[2], 1, "a server that never answers: answered once after dns_timeout");
	ok(last[2] == DNS_TEMPFAIL, "...as TEMPFAIL");
	struct dns_req *out = dns_resolve_mx(d, &cfg, "other.test", count_cb, (void *)3);
	(void)out;
	SETTLE(50);
	is_int(ncalls[3], 0, "a query out");
	dns_free(&d);
	is_int(ncalls[3], 1, "dns_free answers it, once");
	ok(last[3] == DNS_TEMPFAIL, "...as TEMPFAIL");
	SETTLE(300);
	is_int(ncalls[1], 0, "a cancelled request is never answered");
	is_int(ncalls[3], 1, "nothing more after dns_free");
	close(fd);
	uv_close((uv_handle_t *)&guard, NULL);
	uv_run(loop, UV_RUN_DEFAULT);
	ok(uv_loop_close(loop) == 0, "every handle closed");
}

/* A server on the test's loop that answers every query NXDOMAIN at once. */
static void nx_server_cb(uv_poll_t *h, int status, int events)
{
	(void)status;
	(void)events;
	int fd = (int)(intptr_t)h->data;
	unsigned char q[512];
	struct sockaddr_storage peer;
	socklen_t pl = sizeof(peer);
	ssize_t n = recvfrom(fd, q, sizeof(q), 0, (struct sockaddr *)&peer, &pl);
	if (n < 12)
		return;
	q[2] = (unsigned char)(0x80 | (q[2] & 0x01)); /* QR, RD as asked */
	q[3] = 0x80 | 3;                              /* RA, NXDOMAIN */
	memset(q + 6, 0, 6);
	sendto(fd, q, (size_t)n, 0, (struct sockaddr *)&peer, pl);
}

static struct dns *chain_d;
static struct config *chain_cfg;
static struct dns_req *chain_req;

/* Starts a request with other settings from inside an answer's callback,
 * that is from inside c-ares's processing of that answer. */
static void chain_cb(void *ctx, const struct dns_result *r)
{
	count_cb(ctx, r);
	chain_req = dns_domain_check(chain_d, chain_cfg, "two.test", count_cb, (void *)1);
}

/* A reload's other dns_servers/dns_timeout must not replace the channel
 * while c-ares is inside it (it goes on using the channel after a callback
 * returns): the new request is answered, and nothing is used after free
 * (the sanitizer build). */
static void test_resolver_reload_in_cb(void)
{
	memset(ncalls, 0, sizeof(ncalls));
	uv_loop_init(loop);
	uv_timer_init(loop, &guard);
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
	bind(fd, (struct sockaddr *)&sin, sizeof(sin));
	socklen_t sl = sizeof(sin);
	getsockname(fd, (struct sockaddr *)&sin, &sl);
	uv_poll_t srv;
	uv_poll_init_socket(loop, &srv, fd);
	srv.data = (void *)(intptr_t)fd;
	uv_poll_start(&srv, UV_READABLE, nx_server_cb);
	char servers[64];
	snprintf(servers, sizeof(servers), "127.0.0.1:%u", ntohs(sin.sin_port));
	struct config a, b;
	memset(&a, 0, sizeof(a));
	a.dns_servers = servers;
	a.dns_timeout_ms = 1000;
	a.dns_tries = 1;
	a.dns_cache_size = 10;
	b = a;
	b.dns_timeout_ms = 1500; /* the reloaded snapshot */
	chain_d = dns_new(loop);
	chain_cfg = &b;
	struct dns_req *first = dns_domain_check(chain_d, &a, "one.test", chain_cb, (void *)0);
	(void)first;
	WAIT(ncalls[1] > 0, 3000);
	is_int(ncalls[0], 1, "the first request answered once");
	ok(last[0] == DNS_NXDOMAIN, "...NXDOMAIN");
	is_int(ncalls[1], 1, "a request with other settings made inside its callback: answered");
	ok(last[1] == DNS_NXDOMAIN, "...by the server (NXDOMAIN), not as a failure");
	struct dns_req *later = dns_domain_check(chain_d, &b, "three.test", count_cb, (void *)2);
	(void)later;
	WAIT(ncalls[2] > 0, 3000);
	ok(ncalls[2] == 1 && last[2] == DNS_NXDOMAIN, "the next request, outside any callback: "
						      "answered");
	dns_free(&chain_d);
	uv_close((uv_handle_t *)&srv, NULL);
	uv_close((uv_handle_t *)&guard, NULL);
	uv_run(loop, UV_RUN_DEFAULT);
	close(fd);
	ok(uv_loop_close(loop) == 0, "every handle closed");
}

int main(void)
{
	test_mx_order();
	test_ttl();
	test_mx_parse_edges();
	test_cache();
	test_names();
	test_servers();
	test_relay_dest();
	test_resolver();
	test_resolver_reload_in_cb();
	return done_testing();
}
