/* policy/limits_store: the memory store (limits_store.h, docs/limits.md).
 *
 * The one table that worker threads share on the path of a message: a
 * login's counters must be one count whichever worker its sessions land on.
 * It is split into shards by key hash, each under its own mutex, held for
 * a few slot updates and never across I/O. */
#include "config.h"
#include "policy/limits_store.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/log.h"

#define LIMITS_SHARDS 64

/* ---- windows ---- */

void limits_win_init(struct limits_win *w, uint64_t period_ms)
{
	memset(w, 0, sizeof(*w));
	if (period_ms == 0)
		period_ms = 1;
	w->slot_ms = (period_ms + LIMITS_WIN_SLOTS - 1) / LIMITS_WIN_SLOTS;
}

static void limits_win_move(struct limits_win *w, uint64_t now_ms)
{
	uint64_t idx = now_ms / w->slot_ms;
	if (idx <= w->head)
		return;
	uint64_t steps = idx - w->head;
	if (steps > LIMITS_WIN_SLOTS + 1)
		steps = LIMITS_WIN_SLOTS + 1;
	for (uint64_t i = 1; i <= steps; i++)
		w->n[(w->head + i) % (LIMITS_WIN_SLOTS + 1)] = 0;
	w->head = idx;
}

uint64_t limits_win_count(struct limits_win *w, uint64_t now_ms)
{
	limits_win_move(w, now_ms);
	uint64_t sum = 0;
	for (size_t i = 0; i <= LIMITS_WIN_SLOTS; i++)
		sum += w->n[i];
	return sum;
}

void limits_win_add(struct limits_win *w, uint64_t now_ms, uint64_t amount)
{
	limits_win_move(w, now_ms);
	uint32_t *slot = &w->n[w->head % (LIMITS_WIN_SLOTS + 1)];
	*slot = amount > UINT32_MAX - *slot ? UINT32_MAX : *slot + (uint32_t)amount;
}

uint64_t limits_win_wait(struct limits_win *w, uint64_t now_ms, uint64_t count, uint64_t amount)
{
	uint64_t used = limits_win_count(w, now_ms);
	if (used + amount <= count)
		return 0;
	if (amount > count)
		return UINT64_MAX;
	uint64_t need = used + amount - count, freed = 0;
	/* Oldest first: slot j stops counting when the head passes j + SLOTS. */
	uint64_t first = w->head >= LIMITS_WIN_SLOTS ? w->head - LIMITS_WIN_SLOTS : 0;
	for (uint64_t j = first; j <= w->head; j++) {
		freed += w->n[j % (LIMITS_WIN_SLOTS + 1)];
		if (freed >= need) {
			uint64_t at = (j + LIMITS_WIN_SLOTS + 1) * w->slot_ms;
			return at > now_ms ? at - now_ms : 1;
		}
	}
	return (w->head + LIMITS_WIN_SLOTS + 1) * w->slot_ms - now_ms;
}

bool limits_win_empty(struct limits_win *w, uint64_t now_ms)
{
	return limits_win_count(w, now_ms) == 0;
}

/* ---- the table ---- */

enum lse_kind { LSE_WIN, LSE_ADDRS, LSE_HOLD, LSE_BLOCK, LSE_KICK };

struct lse_addr {
	char addr[64];
	uint64_t seen_ms;
};

struct lse {
	struct lse *next;
	uint64_t hash;
	enum lse_kind kind;
	uint64_t period_ms;  /* LSE_WIN, LSE_ADDRS: part of the identity */
	uint64_t expires_ms; /* LSE_KICK; LSE_HOLD with an end (0: never) */
	union {
		struct limits_win win;
		struct {
			struct lse_addr a[LIMITS_ADDRS_MAX];
			unsigned n;
		} addrs;
		struct limits_hold hold;
		struct limits_block block;
		uint64_t kicked_ms;
	} u;
	char key[]; /* NUL-terminated */
};

struct lss_shard {
	pthread_mutex_t lock;
	struct lse **buckets;
	size_t nbuckets;
	size_t n;
	uint64_t ops;
};

struct limits_store_mem {
	struct limits_store base;
	struct lss_shard shards[LIMITS_SHARDS];
	size_t max_per_shard;
	atomic_ullong refused_full;
	atomic_bool warned_full;
};

static uint64_t lss_hash(enum lse_kind kind, const char *key, uint64_t period)
{
	uint64_t h = 1469598103934665603ULL ^ (uint64_t)kind;
	for (const unsigned char *p = (const unsigned char *)key; *p; p++)
		h = (h ^ *p) * 1099511628211ULL;
	h ^= period;
	h *= 0x9e3779b97f4a7c15ULL;
	return h ^ (h >> 29);
}

static struct lss_shard *lss_shard(struct limits_store_mem *m, uint64_t h)
{
	return &m->shards[(h >> 58) % LIMITS_SHARDS];
}

/* Whether an entry still matters at now (shard locked). */
static bool lss_alive(struct lse *e, uint64_t now_ms)
{
	switch (e->kind) {
	case LSE_WIN:
		return !limits_win_empty(&e->u.win, now_ms);
	case LSE_ADDRS:
		for (unsigned i = 0; i < e->u.addrs.n; i++)
			if (now_ms - e->u.addrs.a[i].seen_ms < e->period_ms)
				return true;
		return false;
	case LSE_HOLD:
	case LSE_KICK:
		return e->expires_ms == 0 || now_ms < e->expires_ms;
	case LSE_BLOCK:
		return true;
	}
	return true;
}

static void lss_sweep(struct lss_shard *sh, uint64_t now_ms)
{
	for (size_t b = 0; b < sh->nbuckets; b++)
		for (struct lse **pp = &sh->buckets[b]; *pp != NULL;) {
			struct lse *e = *pp;
			if (!lss_alive(e, now_ms)) {
				*pp = e->next;
				free(e);
				sh->n--;
				continue;
			}
			pp = &e->next;
		}
}

static void lss_grow(struct lss_shard *sh)
{
	size_t nb = sh->nbuckets ? sh->nbuckets * 2 : 64;
	struct lse **nbk = xcalloc(nb, sizeof(*nbk));
	for (size_t b = 0; b < sh->nbuckets; b++)
		for (struct lse *e = sh->buckets[b], *next; e != NULL; e = next) {
			next = e->next;
			size_t i = (size_t)(e->hash % nb);
			e->next = nbk[i];
			nbk[i] = e;
		}
	free(sh->buckets);
	sh->buckets = nbk;
	sh->nbuckets = nb;
}

/* Expired entries go before the table grows, and now and then anyway.
 * Called before any lss_find() of the same locked section: it frees. */
static void lss_make_room(struct limits_store_mem *m, struct lss_shard *sh, uint64_t now_ms)
{
	if (sh->n >= m->max_per_shard || (++sh->ops & 4095) == 0)
		lss_sweep(sh, now_ms);
}

/* Finds (or, with create, makes) an entry; shard locked by the caller.
 * NULL: not there, or the store is full. */
static struct lse *lss_find(struct limits_store_mem *m, struct lss_shard *sh, uint64_t h,
			    enum lse_kind kind, const char *key, uint64_t period, bool create,
			    uint64_t now_ms)
{
	if (sh->nbuckets > 0)
		for (struct lse *e = sh->buckets[h % sh->nbuckets]; e != NULL; e = e->next)
			if (e->hash == h && e->kind == kind && e->period_ms == period &&
			    strcmp(e->key, key) == 0)
				return e;
	(void)now_ms;
	if (!create)
		return NULL;
	if (sh->n >= m->max_per_shard) {
		atomic_fetch_add(&m->refused_full, 1);
		if (!atomic_exchange(&m->warned_full, true))
			log_warn("limit_store: memory store full (%zu entries); new counters are "
				 "not kept",
				 m->max_per_shard * LIMITS_SHARDS);
		return NULL;
	}
	if (sh->n >= sh->nbuckets)
		lss_grow(sh);
	size_t klen = strlen(key);
	struct lse *e = xcalloc(1, sizeof(*e) + klen + 1);
	memcpy(e->key, key, klen + 1);
	e->hash = h;
	e->kind = kind;
	e->period_ms = period;
	if (kind == LSE_WIN)
		limits_win_init(&e->u.win, period);
	size_t i = (size_t)(h % sh->nbuckets);
	e->next = sh->buckets[i];
	sh->buckets[i] = e;
	sh->n++;
	return e;
}

static bool lss_remove(struct lss_shard *sh, uint64_t h, enum lse_kind kind, const char *key)
{
	if (sh->nbuckets == 0)
		return false;
	for (struct lse **pp = &sh->buckets[h % sh->nbuckets]; *pp != NULL; pp = &(*pp)->next) {
		struct lse *e = *pp;
		if (e->hash == h && e->kind == kind && strcmp(e->key, key) == 0) {
			*pp = e->next;
			free(e);
			sh->n--;
			return true;
		}
	}
	return false;
}

static bool lss_key_ok(const char *key)
{
	return key != NULL && strlen(key) <= LIMITS_KEY_MAX;
}

/* Locks the shards of asks in index order (no deadlock between takers). */
static void lss_lock_set(struct limits_store_mem *m, const uint64_t *hs, size_t n, bool lock)
{
	bool used[LIMITS_SHARDS] = {false};
	for (size_t i = 0; i < n; i++)
		used[(hs[i] >> 58) % LIMITS_SHARDS] = true;
	for (size_t k = 0; k < LIMITS_SHARDS; k++) {
		size_t i = lock ? k : LIMITS_SHARDS - 1 - k;
		if (!used[i])
			continue;
		if (lock)
			pthread_mutex_lock(&m->shards[i].lock);
		else
			pthread_mutex_unlock(&m->shards[i].lock);
	}
}

/* The start of every one-key operation: the key checked, its shard locked
 * (and, with room, swept if need be). NULL: the key is refused. */
static struct lss_shard *lss_lock_key(struct limits_store *st, enum lse_kind kind, const char *key,
				      uint64_t period, uint64_t now_ms, bool room, uint64_t *h_r)
{
	struct limits_store_mem *m = (struct limits_store_mem *)st;
	if (!lss_key_ok(key))
		return NULL;
	*h_r = lss_hash(kind, key, period);
	struct lss_shard *sh = lss_shard(m, *h_r);
	pthread_mutex_lock(&sh->lock);
	if (room)
		lss_make_room(m, sh, now_ms);
	return sh;
}

#define LSS_ASKS_MAX 16

static bool lss_take(struct limits_store *st, const struct limits_ask *asks, size_t n,
		     uint64_t amount, uint64_t now_ms, size_t *which_r, uint64_t *wait_ms_r)
{
	struct limits_store_mem *m = (struct limits_store_mem *)st;
	uint64_t hs[LSS_ASKS_MAX] = {0};
	struct lse *es[LSS_ASKS_MAX];
	if (n > LSS_ASKS_MAX)
		n = LSS_ASKS_MAX;
	for (size_t i = 0; i < n; i++)
		hs[i] = lss_key_ok(asks[i].key) ? lss_hash(LSE_WIN, asks[i].key, asks[i].period_ms)
						: 0;
	lss_lock_set(m, hs, n, true);
	for (size_t i = 0; i < n; i++)
		lss_make_room(m, lss_shard(m, hs[i]), now_ms);
	bool ok = true;
	for (size_t i = 0; i < n; i++) {
		es[i] = NULL;
		if (!lss_key_ok(asks[i].key))
			continue;
		struct lss_shard *sh = lss_shard(m, hs[i]);
		es[i] = lss_find(m, sh, hs[i], LSE_WIN, asks[i].key, asks[i].period_ms, true,
				 now_ms);
		if (es[i] == NULL)
			continue;
		uint64_t wait = limits_win_wait(&es[i]->u.win, now_ms, asks[i].count, amount);
		if (wait > 0 && ok) {
			ok = false;
			*which_r = i;
			*wait_ms_r = wait;
		}
	}
	if (ok)
		for (size_t i = 0; i < n; i++)
			if (es[i] != NULL)
				limits_win_add(&es[i]->u.win, now_ms, amount);
	lss_lock_set(m, hs, n, false);
	return ok;
}

static uint64_t lss_peek(struct limits_store *st, const char *key, uint64_t period_ms,
			 uint64_t count, uint64_t now_ms, uint64_t *wait_ms_r)
{
	struct limits_store_mem *m = (struct limits_store_mem *)st;
	uint64_t h;
	*wait_ms_r = 0;
	struct lss_shard *sh = lss_lock_key(st, LSE_WIN, key, period_ms, 0, false, &h);
	if (sh == NULL)
		return 0;
	uint64_t used = 0;
	struct lse *e = lss_find(m, sh, h, LSE_WIN, key, period_ms, false, now_ms);
	if (e != NULL) {
		used = limits_win_count(&e->u.win, now_ms);
		*wait_ms_r = limits_win_wait(&e->u.win, now_ms, count, 1);
	}
	pthread_mutex_unlock(&sh->lock);
	return used;
}

static uint64_t lss_add(struct limits_store *st, const char *key, uint64_t period_ms,
			uint64_t amount, uint64_t now_ms)
{
	struct limits_store_mem *m = (struct limits_store_mem *)st;
	uint64_t h;
	struct lss_shard *sh = lss_lock_key(st, LSE_WIN, key, period_ms, now_ms, true, &h);
	if (sh == NULL)
		return 0;
	uint64_t r = 0;
	struct lse *e = lss_find(m, sh, h, LSE_WIN, key, period_ms, amount > 0, now_ms);
	if (e != NULL) {
		if (amount > 0)
			limits_win_add(&e->u.win, now_ms, amount);
		r = limits_win_count(&e->u.win, now_ms);
	}
	pthread_mutex_unlock(&sh->lock);
	return r;
}

static unsigned lss_addr_seen(struct limits_store *st, const char *key, const char *addr,
			      uint64_t period_ms, uint64_t now_ms)
{
	struct limits_store_mem *m = (struct limits_store_mem *)st;
	uint64_t h;
	struct lss_shard *sh = lss_lock_key(st, LSE_ADDRS, key, period_ms, now_ms, true, &h);
	if (sh == NULL)
		return 0;
	unsigned distinct = 0;
	struct lse *e = lss_find(m, sh, h, LSE_ADDRS, key, period_ms, true, now_ms);
	if (e != NULL) {
		/* Drop what aged out, refresh or add addr (the oldest makes room). */
		unsigned k = 0, found = 0;
		for (unsigned i = 0; i < e->u.addrs.n; i++) {
			struct lse_addr *a = &e->u.addrs.a[i];
			if (now_ms - a->seen_ms >= period_ms)
				continue;
			if (strcmp(a->addr, addr) == 0) {
				a->seen_ms = now_ms;
				found = 1;
			}
			e->u.addrs.a[k++] = *a;
		}
		e->u.addrs.n = k;
		if (!found) {
			if (e->u.addrs.n == LIMITS_ADDRS_MAX) {
				unsigned old = 0;
				for (unsigned i = 1; i < e->u.addrs.n; i++)
					if (e->u.addrs.a[i].seen_ms < e->u.addrs.a[old].seen_ms)
						old = i;
				e->u.addrs.a[old] = e->u.addrs.a[--e->u.addrs.n];
			}
			struct lse_addr *a = &e->u.addrs.a[e->u.addrs.n++];
			memset(a, 0, sizeof(*a));
			strncpy(a->addr, addr, sizeof(a->addr) - 1);
			a->seen_ms = now_ms;
		}
		distinct = e->u.addrs.n;
	}
	pthread_mutex_unlock(&sh->lock);
	return distinct;
}

static void lss_bump(struct limits_store *st)
{
	atomic_fetch_add(&st->generation, 1);
}

static bool lss_hold_set(struct limits_store *st, const struct limits_hold *hold, uint64_t now_ms)
{
	struct limits_store_mem *m = (struct limits_store_mem *)st;
	uint64_t h;
	struct lss_shard *sh = lss_lock_key(st, LSE_HOLD, hold->login, 0, now_ms, true, &h);
	if (sh == NULL)
		return false;
	bool set = false;
	struct lse *e = lss_find(m, sh, h, LSE_HOLD, hold->login, 0, false, now_ms);
	if (e != NULL && !lss_alive(e, now_ms)) {
		lss_remove(sh, h, LSE_HOLD, hold->login);
		e = NULL;
	}
	if (e == NULL) {
		e = lss_find(m, sh, h, LSE_HOLD, hold->login, 0, true, now_ms);
		if (e != NULL) {
			e->u.hold = *hold;
			e->u.hold.since_ms = now_ms;
			e->expires_ms =
				hold->until != 0 && hold->until > hold->since
					? now_ms + (uint64_t)(hold->until - hold->since) * 1000
					: 0;
			set = true;
		}
	}
	pthread_mutex_unlock(&sh->lock);
	if (set)
		lss_bump(st);
	return set;
}

static bool lss_hold_get(struct limits_store *st, const char *login, uint64_t now_ms,
			 struct limits_hold *h_r)
{
	struct limits_store_mem *m = (struct limits_store_mem *)st;
	uint64_t h;
	struct lss_shard *sh = lss_lock_key(st, LSE_HOLD, login, 0, 0, false, &h);
	if (sh == NULL)
		return false;
	struct lse *e = lss_find(m, sh, h, LSE_HOLD, login, 0, false, now_ms);
	bool held = e != NULL && lss_alive(e, now_ms);
	if (held && h_r != NULL)
		*h_r = e->u.hold;
	pthread_mutex_unlock(&sh->lock);
	return held;
}

static bool lss_clear(struct limits_store *st, enum lse_kind kind, const char *key)
{
	uint64_t h;
	struct lss_shard *sh = lss_lock_key(st, kind, key, 0, 0, false, &h);
	if (sh == NULL)
		return false;
	bool r = lss_remove(sh, h, kind, key);
	pthread_mutex_unlock(&sh->lock);
	if (r)
		lss_bump(st);
	return r;
}

static bool lss_hold_clear(struct limits_store *st, const char *login)
{
	return lss_clear(st, LSE_HOLD, login);
}

/* Copies out entries of one kind shard by shard, then calls cb unlocked. */
static void lss_each(struct limits_store_mem *m, enum lse_kind kind, uint64_t now_ms,
		     void (*cb)(void *ctx, const struct lse *e), void *ctx)
{
	for (size_t s = 0; s < LIMITS_SHARDS; s++) {
		struct lss_shard *sh = &m->shards[s];
		struct lse **copy = NULL;
		size_t n = 0;
		pthread_mutex_lock(&sh->lock);
		if (sh->n > 0)
			copy = xcalloc(sh->n, sizeof(*copy));
		for (size_t b = 0; b < sh->nbuckets; b++)
			for (struct lse *e = sh->buckets[b]; e != NULL; e = e->next)
				if (e->kind == kind && lss_alive(e, now_ms)) {
					copy[n] = xcalloc(1, sizeof(*e));
					memcpy(copy[n], e, sizeof(*e));
					n++;
				}
		pthread_mutex_unlock(&sh->lock);
		for (size_t i = 0; i < n; i++) {
			cb(ctx, copy[i]);
			free(copy[i]);
		}
		free(copy);
	}
}

struct lss_each_ctx {
	void *cb;
	void *ctx;
};

static void lss_hold_each_one(void *ctx, const struct lse *e)
{
	struct lss_each_ctx *c = ctx;
	((limits_hold_each_cb *)c->cb)(c->ctx, &e->u.hold);
}

static void lss_hold_each(struct limits_store *st, uint64_t now_ms, limits_hold_each_cb *cb,
			  void *ctx)
{
	struct lss_each_ctx c = {(void *)cb, ctx};
	lss_each((struct limits_store_mem *)st, LSE_HOLD, now_ms, lss_hold_each_one, &c);
}

static bool lss_block_set(struct limits_store *st, const struct limits_block *b)
{
	struct limits_store_mem *m = (struct limits_store_mem *)st;
	uint64_t h = lss_hash(LSE_BLOCK, b->addr, 0);
	struct lss_shard *sh = lss_shard(m, h);
	pthread_mutex_lock(&sh->lock);
	bool set = false;
	if (lss_find(m, sh, h, LSE_BLOCK, b->addr, 0, false, 0) == NULL) {
		struct lse *e = lss_find(m, sh, h, LSE_BLOCK, b->addr, 0, true, 0);
		if (e != NULL) {
			e->u.block = *b;
			set = true;
		}
	}
	pthread_mutex_unlock(&sh->lock);
	if (set)
		lss_bump(st);
	return set;
}

static bool lss_block_get(struct limits_store *st, const char *addr)
{
	struct limits_store_mem *m = (struct limits_store_mem *)st;
	uint64_t h;
	struct lss_shard *sh = lss_lock_key(st, LSE_BLOCK, addr, 0, 0, false, &h);
	if (sh == NULL)
		return false;
	bool r = lss_find(m, sh, h, LSE_BLOCK, addr, 0, false, 0) != NULL;
	pthread_mutex_unlock(&sh->lock);
	return r;
}

static bool lss_block_clear(struct limits_store *st, const char *addr)
{
	return lss_clear(st, LSE_BLOCK, addr);
}

static void lss_block_each_one(void *ctx, const struct lse *e)
{
	struct lss_each_ctx *c = ctx;
	((limits_block_each_cb *)c->cb)(c->ctx, &e->u.block);
}

static void lss_block_each(struct limits_store *st, limits_block_each_cb *cb, void *ctx)
{
	struct lss_each_ctx c = {(void *)cb, ctx};
	lss_each((struct limits_store_mem *)st, LSE_BLOCK, 0, lss_block_each_one, &c);
}

static void lss_kick(struct limits_store *st, const char *login, uint64_t now_ms, uint64_t keep_ms)
{
	struct limits_store_mem *m = (struct limits_store_mem *)st;
	uint64_t h;
	struct lss_shard *sh = lss_lock_key(st, LSE_KICK, login, 0, now_ms, true, &h);
	if (sh == NULL)
		return;
	struct lse *e = lss_find(m, sh, h, LSE_KICK, login, 0, true, now_ms);
	if (e != NULL) {
		e->u.kicked_ms = now_ms;
		e->expires_ms = now_ms + keep_ms;
	}
	pthread_mutex_unlock(&sh->lock);
	lss_bump(st);
}

static uint64_t lss_kicked_at(struct limits_store *st, const char *login, uint64_t now_ms)
{
	struct limits_store_mem *m = (struct limits_store_mem *)st;
	uint64_t h;
	struct lss_shard *sh = lss_lock_key(st, LSE_KICK, login, 0, 0, false, &h);
	if (sh == NULL)
		return 0;
	struct lse *e = lss_find(m, sh, h, LSE_KICK, login, 0, false, now_ms);
	uint64_t r = e != NULL && lss_alive(e, now_ms) ? e->u.kicked_ms : 0;
	pthread_mutex_unlock(&sh->lock);
	return r;
}

static void lss_stats(struct limits_store *st, struct limits_store_stats *r)
{
	struct limits_store_mem *m = (struct limits_store_mem *)st;
	r->entries = 0;
	for (size_t s = 0; s < LIMITS_SHARDS; s++) {
		pthread_mutex_lock(&m->shards[s].lock);
		r->entries += m->shards[s].n;
		pthread_mutex_unlock(&m->shards[s].lock);
	}
	r->refused_full = atomic_load(&m->refused_full);
}

static void lss_free(struct limits_store *st)
{
	struct limits_store_mem *m = (struct limits_store_mem *)st;
	for (size_t s = 0; s < LIMITS_SHARDS; s++) {
		struct lss_shard *sh = &m->shards[s];
		for (size_t b = 0; b < sh->nbuckets; b++)
			for (struct lse *e = sh->buckets[b], *next; e != NULL; e = next) {
				next = e->next;
				free(e);
			}
		free(sh->buckets);
		pthread_mutex_destroy(&sh->lock);
	}
	free(m);
}

static const struct limits_store_ops lss_ops = {
	.name = "memory",
	.take = lss_take,
	.peek = lss_peek,
	.add = lss_add,
	.addr_seen = lss_addr_seen,
	.hold_set = lss_hold_set,
	.hold_get = lss_hold_get,
	.hold_clear = lss_hold_clear,
	.hold_each = lss_hold_each,
	.block_set = lss_block_set,
	.block_get = lss_block_get,
	.block_clear = lss_block_clear,
	.block_each = lss_block_each,
	.kick = lss_kick,
	.kicked_at = lss_kicked_at,
	.stats = lss_stats,
	.free = lss_free,
};

struct limits_store *limits_store_memory_new(size_t max_entries)
{
	struct limits_store_mem *m = xcalloc(1, sizeof(*m));
	m->base.ops = &lss_ops;
	m->max_per_shard = max_entries / LIMITS_SHARDS + 1;
	for (size_t s = 0; s < LIMITS_SHARDS; s++)
		pthread_mutex_init(&m->shards[s].lock, NULL);
	return &m->base;
}

void limits_store_free(struct limits_store **st)
{
	if (*st == NULL)
		return;
	(*st)->ops->free(*st);
	*st = NULL;
}
