/* Unit tests for net/addrcount: exact per-address accounting (docs/design.md
 * invariant 12: no bucket an attacker can aim at another address).
 *  - SipHash-2-4 against the published test vectors (key 00..0f, message
 *    00..len-1; the paper's appendix A example for 15 bytes);
 *  - keys: IPv4, IPv4-mapped IPv6 as IPv4, IPv6 grouped by the configured
 *    prefix (/64 by default), on and off byte boundaries;
 *  - connections and AUTH failures of one address never touch another, over
 *    many thousands of addresses;
 *  - an AUTH attempt counts while pending; OK and backend trouble refund it;
 *    the block ends after its time, the window after its length;
 *  - a full table gives up unblocked idle entries first, blocks last, live
 *    entries never, and refuses a new address when everything is live;
 *  - four threads hammering the same and different addresses leave every
 *    count at zero. */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/addrcount.h"
#include "tap.h"

static struct sockaddr_storage sa_of(const char *ip)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	if (strchr(ip, ':') != NULL) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		inet_pton(AF_INET6, ip, &s6->sin6_addr);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		inet_pton(AF_INET, ip, &s4->sin_addr);
	}
	return ss;
}

static struct addrcount_key key_of(const char *ip, unsigned prefix)
{
	struct sockaddr_storage ss = sa_of(ip);
	struct addrcount_key k;
	addrcount_key((struct sockaddr *)&ss, prefix, &k);
	return k;
}

static bool same(const char *a, const char *b, unsigned prefix)
{
	struct addrcount_key ka = key_of(a, prefix), kb = key_of(b, prefix);
	return memcmp(&ka, &kb, sizeof(ka)) == 0;
}

static struct addrcount_key key_n(unsigned n)
{
	char ip[32];
	snprintf(ip, sizeof(ip), "127.%u.%u.%u", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
	return key_of(ip, 64);
}

static void test_siphash(void)
{
	uint8_t msg[64];
	for (unsigned i = 0; i < sizeof(msg); i++)
		msg[i] = (uint8_t)i;
	uint64_t k0 = 0x0706050403020100ULL, k1 = 0x0f0e0d0c0b0a0908ULL;
	ok(addrcount_siphash(k0, k1, msg, 0) == 0x726fdb47dd0e0e31ULL, "SipHash-2-4: empty message");
	ok(addrcount_siphash(k0, k1, msg, 1) == 0x74f839c593dc67fdULL, "SipHash-2-4: 1 byte");
	ok(addrcount_siphash(k0, k1, msg, 15) == 0xa129ca6149be45e5ULL,
	   "SipHash-2-4: 15 bytes (the paper's example)");
	ok(addrcount_siphash(k0, k1, msg, 17) != addrcount_siphash(k0 + 1, k1, msg, 17),
	   "a different key gives a different hash");
}

static void test_keys(void)
{
	ok(!same("127.0.0.1", "127.0.0.2", 64), "IPv4: each address on its own");
	ok(same("::ffff:192.0.2.7", "192.0.2.7", 64), "IPv4-mapped IPv6 counts as the IPv4 address");
	ok(same("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:fffe", 64),
	   "IPv6 /64: two hosts in one /64 share one count");
	ok(!same("2001:db8:1:2::1", "2001:db8:1:3::1", 64), "IPv6 /64: the next /64 is another");
	ok(same("2001:db8:1:2::1", "2001:db8:1:3::1", 48), "ipv6_client_prefix = 48 groups them");
	ok(!same("2001:db8:1:2::1", "2001:db8:1:2::2", 128), "ipv6_client_prefix = 128: per address");
	ok(same("2001:db8:1:20::1", "2001:db8:1:2f::1", 60) &&
		   !same("2001:db8:1:20::1", "2001:db8:1:30::1", 60),
	   "a prefix off a byte boundary (/60) masks the right bits");
	ok(!same("::7f00:1", "127.0.0.1", 64), "an IPv6 address never equals an IPv4 one");
}

static const struct addrcount_auth_limits LIM = {.limit = 3, .window_ms = 10000, .block_ms = 5000};

static void test_connections(void)
{
	struct addrcount *ac = addrcount_new(100000);
	struct addrcount_key a = key_n(1);
	unsigned got = 0;
	for (int i = 0; i < 10; i++)
		got += addrcount_conn_acquire(ac, &a, 5, 0);
	is_int(got, 5, "one address: 5 connections of 10 under a limit of 5");
	bool all = true;
	for (unsigned n = 2; n < 50000; n++) {
		struct addrcount_key k = key_n(n);
		all &= addrcount_conn_acquire(ac, &k, 1, 0);
	}
	ok(all, "49998 other addresses each get their first connection while 127.0.0.1 is full");
	is_int((long long)addrcount_size(ac), 49999, "one entry per address");
	for (unsigned n = 2; n < 50000; n++) {
		struct addrcount_key k = key_n(n);
		addrcount_conn_release(ac, &k, 0);
	}
	struct addrcount_info info;
	ok(addrcount_peek(ac, &a, 0, &info) && info.conns == 5,
	   "their coming and going left 127.0.0.1's count at exactly 5");
	for (int i = 0; i < 5; i++)
		addrcount_conn_release(ac, &a, 0);
	is_int((long long)addrcount_size(ac), 0, "all released: the table is empty again");
	addrcount_conn_release(ac, &a, 0);
	ok(!addrcount_peek(ac, &a, 0, &info), "a release too many does not make an entry");
	addrcount_free(&ac);
}

static void test_auth(void)
{
	struct addrcount *ac = addrcount_new(100000);
	struct addrcount_key a = key_n(1), b = key_n(2);
	struct addrcount_info info;
	uint64_t t = 1000;

	ok(addrcount_auth_begin(ac, &a, &LIM, t) && addrcount_auth_begin(ac, &a, &LIM, t) &&
		   addrcount_auth_begin(ac, &a, &LIM, t),
	   "three attempts in flight (limit 3)");
	ok(!addrcount_auth_begin(ac, &a, &LIM, t),
	   "a fourth is refused while three are unanswered: attempts count when sent");
	ok(addrcount_auth_begin(ac, &b, &LIM, t), "another address is not affected");
	addrcount_auth_end(ac, &b, &LIM, false, t);
	addrcount_auth_end(ac, &a, &LIM, false, t);
	ok(addrcount_peek(ac, &a, t, &info) && info.pending == 2 && info.failures == 0,
	   "an OK refunds its attempt");
	ok(addrcount_auth_begin(ac, &a, &LIM, t), "so one more may go");
	addrcount_auth_end(ac, &a, &LIM, true, t);
	addrcount_auth_end(ac, &a, &LIM, true, t);
	ok(addrcount_peek(ac, &a, t, &info) && info.pending == 1 && info.failures == 2 && !info.blocked,
	   "two failures, one pending: not blocked yet");
	ok(!addrcount_auth_begin(ac, &a, &LIM, t), "but failures + pending = limit: refused");
	addrcount_auth_end(ac, &a, &LIM, true, t);
	ok(addrcount_peek(ac, &a, t, &info) && info.blocked, "the third failure blocks the address");
	ok(!addrcount_auth_begin(ac, &a, &LIM, t + 4999), "still blocked just before block_ms");
	ok(addrcount_auth_begin(ac, &b, &LIM, t + 10), "the blocked address's neighbour gets in");
	addrcount_auth_end(ac, &b, &LIM, false, t + 10);
	ok(addrcount_auth_begin(ac, &a, &LIM, t + 5000), "the block ends after block_ms");
	addrcount_auth_end(ac, &a, &LIM, true, t + 5000);
	ok(addrcount_auth_begin(ac, &a, &LIM, t + 16000), "failures expire with their window");
	ok(addrcount_peek(ac, &a, t + 16000, &info) && info.failures == 0 && info.pending == 1,
	   "(the old failure is gone)");
	addrcount_auth_end(ac, &a, &LIM, false, t + 16000);
	is_int((long long)addrcount_size(ac), 0, "nothing to remember: no entries left");

	/* Failures from thousands of addresses never block another one. */
	bool none = true;
	for (unsigned n = 10; n < 20000; n++) {
		struct addrcount_key k = key_n(n);
		for (int i = 0; i < 3; i++) {
			addrcount_auth_begin(ac, &k, &LIM, t);
			addrcount_auth_end(ac, &k, &LIM, true, t);
		}
	}
	for (unsigned n = 10; n < 20000; n++) {
		struct addrcount_key k = key_n(n);
		none &= addrcount_peek(ac, &k, t, &info) && info.blocked;
	}
	ok(none, "19990 addresses, each blocked by its own three failures");
	ok(!addrcount_peek(ac, &a, t, &info) && addrcount_auth_begin(ac, &a, &LIM, t),
	   "127.0.0.1 has no entry and gets in");
	addrcount_auth_end(ac, &a, &LIM, false, t);
	struct addrcount_auth_limits off = {0};
	ok(addrcount_auth_begin(ac, &a, &off, t), "limit 0: no budget");
	addrcount_free(&ac);
}

static void block(struct addrcount *ac, const struct addrcount_key *k, uint64_t t)
{
	for (int i = 0; i < 3; i++) {
		addrcount_auth_begin(ac, k, &LIM, t);
		addrcount_auth_end(ac, k, &LIM, true, t);
	}
}

static void test_capacity(void)
{
	struct addrcount *ac = addrcount_new(8);
	struct addrcount_info info;
	uint64_t t = 1000;
	/* 4 blocked, then 2 with a partial failure count, then 2 live. */
	for (unsigned n = 1; n <= 4; n++) {
		struct addrcount_key k = key_n(n);
		block(ac, &k, t + n);
	}
	for (unsigned n = 5; n <= 6; n++) {
		struct addrcount_key k = key_n(n);
		addrcount_auth_begin(ac, &k, &LIM, t + n);
		addrcount_auth_end(ac, &k, &LIM, true, t + n);
	}
	for (unsigned n = 7; n <= 8; n++) {
		struct addrcount_key k = key_n(n);
		addrcount_conn_acquire(ac, &k, 10, t + n);
	}
	is_int((long long)addrcount_size(ac), 8, "the table is full");
	struct addrcount_key k9 = key_n(9), k10 = key_n(10), k11 = key_n(11);
	ok(addrcount_conn_acquire(ac, &k9, 10, t + 20), "a new address gets an entry");
	struct addrcount_key k5 = key_n(5), k1 = key_n(1);
	ok(!addrcount_peek(ac, &k5, t + 20, &info), "... in place of an unblocked idle one");
	bool blocks = true;
	for (unsigned n = 1; n <= 4; n++) {
		struct addrcount_key k = key_n(n);
		blocks &= addrcount_peek(ac, &k, t + 20, &info) && info.blocked;
	}
	ok(blocks, "the blocks are all kept");
	ok(addrcount_conn_acquire(ac, &k10, 10, t + 21), "another new address");
	ok(addrcount_conn_acquire(ac, &k11, 10, t + 22), "and a third: only blocks are idle now");
	ok(!addrcount_peek(ac, &k1, t + 22, &info), "... which takes the least recently used block");
	bool live = true;
	for (unsigned n = 7; n <= 11; n++) {
		struct addrcount_key k = key_n(n);
		live &= addrcount_peek(ac, &k, t + 22, &info) && info.conns == 1;
	}
	ok(live, "live entries are never given up");
	for (unsigned n = 12; n <= 14; n++) {
		struct addrcount_key k = key_n(n);
		addrcount_conn_acquire(ac, &k, 10, t + 23);
	}
	struct addrcount_key k15 = key_n(15);
	ok(!addrcount_conn_acquire(ac, &k15, 10, t + 24) && !addrcount_auth_begin(ac, &k15, &LIM, t + 24),
	   "every entry live: a new address is refused, not let through uncounted");
	addrcount_free(&ac);
}

struct hammer {
	struct addrcount *ac;
	unsigned seed;
};

static void *hammer_run(void *arg)
{
	struct hammer *h = arg;
	for (unsigned i = 0; i < 200000; i++) {
		struct addrcount_key k = key_n((i * 7919 + h->seed) % 64);
		if (addrcount_conn_acquire(h->ac, &k, 1000000, 0))
			addrcount_conn_release(h->ac, &k, 0);
		if (addrcount_auth_begin(h->ac, &k, &(struct addrcount_auth_limits){1000000, 1000, 1000}, 0))
			addrcount_auth_end(h->ac, &k, &(struct addrcount_auth_limits){1000000, 1000, 1000},
					   false, 0);
	}
	return NULL;
}

static void test_threads(void)
{
	struct addrcount *ac = addrcount_new(1000);
	pthread_t th[4];
	struct hammer h[4];
	for (unsigned i = 0; i < 4; i++) {
		h[i] = (struct hammer){ac, i};
		pthread_create(&th[i], NULL, hammer_run, &h[i]);
	}
	for (unsigned i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	is_int((long long)addrcount_size(ac), 0, "4 threads x 200000 acquire/release: every count back at 0");
	addrcount_free(&ac);
}

int main(void)
{
	test_siphash();
	test_keys();
	test_connections();
	test_auth();
	test_capacity();
	test_threads();
	ok(addrcount_global() == addrcount_global(), "one process-wide table");
	return done_testing();
}
