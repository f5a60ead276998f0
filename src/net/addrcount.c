/* net/addrcount: exact per-client-address accounting (see addrcount.h).
 *
 * Entries live in chained hash buckets. An entry with a live use (open
 * connections, AUTH attempts in flight) is never dropped. An entry with
 * nothing to remember (no use, no failure in a running window, no block) is
 * freed at once. The rest — idle addresses that carry failures or a block —
 * sit on a list in order of last use, oldest first; that list is what the
 * table gives up when it is full:
 *
 *  - first an expired entry or one that is not blocked, searched among the
 *    oldest ADDRCOUNT_EVICT_SCAN (losing a partial failure count costs the
 *    defender at most auth_ip_failure_limit - 1 guesses for that address);
 *  - only when those are all blocked, the least recently used block.
 *
 * So for an attacker to push its own block out, it has to fill the whole
 * table with entries that are live or blocked themselves: `capacity`
 * addresses that each spent a failure budget (or held connections, which
 * max_connections bounds). Touching a blocked address (it tries again)
 * refreshes its place, so an active attacker's block is the last to go.
 * When every entry is live, a new address is refused rather than let
 * through uncounted. */
#include "config.h"
#include "net/addrcount.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "core/buf.h"
#include "core/list.h"
#include "core/log.h"

#define ADDRCOUNT_EVICT_SCAN 64

struct addrcount_entry {
	struct addrcount_entry *hnext;
	struct list_link idle; /* on ac->idle, oldest first; unlinked while live */
	struct addrcount_key key;
	unsigned conns, pending, failures;
	uint64_t window_end; /* failures count until then */
	uint64_t blocked_until;
};

struct addrcount {
	pthread_mutex_t lock;
	uint64_t k0, k1; /* SipHash key */
	size_t nbuckets; /* a power of two */
	struct addrcount_entry **buckets;
	size_t n, capacity;
	struct list_link idle; /* idle entries, oldest first */
};

/* ---- SipHash-2-4 (Aumasson and Bernstein, 2012), 64-bit output ---- */

#define ADDRCOUNT_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static void addrcount_sipround(uint64_t v[4])
{
	v[0] += v[1];
	v[1] = ADDRCOUNT_ROTL(v[1], 13);
	v[1] ^= v[0];
	v[0] = ADDRCOUNT_ROTL(v[0], 32);
	v[2] += v[3];
	v[3] = ADDRCOUNT_ROTL(v[3], 16);
	v[3] ^= v[2];
	v[0] += v[3];
	v[3] = ADDRCOUNT_ROTL(v[3], 21);
	v[3] ^= v[0];
	v[2] += v[1];
	v[1] = ADDRCOUNT_ROTL(v[1], 17);
	v[1] ^= v[2];
	v[2] = ADDRCOUNT_ROTL(v[2], 32);
}

static uint64_t addrcount_le64(const uint8_t *p, size_t n)
{
	uint64_t m = 0;
	for (size_t i = 0; i < n; i++)
		m |= (uint64_t)p[i] << (8 * i);
	return m;
}

uint64_t addrcount_siphash(uint64_t k0, uint64_t k1, const void *data, size_t len)
{
	const uint8_t *p = data;
	uint64_t v[4] = {k0 ^ 0x736f6d6570736575ULL, k1 ^ 0x646f72616e646f6dULL,
			 k0 ^ 0x6c7967656e657261ULL, k1 ^ 0x7465646279746573ULL};
	size_t full = len & ~(size_t)7;
	for (size_t i = 0; i < full; i += 8) {
		uint64_t m = addrcount_le64(p + i, 8);
		v[3] ^= m;
		addrcount_sipround(v);
		addrcount_sipround(v);
		v[0] ^= m;
	}
	uint64_t last = addrcount_le64(p + full, len - full) | ((uint64_t)(len & 0xff) << 56);
	v[3] ^= last;
	addrcount_sipround(v);
	addrcount_sipround(v);
	v[0] ^= last;
	v[2] ^= 0xff;
	for (int i = 0; i < 4; i++)
		addrcount_sipround(v);
	return v[0] ^ v[1] ^ v[2] ^ v[3];
}

/* ---- keys ---- */

void addrcount_key(const struct sockaddr *sa, unsigned ipv6_prefix, struct addrcount_key *key_r)
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	memset(key_r, 0, sizeof(*key_r));
	if (sa->sa_family == AF_INET6) {
		const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
		if (memcmp(a, mapped, sizeof(mapped)) == 0) {
			key_r->b[0] = 4;
			memcpy(key_r->b + 1, a + 12, 4);
			return;
		}
		key_r->b[0] = 6;
		if (ipv6_prefix > 128)
			ipv6_prefix = 128;
		memcpy(key_r->b + 1, a, ipv6_prefix / 8);
		if (ipv6_prefix % 8 != 0)
			key_r->b[1 + ipv6_prefix / 8] =
				(uint8_t)(a[ipv6_prefix / 8] & (0xff00 >> (ipv6_prefix % 8)));
		return;
	}
	key_r->b[0] = 4;
	memcpy(key_r->b + 1, &((const struct sockaddr_in *)sa)->sin_addr, 4);
}

uint64_t addrcount_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- the table ---- */

struct addrcount *addrcount_new(size_t capacity)
{
	struct addrcount *ac = xcalloc(1, sizeof(*ac));
	uint64_t k[2];
	if (getrandom(k, sizeof(k), 0) != (ssize_t)sizeof(k)) {
		/* Never run with a key an attacker could know. */
		log_err("addrcount: getrandom: %s", strerror(errno));
		abort();
	}
	ac->k0 = k[0];
	ac->k1 = k[1];
	explicit_bzero(k, sizeof(k));
	ac->capacity = capacity > 0 ? capacity : 1;
	ac->nbuckets = 64;
	while (ac->nbuckets < ac->capacity / 4 && ac->nbuckets < ((size_t)1 << 20))
		ac->nbuckets *= 2;
	ac->buckets = xcalloc(ac->nbuckets, sizeof(*ac->buckets));
	list_init(&ac->idle);
	pthread_mutex_init(&ac->lock, NULL);
	return ac;
}

void addrcount_free(struct addrcount **acp)
{
	struct addrcount *ac = *acp;
	if (ac == NULL)
		return;
	*acp = NULL;
	for (size_t i = 0; i < ac->nbuckets; i++) {
		for (struct addrcount_entry *e = ac->buckets[i], *next; e != NULL; e = next) {
			next = e->hnext;
			free(e);
		}
	}
	free(ac->buckets);
	pthread_mutex_destroy(&ac->lock);
	free(ac);
}

static struct addrcount *addrcount_the_table;
static pthread_once_t addrcount_once = PTHREAD_ONCE_INIT;

static void addrcount_global_init(void)
{
	addrcount_the_table = addrcount_new(ADDRCOUNT_CAPACITY);
}

struct addrcount *addrcount_global(void)
{
	pthread_once(&addrcount_once, addrcount_global_init);
	return addrcount_the_table;
}

static struct addrcount_entry **addrcount_slot(struct addrcount *ac,
					       const struct addrcount_key *key)
{
	uint64_t h = addrcount_siphash(ac->k0, ac->k1, key->b, sizeof(key->b));
	struct addrcount_entry **p = &ac->buckets[h & (ac->nbuckets - 1)];
	while (*p != NULL && memcmp((*p)->key.b, key->b, sizeof(key->b)) != 0)
		p = &(*p)->hnext;
	return p;
}

static struct addrcount_entry *addrcount_oldest(struct addrcount *ac)
{
	struct list_link *l = list_first(&ac->idle);
	return l != NULL ? list_entry(l, struct addrcount_entry, idle) : NULL;
}

static bool addrcount_blocked(const struct addrcount_entry *e, uint64_t now)
{
	return e->blocked_until > now;
}

/* Nothing worth keeping: no use, no failure in a running window, no block. */
static bool addrcount_empty(const struct addrcount_entry *e, uint64_t now)
{
	return e->conns == 0 && e->pending == 0 && !addrcount_blocked(e, now) &&
	       (e->failures == 0 || now >= e->window_end);
}

static void addrcount_remove(struct addrcount *ac, struct addrcount_entry *e)
{
	struct addrcount_entry **p = addrcount_slot(ac, &e->key);
	*p = e->hnext;
	list_remove(&e->idle);
	free(e);
	ac->n--;
}

/* After every change: free it, park it on the idle list (as the newest), or
 * keep it off the list while it is in use. */
static void addrcount_settle(struct addrcount *ac, struct addrcount_entry *e, uint64_t now)
{
	if (addrcount_empty(e, now)) {
		addrcount_remove(ac, e);
		return;
	}
	list_remove(&e->idle);
	if (e->conns > 0 || e->pending > 0)
		return;
	list_add_tail(&ac->idle, &e->idle);
}

/* Makes room for one entry (see the top of this file). */
static bool addrcount_make_room(struct addrcount *ac, uint64_t now)
{
	/* Expired entries at the old end go anyway, full or not. */
	struct addrcount_entry *e;
	for (int i = 0; i < 2 && (e = addrcount_oldest(ac)) != NULL; i++) {
		if (!addrcount_empty(e, now))
			break;
		addrcount_remove(ac, e);
	}
	if (ac->n < ac->capacity)
		return true;
	struct list_link *l = ac->idle.next;
	for (int i = 0; i < ADDRCOUNT_EVICT_SCAN && l != &ac->idle; i++, l = l->next) {
		e = list_entry(l, struct addrcount_entry, idle);
		if (!addrcount_blocked(e, now)) {
			addrcount_remove(ac, e);
			return true;
		}
	}
	if ((e = addrcount_oldest(ac)) == NULL)
		return false; /* every entry is in use */
	addrcount_remove(ac, e);
	return true;
}

static struct addrcount_entry *addrcount_get(struct addrcount *ac, const struct addrcount_key *key,
					     uint64_t now)
{
	struct addrcount_entry **p = addrcount_slot(ac, key);
	if (*p != NULL)
		return *p;
	if (!addrcount_make_room(ac, now))
		return NULL;
	p = addrcount_slot(ac, key); /* the room made may have been in this chain */
	struct addrcount_entry *e = xcalloc(1, sizeof(*e));
	e->key = *key;
	*p = e;
	ac->n++;
	return e;
}

bool addrcount_conn_acquire(struct addrcount *ac, const struct addrcount_key *key, unsigned limit,
			    uint64_t now)
{
	pthread_mutex_lock(&ac->lock);
	struct addrcount_entry *e = addrcount_get(ac, key, now);
	bool ok = e != NULL && e->conns < limit;
	if (ok)
		e->conns++;
	if (e != NULL)
		addrcount_settle(ac, e, now);
	pthread_mutex_unlock(&ac->lock);
	return ok;
}

void addrcount_conn_release(struct addrcount *ac, const struct addrcount_key *key, uint64_t now)
{
	pthread_mutex_lock(&ac->lock);
	struct addrcount_entry *e = *addrcount_slot(ac, key);
	if (e != NULL && e->conns > 0) {
		e->conns--;
		addrcount_settle(ac, e, now);
	}
	pthread_mutex_unlock(&ac->lock);
}

bool addrcount_auth_begin(struct addrcount *ac, const struct addrcount_key *key,
			  const struct addrcount_auth_limits *lim, uint64_t now)
{
	if (lim->limit == 0)
		return true;
	pthread_mutex_lock(&ac->lock);
	struct addrcount_entry *e = addrcount_get(ac, key, now);
	bool ok = false;
	if (e != NULL) {
		if (e->failures > 0 && now >= e->window_end)
			e->failures = 0;
		ok = !addrcount_blocked(e, now) && e->failures + e->pending < lim->limit;
		if (ok)
			e->pending++;
		addrcount_settle(ac, e, now);
	}
	pthread_mutex_unlock(&ac->lock);
	return ok;
}

void addrcount_auth_end(struct addrcount *ac, const struct addrcount_key *key,
			const struct addrcount_auth_limits *lim, bool failed, uint64_t now)
{
	if (lim->limit == 0)
		return;
	pthread_mutex_lock(&ac->lock);
	struct addrcount_entry *e = *addrcount_slot(ac, key);
	if (e != NULL && e->pending > 0) {
		e->pending--;
		if (failed) {
			if (e->failures == 0 || now >= e->window_end) {
				e->failures = 0;
				e->window_end = now + lim->window_ms;
			}
			if (++e->failures >= lim->limit) {
				e->blocked_until = now + lim->block_ms;
				e->failures = 0;
			}
		}
		addrcount_settle(ac, e, now);
	}
	pthread_mutex_unlock(&ac->lock);
}

bool addrcount_peek(struct addrcount *ac, const struct addrcount_key *key, uint64_t now,
		    struct addrcount_info *r)
{
	pthread_mutex_lock(&ac->lock);
	const struct addrcount_entry *e = *addrcount_slot(ac, key);
	if (e != NULL)
		*r = (struct addrcount_info){
			.conns = e->conns,
			.pending = e->pending,
			.failures = now >= e->window_end ? 0 : e->failures,
			.blocked = addrcount_blocked(e, now),
		};
	pthread_mutex_unlock(&ac->lock);
	return e != NULL;
}

size_t addrcount_size(struct addrcount *ac)
{
	pthread_mutex_lock(&ac->lock);
	size_t n = ac->n;
	pthread_mutex_unlock(&ac->lock);
	return n;
}
