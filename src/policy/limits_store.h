/* policy/limits_store: where per-login counters, holds, address blocks and
 * kicks live (docs/limits.md). One store per process, shared by every
 * worker thread, kept across reloads (SIGHUP).
 *
 * The store is an interface (struct limits_store_ops) so that a shared
 * store for several instances can be a second row next to the memory one;
 * policy/limits.c calls it only through these functions.
 *
 * Counting: a window of PERIOD is kept as LIMITS_WIN_SLOTS + 1 slots of
 * ceil(PERIOD / LIMITS_WIN_SLOTS) each. An event counts for at least PERIOD
 * and less than LIMITS_WIN_SLOTS + 1 slots, so no PERIOD ever sees more than COUNT
 * accepted, and an event frees up at most one slot (about 1/60 of PERIOD)
 * later than an exact log of timestamps would say.
 *
 * Times are monotonic milliseconds given by the caller (tests pass their
 * own clock); display times (since, until) are wall-clock seconds.
 * Every function is thread-safe. Keys are NUL-terminated strings, at most
 * LIMITS_KEY_MAX bytes; a longer key is refused (false / not stored). */
#ifndef SUBMITD_POLICY_LIMITS_STORE_H
#define SUBMITD_POLICY_LIMITS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define LIMITS_WIN_SLOTS 60
#define LIMITS_KEY_MAX 400
#define LIMITS_REASON_MAX 160
#define LIMITS_ADDRS_MAX 64

/* One COUNT/PERIOD rule asked of one counter key. */
struct limits_ask {
	const char *key;
	uint64_t count;
	uint64_t period_ms;
};

struct limits_hold {
	char login[256];
	char reason[LIMITS_REASON_MAX]; /* the rule, or "manual" */
	char note[200];                 /* its figures, or the administrator's words */
	char client[64];                /* the address that triggered it, or "" */
	time_t since;                   /* wall clock */
	time_t until;                   /* wall clock; 0: until released */
	uint64_t since_ms;              /* monotonic, to tell older sessions */
};

struct limits_block {
	char addr[64];
	time_t since;
	char reason[LIMITS_REASON_MAX];
};

struct limits_store_stats {
	uint64_t entries;      /* keys held: counters, holds, blocks, kicks */
	uint64_t refused_full; /* counters not kept because the store was full */
};

typedef void limits_hold_each_cb(void *ctx, const struct limits_hold *h);
typedef void limits_block_each_cb(void *ctx, const struct limits_block *b);

struct limits_store;

struct limits_store_ops {
	const char *name;
	/* Takes amount from every rule at once, or from none: false when one
	   rule would go over; then *which_r is its index and *wait_ms_r how
	   long until amount fits again. */
	bool (*take)(struct limits_store *st, const struct limits_ask *asks, size_t n,
		     uint64_t amount, uint64_t now_ms, size_t *which_r, uint64_t *wait_ms_r);
	/* What a counter holds now within period, and how long until one more
	   of count would fit (0: fits now). */
	uint64_t (*peek)(struct limits_store *st, const char *key, uint64_t period_ms,
			 uint64_t count, uint64_t now_ms, uint64_t *wait_ms_r);
	/* Adds amount to a counter and returns its count within period
	   (amount 0 only reads). */
	uint64_t (*add)(struct limits_store *st, const char *key, uint64_t period_ms,
			uint64_t amount, uint64_t now_ms);
	/* Records addr for key and returns how many distinct addresses were
	   seen within period (at most LIMITS_ADDRS_MAX). */
	unsigned (*addr_seen)(struct limits_store *st, const char *key, const char *addr,
			      uint64_t period_ms, uint64_t now_ms);
	/* Holds: hold_set returns false when the login was held already
	   (nothing changes), so a hold is logged once. */
	bool (*hold_set)(struct limits_store *st, const struct limits_hold *h, uint64_t now_ms);
	bool (*hold_get)(struct limits_store *st, const char *login, uint64_t now_ms,
			 struct limits_hold *h_r);
	bool (*hold_clear)(struct limits_store *st, const char *login);
	void (*hold_each)(struct limits_store *st, uint64_t now_ms, limits_hold_each_cb *cb,
			  void *ctx);
	bool (*block_set)(struct limits_store *st, const struct limits_block *b);
	bool (*block_get)(struct limits_store *st, const char *addr);
	bool (*block_clear)(struct limits_store *st, const char *addr);
	void (*block_each)(struct limits_store *st, limits_block_each_cb *cb, void *ctx);
	/* Sessions of login that logged in before now_ms end at their next
	   command (kept for keep_ms). */
	void (*kick)(struct limits_store *st, const char *login, uint64_t now_ms, uint64_t keep_ms);
	/* The time of the latest kick of login, or 0. */
	uint64_t (*kicked_at)(struct limits_store *st, const char *login, uint64_t now_ms);
	void (*stats)(struct limits_store *st, struct limits_store_stats *r);
	void (*free)(struct limits_store *st);
};

struct limits_store {
	const struct limits_store_ops *ops;
	/* Bumped by every hold, block and kick: a session that saw the same
	   value at its last command has nothing new to check. */
	_Atomic uint64_t generation;
};

/* The memory store: a sharded hash table, each shard under its own lock.
 * max_entries bounds it (expired entries are swept first; past the bound
 * a new counter is not kept, counted in stats.refused_full). */
struct limits_store *limits_store_memory_new(size_t max_entries);
void limits_store_free(struct limits_store **st);

/* The slot arithmetic, exposed for t/unit/test-limits.c. */
struct limits_win {
	uint64_t slot_ms; /* width of a slot */
	uint64_t head;    /* index (time / slot_ms) of the newest slot */
	uint32_t n[LIMITS_WIN_SLOTS + 1];
};
void limits_win_init(struct limits_win *w, uint64_t period_ms);
/* Moves the window to now and returns its count. */
uint64_t limits_win_count(struct limits_win *w, uint64_t now_ms);
void limits_win_add(struct limits_win *w, uint64_t now_ms, uint64_t amount);
/* How long until count - used >= amount, with the window at now. */
uint64_t limits_win_wait(struct limits_win *w, uint64_t now_ms, uint64_t count, uint64_t amount);
/* True when nothing in it can count any more at now. */
bool limits_win_empty(struct limits_win *w, uint64_t now_ms);

#endif
