/* metrics: the counters behind GET /metrics and `submitctl stats`
 * (docs/observability.md).
 *
 * Every thread that counts gets a shard of its own on first use (a worker
 * thread, the main thread); a shard is written only by its thread, with
 * relaxed atomics, and read by whoever assembles a scrape, which sums the
 * shards. Nothing on the path of a message takes a lock.
 *
 * Label values are bounded: fixed ones are part of the names below, the
 * configured ones (listeners, routes, tables, relays) take one of
 * METRICS_SLOTS slots per kind on first sight; past that they count under
 * "other". No label ever carries a login or a client address. */
#ifndef SUBMITD_METRICS_H
#define SUBMITD_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Plain counters; the comment is the family and its labels. */
enum metrics_counter {
	/* submitd_tls_handshakes_total{version,result} */
	METRICS_TLS_OK_12,
	METRICS_TLS_OK_13,
	METRICS_TLS_OK_OTHER,
	METRICS_TLS_FAILED,
	METRICS_TLS_RESUMED, /* submitd_tls_resumptions_total */
	/* submitd_messages_total{result,reason} */
	METRICS_MSG_ACCEPTED,
	METRICS_MSG_SENDER_NOT_OWNED,
	METRICS_MSG_FROM_NOT_OWNED,
	METRICS_MSG_LIMIT,
	METRICS_MSG_HOLD,
	METRICS_MSG_SIZE,
	METRICS_MSG_POLICY,
	METRICS_MSG_DOWNSTREAM_REFUSED,
	METRICS_MSG_DOWNSTREAM_UNAVAILABLE,
	METRICS_MSG_LOOKUP_UNAVAILABLE, /* the sender or From: check could not look */
	/* submitd_recipients_total{result,reason} */
	METRICS_RCPT_ACCEPTED,
	METRICS_RCPT_LIMIT,
	METRICS_RCPT_POLICY,
	METRICS_RCPT_DOWNSTREAM_REFUSED,
	METRICS_RCPT_DOWNSTREAM_UNAVAILABLE,
	METRICS_RELAYED_BYTES, /* submitd_relayed_bytes_total */
	/* submitd_limits_hit_total{kind} */
	METRICS_LIMIT_MESSAGES,
	METRICS_LIMIT_RECIPIENTS,
	METRICS_LIMIT_HOLD,
	METRICS_COUNTERS
};

/* AUTH attempts: submitd_auth_attempts_total{mechanism,result}. */
enum metrics_auth_mech {
	METRICS_MECH_PLAIN,
	METRICS_MECH_LOGIN,
	METRICS_MECH_OTHER,   /* offered by the backend, neither of the above */
	METRICS_MECH_UNKNOWN, /* not offered: the client's text is not a label */
	METRICS_MECHS
};
enum metrics_auth_result {
	METRICS_AUTH_SUCCESS,
	METRICS_AUTH_WRONG_CREDENTIALS,
	METRICS_AUTH_BACKEND_UNAVAILABLE,
	METRICS_AUTH_ABORTED,
	METRICS_AUTH_BLOCKED,
	METRICS_AUTH_UNKNOWN_MECHANISM,
	METRICS_AUTH_RESULTS
};

/* Kinds of configured label values, each with its own slots. */
enum metrics_kind {
	METRICS_KIND_LISTENER, /* label listener */
	METRICS_KIND_ROUTE,    /* label route: a downstream destination */
	METRICS_KIND_BACKEND,  /* label backend: dovecot, saslauthd, table:..., relay:..., redis */
	METRICS_KINDS
};
#define METRICS_SLOTS 32 /* per kind; the last one is "other" */

/* submitd_connections_total{listener,outcome} */
enum metrics_conn_outcome {
	METRICS_CONN_ACCEPTED,
	METRICS_CONN_REFUSED, /* client_limit, address limits, proxy_networks */
	METRICS_CONN_OUTCOMES
};

/* Histograms, each over the slots of one kind. */
enum metrics_hist {
	METRICS_H_DOWNSTREAM, /* submitd_downstream_latency_seconds{route}: MAIL to final reply */
	METRICS_H_LOOKUP,     /* submitd_lookup_latency_seconds{backend} */
	METRICS_HISTS
};
#define METRICS_BUCKETS 12 /* and +Inf; bounds in metrics_bucket_bounds */
extern const double metrics_bucket_bounds[METRICS_BUCKETS];

/* Gauges summed over the shards. */
enum metrics_gauge {
	METRICS_G_SESSIONS, /* submitd_sessions_open */
	METRICS_GAUGES
};

void metrics_inc(enum metrics_counter c);
void metrics_add(enum metrics_counter c, uint64_t n);
void metrics_auth(enum metrics_auth_mech m, enum metrics_auth_result r);
/* The mechanism's index for a name the backend offered. */
enum metrics_auth_mech metrics_auth_mech(const char *name);
void metrics_gauge_add(enum metrics_gauge g, int64_t delta);

/* The slot of a configured label value (at most 63 bytes are kept). Slots
 * are found without a lock; a new one takes a mutex once. */
unsigned metrics_slot(enum metrics_kind k, const char *value);
void metrics_conn(const char *listener, enum metrics_conn_outcome o);
/* Label values are "type" or "type:name" (name NULL: just the type). */
void metrics_observe(enum metrics_hist h, const char *type, const char *name, uint64_t ns);
/* submitd_backend_up{backend}: this thread's view of one backend (its own
 * connection). A scrape says 0 if any thread saw it down last, 1 if some saw
 * it up and none down; a backend nobody reported is absent. A new backend
 * type (Redis) reports through this too, under its own name. */
void metrics_backend_up(const char *type, const char *name, bool up);

/* Per-login figures for `submitctl stats` (never labels): messages accepted
 * and recipients refused in the last hour, in METRICS_WINDOWS windows of
 * METRICS_WINDOW_S seconds, each a space-saving sketch of
 * METRICS_TOP_CAPACITY entries per shard: a reported count is never below
 * the true one and above it by at most N/METRICS_TOP_CAPACITY per window and
 * shard, N being that window's total (docs/observability.md). */
#define METRICS_WINDOWS 6
#define METRICS_WINDOW_S 600
#define METRICS_TOP_CAPACITY 64
enum metrics_top { METRICS_TOP_MESSAGES, METRICS_TOP_REFUSED, METRICS_TOPS };
void metrics_login_add(enum metrics_top t, const char *login, uint32_t n);

/* ---- reading: sums over the shards ---- */

struct metrics_snapshot {
	uint64_t counters[METRICS_COUNTERS];
	uint64_t auth[METRICS_MECHS][METRICS_AUTH_RESULTS];
	int64_t gauges[METRICS_GAUGES];
	unsigned nslots[METRICS_KINDS];
	char slot_names[METRICS_KINDS][METRICS_SLOTS][64];
	uint64_t conns[METRICS_SLOTS][METRICS_CONN_OUTCOMES];
	uint64_t hist[METRICS_HISTS][METRICS_SLOTS][METRICS_BUCKETS + 1]; /* not cumulative */
	uint64_t hist_sum_ns[METRICS_HISTS][METRICS_SLOTS];
	int8_t backend_up[METRICS_SLOTS]; /* -1: not reported */
};
void metrics_read(struct metrics_snapshot *out);

struct metrics_top_entry {
	char login[64];
	uint64_t count, error; /* error: the most count may be above the truth */
};
/* The n largest (n at most 100) for one figure; returns how many. */
size_t metrics_top_read(enum metrics_top t, struct metrics_top_entry *out, size_t n);

/* Label values as the exposition format wants them ("\\", "\"", "\n" escaped);
 * out is always terminated. */
void metrics_label_escape(char *out, size_t outsz, const char *in);

#endif
