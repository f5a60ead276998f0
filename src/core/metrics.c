/* metrics: per-thread shards summed when read (metrics.h). */
#include "config.h"
#include "core/metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/log.h"

const double metrics_bucket_bounds[METRICS_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
						       0.1,   0.25,   0.5,   1,    2.5,   10};

struct metrics_top_slot {
	char login[64];
	uint32_t count, error;
};

struct metrics_window {
	int64_t epoch; /* now / METRICS_WINDOW_S when written; other: stale */
	uint64_t total;
	unsigned used;
	struct metrics_top_slot e[METRICS_TOP_CAPACITY];
};

struct metrics_shard {
	struct metrics_shard *next;
	atomic_uint_fast64_t counters[METRICS_COUNTERS];
	atomic_uint_fast64_t auth[METRICS_MECHS][METRICS_AUTH_RESULTS];
	atomic_int_fast64_t gauges[METRICS_GAUGES];
	atomic_uint_fast64_t conns[METRICS_SLOTS][METRICS_CONN_OUTCOMES];
	atomic_uint_fast64_t hist[METRICS_HISTS][METRICS_SLOTS][METRICS_BUCKETS + 1];
	atomic_uint_fast64_t hist_sum_ns[METRICS_HISTS][METRICS_SLOTS];
	atomic_int backend_up[METRICS_SLOTS]; /* 0: not reported, 1 down, 2 up */
	/* The per-login sketches: written by the shard's thread, read by
	   `submitctl stats`; the lock is only ever contended by that reader. */
	pthread_mutex_t top_lock;
	struct metrics_window top[METRICS_TOPS][METRICS_WINDOWS];
};

static pthread_mutex_t metrics_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(struct metrics_shard *) metrics_shards;
static _Thread_local struct metrics_shard *metrics_mine;

static struct {
	atomic_uint n;
	char names[METRICS_SLOTS][64];
} metrics_slots_tab[METRICS_KINDS];

static struct metrics_shard *metrics_shard(void)
{
	if (metrics_mine != NULL)
		return metrics_mine;
	/* Once per thread; kept for the life of the process (its counts stay
	   in the sums after the thread ends). */
	struct metrics_shard *s = calloc(1, sizeof(*s));
	if (s == NULL)
		abort();
	pthread_mutex_init(&s->top_lock, NULL);
	pthread_mutex_lock(&metrics_lock);
	s->next = atomic_load_explicit(&metrics_shards, memory_order_relaxed);
	atomic_store_explicit(&metrics_shards, s, memory_order_release);
	pthread_mutex_unlock(&metrics_lock);
	metrics_mine = s;
	return s;
}

#define METRICS_ADD(a, n) atomic_fetch_add_explicit(&(a), (n), memory_order_relaxed)

void metrics_add(enum metrics_counter c, uint64_t n)
{
	METRICS_ADD(metrics_shard()->counters[c], n);
}

void metrics_inc(enum metrics_counter c)
{
	metrics_add(c, 1);
}

void metrics_auth(enum metrics_auth_mech m, enum metrics_auth_result r)
{
	METRICS_ADD(metrics_shard()->auth[m][r], 1);
}

enum metrics_auth_mech metrics_auth_mech(const char *name)
{
	if (strcasecmp(name, "PLAIN") == 0)
		return METRICS_MECH_PLAIN;
	if (strcasecmp(name, "LOGIN") == 0)
		return METRICS_MECH_LOGIN;
	return METRICS_MECH_OTHER;
}

void metrics_gauge_add(enum metrics_gauge g, int64_t delta)
{
	METRICS_ADD(metrics_shard()->gauges[g], delta);
}

unsigned metrics_slot(enum metrics_kind k, const char *value)
{
	char v[64];
	size_t len = strlen(value);
	if (len >= sizeof(v))
		len = sizeof(v) - 1;
	memcpy(v, value, len);
	v[len] = '\0';
	unsigned n = atomic_load_explicit(&metrics_slots_tab[k].n, memory_order_acquire);
	for (unsigned i = 0; i < n; i++)
		if (strcmp(metrics_slots_tab[k].names[i], v) == 0)
			return i;
	pthread_mutex_lock(&metrics_lock);
	n = atomic_load_explicit(&metrics_slots_tab[k].n, memory_order_relaxed);
	unsigned i;
	for (i = 0; i < n; i++)
		if (strcmp(metrics_slots_tab[k].names[i], v) == 0)
			break;
	if (i == n) {
		if (n < METRICS_SLOTS - 1) {
			memcpy(metrics_slots_tab[k].names[n], v, len + 1);
		} else if (n == METRICS_SLOTS - 1) {
			strcpy(metrics_slots_tab[k].names[n], "other");
		} else {
			i = METRICS_SLOTS - 1;
			pthread_mutex_unlock(&metrics_lock);
			return i;
		}
		/* names written before the count that publishes them */
		atomic_store_explicit(&metrics_slots_tab[k].n, n + 1, memory_order_release);
	}
	pthread_mutex_unlock(&metrics_lock);
	return i;
}

void metrics_conn(const char *listener, enum metrics_conn_outcome o)
{
	METRICS_ADD(metrics_shard()->conns[metrics_slot(METRICS_KIND_LISTENER, listener)][o], 1);
}

static const enum metrics_kind metrics_hist_kind[METRICS_HISTS] = {METRICS_KIND_ROUTE,
								   METRICS_KIND_BACKEND};

static unsigned metrics_slot2(enum metrics_kind k, const char *type, const char *name)
{
	if (name == NULL)
		return metrics_slot(k, type);
	char v[64];
	snprintf(v, sizeof(v), "%s:%s", type, name);
	return metrics_slot(k, v);
}

void metrics_observe(enum metrics_hist h, const char *type, const char *name, uint64_t ns)
{
	struct metrics_shard *s = metrics_shard();
	unsigned slot = metrics_slot2(metrics_hist_kind[h], type, name);
	double sec = (double)ns / 1e9;
	unsigned b = 0;
	while (b < METRICS_BUCKETS && sec > metrics_bucket_bounds[b])
		b++;
	METRICS_ADD(s->hist[h][slot][b], 1);
	METRICS_ADD(s->hist_sum_ns[h][slot], ns);
}

void metrics_backend_up(const char *type, const char *name, bool up)
{
	struct metrics_shard *s = metrics_shard();
	atomic_store_explicit(&s->backend_up[metrics_slot2(METRICS_KIND_BACKEND, type, name)],
			      up ? 2 : 1, memory_order_relaxed);
}

/* ---- per-login sketches ---- */

void metrics_login_add(enum metrics_top t, const char *login, uint32_t n)
{
	if (login == NULL || login[0] == '\0' || n == 0)
		return;
	/* kept, and compared, cut to 63 bytes: two longer logins with the same
	   start share an entry (docs/observability.md) */
	char key[sizeof(((struct metrics_top_slot *)0)->login)];
	snprintf(key, sizeof(key), "%s", login);
	struct metrics_shard *s = metrics_shard();
	int64_t epoch = (int64_t)time(NULL) / METRICS_WINDOW_S;
	pthread_mutex_lock(&s->top_lock);
	struct metrics_window *w = &s->top[t][epoch % METRICS_WINDOWS];
	if (w->epoch != epoch) {
		w->epoch = epoch;
		w->total = 0;
		w->used = 0;
	}
	w->total += n;
	struct metrics_top_slot *min = NULL;
	for (unsigned i = 0; i < w->used; i++) {
		if (strcmp(w->e[i].login, key) == 0) {
			w->e[i].count += n;
			pthread_mutex_unlock(&s->top_lock);
			return;
		}
		if (min == NULL || w->e[i].count < min->count)
			min = &w->e[i];
	}
	struct metrics_top_slot *e;
	if (w->used < METRICS_TOP_CAPACITY) {
		e = &w->e[w->used++];
		e->count = 0;
		e->error = 0;
	} else {
		/* space-saving: the newcomer takes the smallest entry's place and
		   inherits its count as its possible error */
		e = min;
		e->error = e->count;
	}
	e->count += n;
	memcpy(e->login, key, sizeof(key));
	pthread_mutex_unlock(&s->top_lock);
}

static int metrics_top_cmp(const void *a, const void *b)
{
	const struct metrics_top_entry *x = a, *y = b;
	if (x->count != y->count)
		return x->count < y->count ? 1 : -1;
	return strcmp(x->login, y->login);
}

size_t metrics_top_read(enum metrics_top t, struct metrics_top_entry *out, size_t n)
{
	/* Bounded: every shard's live windows, METRICS_TOP_CAPACITY each. */
	size_t cap = 0, used = 0;
	struct metrics_top_entry *all = NULL;
	int64_t now = (int64_t)time(NULL) / METRICS_WINDOW_S;
	for (struct metrics_shard *s = atomic_load_explicit(&metrics_shards, memory_order_acquire);
	     s != NULL; s = s->next) {
		pthread_mutex_lock(&s->top_lock);
		for (unsigned wi = 0; wi < METRICS_WINDOWS; wi++) {
			struct metrics_window *w = &s->top[t][wi];
			if (w->used == 0 || now - w->epoch >= METRICS_WINDOWS)
				continue;
			for (unsigned i = 0; i < w->used; i++) {
				size_t j;
				for (j = 0; j < used; j++)
					if (strcmp(all[j].login, w->e[i].login) == 0)
						break;
				if (j == used) {
					if (used == cap) {
						cap = cap ? cap * 2 : 64;
						struct metrics_top_entry *na =
							realloc(all, cap * sizeof(*all));
						if (na == NULL)
							abort();
						all = na;
					}
					memset(&all[used], 0, sizeof(all[used]));
					memcpy(all[used].login, w->e[i].login,
					       sizeof(all[used].login));
					used++;
				}
				all[j].count += w->e[i].count;
				all[j].error += w->e[i].error;
			}
		}
		pthread_mutex_unlock(&s->top_lock);
	}
	if (used > 0)
		qsort(all, used, sizeof(*all), metrics_top_cmp);
	if (n > used)
		n = used;
	if (n > 0)
		memcpy(out, all, n * sizeof(*out));
	free(all);
	return n;
}

/* ---- reading ---- */

void metrics_read(struct metrics_snapshot *out)
{
	memset(out, 0, sizeof(*out));
	for (unsigned k = 0; k < METRICS_KINDS; k++) {
		out->nslots[k] =
			atomic_load_explicit(&metrics_slots_tab[k].n, memory_order_acquire);
		memcpy(out->slot_names[k], metrics_slots_tab[k].names,
		       sizeof(out->slot_names[k][0]) * out->nslots[k]);
	}
	for (unsigned i = 0; i < METRICS_SLOTS; i++)
		out->backend_up[i] = -1;
#define METRICS_LD(a) atomic_load_explicit(&(a), memory_order_relaxed)
	for (struct metrics_shard *s = atomic_load_explicit(&metrics_shards, memory_order_acquire);
	     s != NULL; s = s->next) {
		for (unsigned i = 0; i < METRICS_COUNTERS; i++)
			out->counters[i] += METRICS_LD(s->counters[i]);
		for (unsigned m = 0; m < METRICS_MECHS; m++)
			for (unsigned r = 0; r < METRICS_AUTH_RESULTS; r++)
				out->auth[m][r] += METRICS_LD(s->auth[m][r]);
		for (unsigned g = 0; g < METRICS_GAUGES; g++)
			out->gauges[g] += METRICS_LD(s->gauges[g]);
		for (unsigned i = 0; i < METRICS_SLOTS; i++) {
			for (unsigned o = 0; o < METRICS_CONN_OUTCOMES; o++)
				out->conns[i][o] += METRICS_LD(s->conns[i][o]);
			for (unsigned h = 0; h < METRICS_HISTS; h++) {
				for (unsigned b = 0; b <= METRICS_BUCKETS; b++)
					out->hist[h][i][b] += METRICS_LD(s->hist[h][i][b]);
				out->hist_sum_ns[h][i] += METRICS_LD(s->hist_sum_ns[h][i]);
			}
			int up = METRICS_LD(s->backend_up[i]);
			if (up == 1)
				out->backend_up[i] = 0;
			else if (up == 2 && out->backend_up[i] < 0)
				out->backend_up[i] = 1;
		}
	}
#undef METRICS_LD
}

void metrics_label_escape(char *out, size_t outsz, const char *in)
{
	size_t o = 0;
	for (const char *p = in; *p && o + 3 < outsz; p++) {
		if (*p == '\\' || *p == '"')
			out[o++] = '\\', out[o++] = *p;
		else if (*p == '\n')
			out[o++] = '\\', out[o++] = 'n';
		else if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			out[o++] = '?'; /* names are configuration text; kept ASCII */
		else
			out[o++] = *p;
	}
	if (outsz > 0)
		out[o] = '\0';
}
