/* metrics_scrape: the figures of core/metrics.h rendered for GET /metrics
 * (Prometheus text format 0.0.4, or OpenMetrics 1.0) and for
 * `submitctl stats` (docs/observability.md). */
#include "config.h"
#include "metrics_http.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "core/metrics.h"
#include "policy/limits.h"

struct metrics_label_row {
	enum metrics_counter c;
	const char *labels;
};

static const struct metrics_label_row metrics_msg_rows[] = {
	{METRICS_MSG_ACCEPTED, "result=\"accepted\",reason=\"\""},
	{METRICS_MSG_SENDER_NOT_OWNED, "result=\"refused\",reason=\"sender_not_owned\""},
	{METRICS_MSG_FROM_NOT_OWNED, "result=\"refused\",reason=\"from_not_owned\""},
	{METRICS_MSG_LIMIT, "result=\"refused\",reason=\"limit\""},
	{METRICS_MSG_HOLD, "result=\"refused\",reason=\"hold\""},
	{METRICS_MSG_SIZE, "result=\"refused\",reason=\"size\""},
	{METRICS_MSG_POLICY, "result=\"refused\",reason=\"policy\""},
	{METRICS_MSG_DOWNSTREAM_REFUSED, "result=\"refused\",reason=\"downstream_refused\""},
	{METRICS_MSG_DOWNSTREAM_UNAVAILABLE,
	 "result=\"refused\",reason=\"downstream_unavailable\""},
	{METRICS_MSG_LOOKUP_UNAVAILABLE, "result=\"refused\",reason=\"lookup_unavailable\""},
};

static const struct metrics_label_row metrics_rcpt_rows[] = {
	{METRICS_RCPT_ACCEPTED, "result=\"accepted\",reason=\"\""},
	{METRICS_RCPT_LIMIT, "result=\"refused\",reason=\"limit\""},
	{METRICS_RCPT_POLICY, "result=\"refused\",reason=\"policy\""},
	{METRICS_RCPT_DOWNSTREAM_REFUSED, "result=\"refused\",reason=\"downstream_refused\""},
	{METRICS_RCPT_DOWNSTREAM_UNAVAILABLE,
	 "result=\"refused\",reason=\"downstream_unavailable\""},
};

static const struct metrics_label_row metrics_tls_rows[] = {
	{METRICS_TLS_OK_12, "version=\"TLSv1.2\",result=\"success\""},
	{METRICS_TLS_OK_13, "version=\"TLSv1.3\",result=\"success\""},
	{METRICS_TLS_OK_OTHER, "version=\"other\",result=\"success\""},
	{METRICS_TLS_FAILED, "version=\"\",result=\"failed\""},
};

static const struct metrics_label_row metrics_limit_rows[] = {
	{METRICS_LIMIT_MESSAGES, "kind=\"messages\""},
	{METRICS_LIMIT_RECIPIENTS, "kind=\"recipients\""},
	{METRICS_LIMIT_HOLD, "kind=\"hold\""},
};

static const char *const metrics_mech_names[METRICS_MECHS] = {"PLAIN", "LOGIN", "other", "unknown"};
static const char *const metrics_auth_names[METRICS_AUTH_RESULTS] = {
	"success", "wrong_credentials", "backend_unavailable",
	"aborted", "blocked",           "unknown_mechanism"};

/* "# HELP"/"# TYPE"; OpenMetrics names a counter family without "_total". */
static void metrics_family(struct buf *b, bool om, const char *name, const char *type,
			   const char *help)
{
	size_t len = strlen(name);
	if (om && strcmp(type, "counter") == 0 && len > 6 && strcmp(name + len - 6, "_total") == 0)
		len -= 6;
	buf_printf(b, "# HELP %.*s %s\n# TYPE %.*s %s\n", (int)len, name, help, (int)len, name,
		   type);
}

static void metrics_rows(struct buf *b, bool om, const struct metrics_snapshot *m, const char *name,
			 const char *help, const struct metrics_label_row *rows, size_t n)
{
	metrics_family(b, om, name, "counter", help);
	for (size_t i = 0; i < n; i++)
		buf_printf(b, "%s{%s} %" PRIu64 "\n", name, rows[i].labels, m->counters[rows[i].c]);
}

static void metrics_hist(struct buf *b, bool om, const struct metrics_snapshot *m,
			 enum metrics_hist h, enum metrics_kind k, const char *name,
			 const char *label, const char *help)
{
	metrics_family(b, om, name, "histogram", help);
	for (unsigned s = 0; s < m->nslots[k]; s++) {
		uint64_t n = 0;
		for (unsigned i = 0; i <= METRICS_BUCKETS; i++)
			n += m->hist[h][s][i];
		if (n == 0)
			continue;
		char lv[160];
		metrics_label_escape(lv, sizeof(lv), m->slot_names[k][s]);
		uint64_t cum = 0;
		for (unsigned i = 0; i < METRICS_BUCKETS; i++) {
			cum += m->hist[h][s][i];
			buf_printf(b, "%s_bucket{%s=\"%s\",le=\"%g\"} %" PRIu64 "\n", name, label,
				   lv, metrics_bucket_bounds[i], cum);
		}
		buf_printf(b, "%s_bucket{%s=\"%s\",le=\"+Inf\"} %" PRIu64 "\n", name, label, lv, n);
		buf_printf(b, "%s_sum{%s=\"%s\"} %.9f\n", name, label, lv,
			   (double)m->hist_sum_ns[h][s] / 1e9);
		buf_printf(b, "%s_count{%s=\"%s\"} %" PRIu64 "\n", name, label, lv, n);
	}
}

static void metrics_count_hold(void *ctx, const struct limits_hold *h)
{
	(void)h;
	(*(unsigned *)ctx)++;
}

/* Called from the metrics thread as well as the main thread: the store's
 * hold_each must be safe from any thread (the memory store's shards are
 * locked; another store type has to keep that promise or keep a count). */
static unsigned metrics_held(void)
{
	unsigned held = 0;
	struct limits_store *st = limits_store();
	if (st != NULL)
		st->ops->hold_each(st, limits_now_ms(), metrics_count_hold, &held);
	return held;
}

void metrics_scrape(struct buf *b, bool om)
{
	/* ~100 KiB: on the heap, as the HTTP thread and the control socket may
	   both be scraping */
	struct metrics_snapshot *m = xmalloc(sizeof(*m));
	metrics_read(m);
	metrics_family(b, om, "submitd_connections_total", "counter",
		       "Client connections by listener and outcome.");
	for (unsigned s = 0; s < m->nslots[METRICS_KIND_LISTENER]; s++) {
		char lv[160];
		metrics_label_escape(lv, sizeof(lv), m->slot_names[METRICS_KIND_LISTENER][s]);
		buf_printf(
			b,
			"submitd_connections_total{listener=\"%s\",outcome=\"accepted\"} %" PRIu64
			"\nsubmitd_connections_total{listener=\"%s\",outcome=\"refused\"} %" PRIu64
			"\n",
			lv, m->conns[s][METRICS_CONN_ACCEPTED], lv,
			m->conns[s][METRICS_CONN_REFUSED]);
	}
	metrics_rows(b, om, m, "submitd_tls_handshakes_total",
		     "TLS handshakes by protocol version and result.", metrics_tls_rows,
		     sizeof(metrics_tls_rows) / sizeof(metrics_tls_rows[0]));
	metrics_family(b, om, "submitd_tls_resumptions_total", "counter",
		       "TLS handshakes that resumed a session.");
	buf_printf(b, "submitd_tls_resumptions_total %" PRIu64 "\n",
		   m->counters[METRICS_TLS_RESUMED]);
	metrics_family(b, om, "submitd_auth_attempts_total", "counter",
		       "AUTH attempts by mechanism and result.");
	for (unsigned i = 0; i < METRICS_MECHS; i++)
		for (unsigned r = 0; r < METRICS_AUTH_RESULTS; r++)
			buf_printf(b,
				   "submitd_auth_attempts_total{mechanism=\"%s\",result=\"%s\"} "
				   "%" PRIu64 "\n",
				   metrics_mech_names[i], metrics_auth_names[r], m->auth[i][r]);
	metrics_rows(b, om, m, "submitd_messages_total",
		     "Messages (transactions) accepted, and refused by reason.", metrics_msg_rows,
		     sizeof(metrics_msg_rows) / sizeof(metrics_msg_rows[0]));
	metrics_rows(b, om, m, "submitd_recipients_total",
		     "Recipients accepted, and refused by reason.", metrics_rcpt_rows,
		     sizeof(metrics_rcpt_rows) / sizeof(metrics_rcpt_rows[0]));
	metrics_family(b, om, "submitd_relayed_bytes_total", "counter",
		       "Message bytes handed to the downstream and acknowledged.");
	buf_printf(b, "submitd_relayed_bytes_total %" PRIu64 "\n",
		   m->counters[METRICS_RELAYED_BYTES]);
	metrics_rows(b, om, m, "submitd_limits_hit_total",
		     "Per-login limits reached and logins held by a hold rule.", metrics_limit_rows,
		     sizeof(metrics_limit_rows) / sizeof(metrics_limit_rows[0]));
	metrics_hist(b, om, m, METRICS_H_DOWNSTREAM, METRICS_KIND_ROUTE,
		     "submitd_downstream_latency_seconds", "route",
		     "Downstream time from MAIL to the reply to the final dot, per route.");
	metrics_hist(b, om, m, METRICS_H_LOOKUP, METRICS_KIND_BACKEND,
		     "submitd_lookup_latency_seconds", "backend",
		     "Time a lookup (Dovecot, saslauthd, table) took to answer.");
	metrics_family(b, om, "submitd_backend_up", "gauge",
		       "1 if the backend answered at its last use, 0 if it failed.");
	for (unsigned s = 0; s < m->nslots[METRICS_KIND_BACKEND]; s++) {
		if (m->backend_up[s] < 0)
			continue;
		char lv[160];
		metrics_label_escape(lv, sizeof(lv), m->slot_names[METRICS_KIND_BACKEND][s]);
		buf_printf(b, "submitd_backend_up{backend=\"%s\"} %d\n", lv, m->backend_up[s]);
	}
	metrics_family(b, om, "submitd_sessions_open", "gauge", "Client sessions open now.");
	buf_printf(b, "submitd_sessions_open %" PRId64 "\n", m->gauges[METRICS_G_SESSIONS]);
	metrics_family(b, om, "submitd_held_logins", "gauge", "Logins held now.");
	buf_printf(b, "submitd_held_logins %u\n", metrics_held());
	if (om)
		buf_append_str(b, "# EOF\n");
	free(m);
}

/* ---- submitctl stats ---- */

#define METRICS_TOP_SHOWN 10

void metrics_stats(struct buf *b, bool json)
{
	static const char *const tops[METRICS_TOPS] = {"top_messages", "top_refused_recipients"};
	if (!json) {
		metrics_scrape(b, false);
		for (unsigned t = 0; t < METRICS_TOPS; t++) {
			struct metrics_top_entry e[METRICS_TOP_SHOWN];
			size_t n = metrics_top_read(t, e, METRICS_TOP_SHOWN);
			buf_printf(b, "# %s (last hour; login count +error)\n", tops[t]);
			for (size_t i = 0; i < n; i++)
				buf_printf(b, "%s %" PRIu64 " +%" PRIu64 "\n", e[i].login,
					   e[i].count, e[i].error);
		}
		return;
	}
	struct buf text = BUF_INIT;
	metrics_scrape(&text, false);
	/* {"metrics":{"name{labels}":value,...},"top_messages":[...],...} */
	buf_append_str(b, "{\"metrics\":{");
	bool first = true;
	const char *p = (const char *)buf_data(&text), *end = p + buf_len(&text);
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL)
			nl = end;
		const char *sp = nl;
		while (sp > p && sp[-1] != ' ')
			sp--;
		if (*p != '#' && sp > p) {
			char key[400], val[64];
			snprintf(key, sizeof(key), "%.*s", (int)(sp - 1 - p), p);
			snprintf(val, sizeof(val), "%.*s", (int)(nl - sp), sp);
			buf_append_str(b, first ? "" : ",");
			control_json_str(b, key);
			buf_printf(b, ":%s", val);
			first = false;
		}
		p = nl + 1;
	}
	buf_free(&text);
	buf_append_str(b, "}");
	for (unsigned t = 0; t < METRICS_TOPS; t++) {
		struct metrics_top_entry e[METRICS_TOP_SHOWN];
		size_t n = metrics_top_read(t, e, METRICS_TOP_SHOWN);
		buf_printf(b, ",\"%s\":[", tops[t]);
		for (size_t i = 0; i < n; i++) {
			buf_append_str(b, i ? ",{\"login\":" : "{\"login\":");
			control_json_str(b, e[i].login);
			buf_printf(b, ",\"count\":%" PRIu64 ",\"error\":%" PRIu64 "}", e[i].count,
				   e[i].error);
		}
		buf_append_str(b, "]");
	}
	buf_printf(b, ",\"window_s\":%d,\"sketch_capacity\":%d}\n",
		   METRICS_WINDOWS * METRICS_WINDOW_S, METRICS_TOP_CAPACITY);
}
