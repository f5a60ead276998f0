/* policy/limits: per-login and per-domain limits, holds, and what a held
 * login's sessions get (limits.h, docs/limits.md). */
#include "config.h"
#include "policy/limits.h"
#include "policy/hold_notice.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/duration.h"
#include "core/log.h"
#include "core/metrics.h"
#include "lookup/table_registry.h"
#include "policy/limits_redis.h"

/* How long a kick is remembered: no session outlives session_timeout's
 * maximum (config.c), so a day is always enough. */
#define LIMITS_KICK_KEEP_MS (24ULL * 3600 * 1000)
/* Counters kept by the memory store, in all. */
#define LIMITS_STORE_ENTRIES 1000000
/* notify_command runs at most this many at a time in the process. */
#define LIMITS_NOTIFY_MAX 16

struct limits_conf {
	struct limits_rules login_msg, login_rcpt, domain_msg, domain_rcpt, client_msg, client_rcpt;
	struct table *maps;                                /* login_limit_maps, or NULL */
	uint64_t hits_count, hits_period;                  /* hold_limit_hits (0: off) */
	uint64_t addrs_count, addrs_period;                /* hold_client_addresses */
	uint64_t refused_pct, refused_min, refused_period; /* hold_refused_recipients */
	uint64_t burst_factor, burst_min, burst_window, burst_history; /* hold_burst */
};

static struct limits_store *limits_store_global;
static pthread_mutex_t limits_reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct list_link limits_reg = {&limits_reg, &limits_reg};
static unsigned limits_reg_n;
static atomic_uint limits_notify_running;

uint64_t limits_now_ms(void)
{
	return uv_hrtime() / 1000000;
}

struct limits_store *limits_store(void)
{
	return limits_store_global;
}

void limits_store_replace(struct limits_store *st)
{
	limits_store_free(&limits_store_global);
	limits_store_global = st;
}

void limits_shutdown(void)
{
	limits_store_free(&limits_store_global);
}

/* ---- parsing ---- */

static bool limits_rule_parse(const char *s, size_t len, uint64_t *count_r, uint64_t *period_r)
{
	char buf[64];
	if (len == 0 || len >= sizeof(buf))
		return false;
	memcpy(buf, s, len);
	buf[len] = '\0';
	char *slash = strchr(buf, '/');
	if (slash == NULL || slash == buf)
		return false;
	*slash = '\0';
	uint64_t c = 0;
	for (const char *p = buf; *p; p++) {
		if (!isdigit((unsigned char)*p) || c > UINT32_MAX)
			return false;
		c = c * 10 + (uint64_t)(*p - '0');
	}
	if (c == 0 || c > UINT32_MAX)
		return false;
	uint64_t ms;
	if (!duration_parse(slash + 1, &ms) || ms < 1000 || ms > 366ULL * 86400 * 1000)
		return false;
	*count_r = c;
	*period_r = ms;
	return true;
}

bool limits_rules_parse(const char *s, struct limits_rules *r, char *err, size_t errlen)
{
	memset(r, 0, sizeof(*r));
	while (*s == ' ' || *s == '\t')
		s++;
	if (strcmp(s, "none") == 0)
		return true;
	for (;;) {
		while (*s == ' ' || *s == '\t')
			s++;
		size_t len = strcspn(s, ",");
		size_t end = len;
		while (end > 0 && (s[end - 1] == ' ' || s[end - 1] == '\t'))
			end--;
		if (r->n == LIMITS_RULES_MAX) {
			snprintf(err, errlen, "at most %d COUNT/PERIOD rules", LIMITS_RULES_MAX);
			return false;
		}
		if (!limits_rule_parse(s, end, &r->r[r->n].count, &r->r[r->n].period_ms)) {
			snprintf(err, errlen,
				 "\"%.*s\" is not COUNT/PERIOD (e.g. 200/1h; PERIOD at least 1s)",
				 (int)(end > 60 ? 60 : end), s);
			return false;
		}
		r->n++;
		if (s[len] == '\0')
			return true;
		s += len + 1;
	}
}

static void limits_period_format(uint64_t ms, char *out, size_t outsz)
{
	static const struct {
		uint64_t ms;
		const char *u;
	} units[] = {{7 * 86400000ULL, "w"},
		     {86400000ULL, "d"},
		     {3600000ULL, "h"},
		     {60000ULL, "m"},
		     {1000ULL, "s"}};
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (ms % units[i].ms == 0) {
			snprintf(out, outsz, "%" PRIu64 "%s", ms / units[i].ms, units[i].u);
			return;
		}
	snprintf(out, outsz, "%" PRIu64 "ms", ms);
}

void limits_rules_format(const struct limits_rules *r, char *out, size_t outsz)
{
	if (r->n == 0) {
		snprintf(out, outsz, "none");
		return;
	}
	size_t o = 0;
	out[0] = '\0';
	for (size_t i = 0; i < r->n && o < outsz; i++) {
		char p[32];
		limits_period_format(r->r[i].period_ms, p, sizeof(p));
		int k = snprintf(out + o, outsz - o, "%s%" PRIu64 "/%s", i ? ", " : "",
				 r->r[i].count, p);
		if (k < 0)
			break;
		o += (size_t)k;
	}
}

bool limits_override_parse(const char *v, struct limits_rules *r_msg, struct limits_rules *r_rcpt)
{
	struct limits_rules m = *r_msg, rc = *r_rcpt;
	char err[128];
	while (*v == ' ' || *v == '\t')
		v++;
	if (strcmp(v, "none") == 0) {
		memset(r_msg, 0, sizeof(*r_msg));
		memset(r_rcpt, 0, sizeof(*r_rcpt));
		return true;
	}
	bool any = false;
	while (*v != '\0') {
		size_t len = strcspn(v, " \t");
		char item[256];
		if (len >= sizeof(item))
			return false;
		memcpy(item, v, len);
		item[len] = '\0';
		char *eq = strchr(item, '=');
		if (eq == NULL)
			return false;
		*eq = '\0';
		struct limits_rules *dst;
		if (strcmp(item, "message") == 0 || strcmp(item, "messages") == 0)
			dst = &m;
		else if (strcmp(item, "recipient") == 0 || strcmp(item, "recipients") == 0)
			dst = &rc;
		else
			return false;
		if (!limits_rules_parse(eq + 1, dst, err, sizeof(err)))
			return false;
		any = true;
		v += len;
		while (*v == ' ' || *v == '\t')
			v++;
	}
	if (!any)
		return false;
	*r_msg = m;
	*r_rcpt = rc;
	return true;
}

/* "COUNT/PERIOD" or none, for the hold rules. */
static bool limits_pair_parse(const char *s, uint64_t *count_r, uint64_t *period_r)
{
	if (strcmp(s, "none") == 0) {
		*count_r = 0;
		return true;
	}
	return limits_rule_parse(s, strlen(s), count_r, period_r);
}

/* Splits "a/b/c[/d]" into parts; true when there are exactly n. */
static bool limits_split(const char *s, char parts[][32], size_t n)
{
	size_t k = 0;
	for (;;) {
		size_t len = strcspn(s, "/");
		if (k == n || len == 0 || len >= 32)
			return false;
		memcpy(parts[k], s, len);
		parts[k][len] = '\0';
		k++;
		if (s[len] == '\0')
			return k == n;
		s += len + 1;
	}
}

static bool limits_uint(const char *s, const char *suffix, uint64_t max, uint64_t *v_r)
{
	size_t n = strlen(s), sl = strlen(suffix);
	if (n <= sl || strcmp(s + n - sl, suffix) != 0)
		return false;
	uint64_t v = 0;
	for (size_t i = 0; i < n - sl; i++) {
		if (!isdigit((unsigned char)s[i]))
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
		if (v > max)
			return false;
	}
	*v_r = v;
	return v > 0;
}

static bool limits_conf_holds(struct limits_conf *lc, const struct config *cfg, char *err,
			      size_t errlen)
{
	if (!limits_pair_parse(cfg->hold_limit_hits, &lc->hits_count, &lc->hits_period)) {
		snprintf(err, errlen, "hold_limit_hits: want COUNT/PERIOD or none");
		return false;
	}
	if (!limits_pair_parse(cfg->hold_client_addresses, &lc->addrs_count, &lc->addrs_period) ||
	    lc->addrs_count >= LIMITS_ADDRS_MAX) {
		snprintf(err, errlen,
			 "hold_client_addresses: want COUNT/PERIOD (COUNT below %d) or none",
			 LIMITS_ADDRS_MAX);
		return false;
	}
	char p[4][32];
	if (strcmp(cfg->hold_refused_recipients, "none") != 0 &&
	    (!limits_split(cfg->hold_refused_recipients, p, 3) ||
	     !limits_uint(p[0], "%", 100, &lc->refused_pct) ||
	     !limits_uint(p[1], "", UINT32_MAX, &lc->refused_min) ||
	     !duration_parse(p[2], &lc->refused_period) || lc->refused_period < 1000)) {
		snprintf(err, errlen, "hold_refused_recipients: want PERCENT%%/MIN/PERIOD or none");
		return false;
	}
	if (strcmp(cfg->hold_burst, "none") != 0 &&
	    (!limits_split(cfg->hold_burst, p, 4) ||
	     !limits_uint(p[0], "x", 100000, &lc->burst_factor) ||
	     !limits_uint(p[1], "", UINT32_MAX, &lc->burst_min) ||
	     !duration_parse(p[2], &lc->burst_window) ||
	     !duration_parse(p[3], &lc->burst_history) || lc->burst_window < 1000 ||
	     lc->burst_history <= lc->burst_window)) {
		snprintf(err, errlen,
			 "hold_burst: want FACTORx/MIN/WINDOW/HISTORY (HISTORY longer than WINDOW) "
			 "or none");
		return false;
	}
	return true;
}

bool limits_conf_load(struct config *cfg, char *err, size_t errlen)
{
	struct limits_conf *lc = xcalloc(1, sizeof(*lc));
	cfg->limits = lc;
	static const struct {
		const char *name;
		size_t cfg_off, lc_off;
	} lists[] = {
		{"login_message_limit", offsetof(struct config, login_message_limit),
		 offsetof(struct limits_conf, login_msg)},
		{"login_recipient_limit", offsetof(struct config, login_recipient_limit),
		 offsetof(struct limits_conf, login_rcpt)},
		{"domain_message_limit", offsetof(struct config, domain_message_limit),
		 offsetof(struct limits_conf, domain_msg)},
		{"domain_recipient_limit", offsetof(struct config, domain_recipient_limit),
		 offsetof(struct limits_conf, domain_rcpt)},
		{"client_message_limit", offsetof(struct config, client_message_limit),
		 offsetof(struct limits_conf, client_msg)},
		{"client_recipient_limit", offsetof(struct config, client_recipient_limit),
		 offsetof(struct limits_conf, client_rcpt)},
	};
	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
		const char *v = *(char **)((char *)cfg + lists[i].cfg_off);
		char why[160];
		if (!limits_rules_parse(v, (struct limits_rules *)((char *)lc + lists[i].lc_off),
					why, sizeof(why))) {
			snprintf(err, errlen, "%s: %s", lists[i].name, why);
			return false;
		}
	}
	if (!hold_notice_conf_check(cfg, err, errlen))
		return false;
	if (!limits_conf_holds(lc, cfg, err, errlen))
		return false;
	bool redis = false;
	char rwhy[200];
	if (!limits_redis_parse(cfg->limit_store, &redis, rwhy, sizeof(rwhy))) {
		snprintf(err, errlen, "limit_store: %s", rwhy);
		return false;
	}
	const char *pfx = cfg->limit_store_prefix;
	for (size_t i = 0; pfx[i] != '\0'; i++)
		if ((unsigned char)pfx[i] <= ' ' || pfx[i] == 0x7f ||
		    i >= LIMITS_REDIS_PREFIX_MAX) {
			snprintf(err, errlen,
				 "limit_store_prefix: at most %d printable characters, no spaces",
				 LIMITS_REDIS_PREFIX_MAX);
			return false;
		}
	if (redis || limits_redis_enabled())
		limits_redis_configure(cfg->limit_store, pfx, cfg->limit_store_timeout_ms,
				       &(struct addrcount_auth_limits){
					       .limit = cfg->auth_ip_failure_limit,
					       .window_ms = cfg->auth_ip_failure_window_ms,
					       .block_ms = cfg->auth_ip_block_time_ms,
				       });
	if (cfg->login_limit_maps != NULL && cfg->login_limit_maps[0] != '\0') {
		char why[512];
		lc->maps = table_open(cfg->login_limit_maps, why, sizeof(why));
		if (lc->maps == NULL) {
			snprintf(err, errlen, "login_limit_maps: %s", why);
			return false;
		}
		struct table_cache_opts co = {
			.positive_ttl_ms = 60000, .negative_ttl_ms = 60000, .max_entries = 10000};
		table_set_cache(lc->maps, &co);
	}
	/* The store outlives snapshots: a reload keeps every counter and hold. */
	if (limits_store_global == NULL)
		limits_store_global = limits_store_memory_new(LIMITS_STORE_ENTRIES);
	return true;
}

void limits_conf_free(struct config *cfg)
{
	if (cfg->limits == NULL)
		return;
	table_free(&cfg->limits->maps);
	free(cfg->limits);
	cfg->limits = NULL;
}

/* ---- holds and notifications ---- */

struct limits_notify {
	uv_process_t proc;
	uv_timer_t timer;
	int open; /* handles not closed yet */
	char login[256];
};

static void limits_notify_closed(uv_handle_t *h)
{
	struct limits_notify *n = h->data;
	if (--n->open == 0) {
		free(n);
		atomic_fetch_sub(&limits_notify_running, 1);
	}
}

static void limits_notify_exit(uv_process_t *p, int64_t status, int sig)
{
	struct limits_notify *n = p->data;
	if (status != 0 || sig != 0)
		log_warn("notify_command for %s: exit status %lld%s%s", n->login, (long long)status,
			 sig ? ", signal " : "", sig ? strsignal(sig) : "");
	uv_timer_stop(&n->timer);
	uv_close((uv_handle_t *)&n->timer, limits_notify_closed);
	uv_close((uv_handle_t *)p, limits_notify_closed);
}

static void limits_notify_timeout(uv_timer_t *t)
{
	struct limits_notify *n = t->data;
	log_warn("notify_command for %s: still running after notify_timeout, killed", n->login);
	uv_process_kill(&n->proc, SIGKILL);
}

/* Runs notify_command LOGIN REASON FIGURES CLIENT on loop; never waits. */
static void limits_notify(uv_loop_t *loop, const struct config *cfg, const struct limits_hold *h,
			  const char *figures)
{
	if (cfg->notify_command == NULL || cfg->notify_command[0] == '\0')
		return;
	if (atomic_fetch_add(&limits_notify_running, 1) >= LIMITS_NOTIFY_MAX) {
		atomic_fetch_sub(&limits_notify_running, 1);
		log_warn("notify_command for %s: %d already running, not started", h->login,
			 LIMITS_NOTIFY_MAX);
		return;
	}
	struct limits_notify *n = xcalloc(1, sizeof(*n));
	snprintf(n->login, sizeof(n->login), "%s", h->login);
	char *args[] = {cfg->notify_command,
			(char *)h->login,
			(char *)h->reason,
			(char *)figures,
			(char *)(h->client[0] ? h->client : "-"),
			NULL};
	uv_stdio_container_t io[3] = {
		{.flags = UV_IGNORE}, {.flags = UV_IGNORE}, {.flags = UV_IGNORE}};
	uv_process_options_t o = {
		.exit_cb = limits_notify_exit,
		.file = cfg->notify_command,
		.args = args,
		.stdio = io,
		.stdio_count = 3,
	};
	n->proc.data = n;
	n->timer.data = n;
	int r = uv_spawn(loop, &n->proc, &o);
	if (r != 0) {
		log_warn("notify_command %s: cannot run: %s", cfg->notify_command, uv_strerror(r));
		n->open = 1;
		uv_close((uv_handle_t *)&n->proc, limits_notify_closed);
		return;
	}
	n->open = 2;
	uv_timer_init(loop, &n->timer);
	uv_timer_start(&n->timer, limits_notify_timeout, cfg->notify_timeout_ms, 0);
}

/* Holds login; the one thread that sets it logs and notifies. */
/* Set while the store has no room for a hold, so the error is logged once
 * per episode; the next hold that fits clears it. */
static atomic_bool limits_hold_full_logged;

static enum limits_hold_result limits_hold_login(uv_loop_t *loop, const struct config *cfg,
						 const char *login, const char *reason,
						 const char *figures, const char *client)
{
	struct limits_hold h;
	memset(&h, 0, sizeof(h));
	snprintf(h.login, sizeof(h.login), "%s", login);
	snprintf(h.reason, sizeof(h.reason), "%s", reason);
	snprintf(h.note, sizeof(h.note), "%s", figures);
	snprintf(h.client, sizeof(h.client), "%s", client != NULL ? client : "");
	h.since = time(NULL);
	h.until = cfg->hold_time_ms ? h.since + (time_t)((cfg->hold_time_ms + 999) / 1000) : 0;
	struct limits_store *st = limits_store_global;
	uint64_t now = limits_now_ms();
	if (!st->ops->hold_set(st, &h, now)) {
		if (st->ops->hold_get(st, login, now, NULL))
			return LIMITS_HOLD_ALREADY;
		/* hold_set refuses only a login held already or a full store. */
		if (!atomic_exchange(&limits_hold_full_logged, true))
			log_err("hold: the limits store is full; login=<%s> reason=%s not held "
				"(and "
				"further holds are dropped until there is room)",
				login, reason);
		return LIMITS_HOLD_FULL;
	}
	atomic_store(&limits_hold_full_logged, false);
	metrics_inc(METRICS_LIMIT_HOLD);
	char until[32] = "released";
	if (h.until != 0) {
		struct tm tm;
		gmtime_r(&h.until, &tm);
		strftime(until, sizeof(until), "%Y-%m-%dT%H:%M:%SZ", &tm);
	}
	/* One line per hold, fixed fields first (conf/fail2ban/filter.d/submitd-hold.conf). */
	log_warn("hold: client=[%s] login=<%s> reason=%s until=%s: %s",
		 h.client[0] ? h.client : "-", login, reason, until, figures);
	limits_redis_hold(&h);
	limits_notify(loop, cfg, &h, figures);
	hold_notice_send(loop, cfg, &h);
	return LIMITS_HOLD_SET;
}

enum limits_hold_result limits_hold_manual(uv_loop_t *loop, const struct config *cfg,
					   const char *login, const char *reason)
{
	if (limits_store_global == NULL)
		return LIMITS_HOLD_FULL;
	return limits_hold_login(loop, cfg, login, "manual", reason, NULL);
}

bool limits_release(const char *login)
{
	if (limits_store_global == NULL)
		return false;
	limits_redis_release(login); /* held elsewhere too, maybe */
	if (!limits_store_global->ops->hold_clear(limits_store_global, login))
		return false;
	log_info("hold released: login=<%s>", login);
	return true;
}

bool limits_block(const char *addr, const char *reason)
{
	if (limits_store_global == NULL)
		return false;
	struct limits_block b;
	memset(&b, 0, sizeof(b));
	snprintf(b.addr, sizeof(b.addr), "%s", addr);
	snprintf(b.reason, sizeof(b.reason), "%s", reason);
	b.since = time(NULL);
	if (!limits_store_global->ops->block_set(limits_store_global, &b))
		return false;
	limits_redis_block(&b);
	log_warn("block: client=[%s]: %s", addr, reason);
	return true;
}

bool limits_unblock(const char *addr)
{
	if (limits_store_global == NULL)
		return false;
	limits_redis_unblock(addr);
	if (!limits_store_global->ops->block_clear(limits_store_global, addr))
		return false;
	log_info("block released: client=[%s]", addr);
	return true;
}

/* ---- the session registry ---- */

/* A session's login before AUTH: never freed. */
static const char limits_no_login[] = "";

void limits_session_start(struct limits_session *ls, const char *id, const char *ip,
			  unsigned worker)
{
	memset(ls, 0, sizeof(*ls));
	ls->login = limits_no_login;
	snprintf(ls->id, sizeof(ls->id), "%s", id);
	snprintf(ls->ip, sizeof(ls->ip), "%s", ip);
	ls->worker = worker;
	ls->started = time(NULL);
	ls->gen_seen = UINT64_MAX; /* the first command looks */
	pthread_mutex_lock(&limits_reg_lock);
	list_add_tail(&limits_reg, &ls->link);
	limits_reg_n++;
	pthread_mutex_unlock(&limits_reg_lock);
}

void limits_session_end(struct limits_session *ls)
{
	free(ls->rules);
	ls->rules = NULL;
	limits_redis_cancel(&ls->rreq);
	free(ls->rshare);
	ls->rshare = NULL;
	if (ls->req != NULL) {
		table_cancel(&ls->req);
		table_registry_put(ls->tables, &ls->ti);
	}
	pthread_mutex_lock(&limits_reg_lock);
	if (list_linked(&ls->link)) {
		list_remove(&ls->link);
		limits_reg_n--;
	}
	pthread_mutex_unlock(&limits_reg_lock);
	if (ls->login != limits_no_login)
		free((char *)ls->login);
	ls->login = limits_no_login;
}

void limits_session_each(limits_session_each_cb *cb, void *ctx)
{
	/* Copied under the lock, reported without it. */
	pthread_mutex_lock(&limits_reg_lock);
	size_t n = limits_reg_n, k = 0;
	struct limits_session_info *all = xcalloc(n + 1, sizeof(*all));
	struct list_link *pos, *tmp;
	list_for_each_safe(pos, tmp, &limits_reg)
	{
		struct limits_session *ls = list_entry(pos, struct limits_session, link);
		if (k == n)
			break;
		struct limits_session_info *i = &all[k++];
		memcpy(i->id, ls->id, sizeof(i->id));
		snprintf(i->ip, sizeof(i->ip), "%s", ls->ip);
		snprintf(i->login, sizeof(i->login), "%s", ls->login);
		i->worker = ls->worker;
		i->started = ls->started;
	}
	pthread_mutex_unlock(&limits_reg_lock);
	for (size_t i = 0; i < k; i++)
		cb(ctx, &all[i]);
	free(all);
}

unsigned limits_session_count(void)
{
	pthread_mutex_lock(&limits_reg_lock);
	unsigned n = limits_reg_n;
	pthread_mutex_unlock(&limits_reg_lock);
	return n;
}

unsigned limits_kick(const char *login)
{
	if (limits_store_global == NULL)
		return 0;
	limits_store_global->ops->kick(limits_store_global, login, limits_now_ms(),
				       LIMITS_KICK_KEEP_MS);
	limits_redis_kick(login);
	unsigned n = 0;
	pthread_mutex_lock(&limits_reg_lock);
	struct list_link *pos, *tmp;
	list_for_each_safe(pos, tmp, &limits_reg)
	{
		struct limits_session *ls = list_entry(pos, struct limits_session, link);
		if (strcmp(ls->login, login) == 0)
			n++;
	}
	pthread_mutex_unlock(&limits_reg_lock);
	log_info("kick: login=<%s>: %u open session%s end at their next command", login, n,
		 n == 1 ? "" : "s");
	return n;
}

/* A held login's MAIL and end of message. */
static const char limits_held_text[] =
	"Error: sending is suspended for this account; contact your postmaster";

bool limits_session_admit(struct limits_session *ls, char *why, size_t whylen)
{
	struct limits_store *st = limits_store_global;
	if (st == NULL)
		return true;
	uint64_t g = atomic_load(&st->generation);
	if (g == ls->gen_seen)
		return true;
	ls->gen_seen = g;
	if (st->ops->block_get(st, ls->ip)) {
		snprintf(why, whylen, "Error: access from your address is blocked");
		return false;
	}
	if (ls->login[0] == '\0')
		return true;
	uint64_t now = limits_now_ms();
	uint64_t kicked = st->ops->kicked_at(st, ls->login, now);
	if (kicked != 0 && kicked >= ls->login_ms) {
		snprintf(why, whylen, "Error: session ended by the administrator");
		return false;
	}
	struct limits_hold h;
	if (st->ops->hold_get(st, ls->login, now, &h) && h.since_ms >= ls->login_ms) {
		snprintf(why, whylen, "Error: sending is suspended for this account");
		return false;
	}
	return true;
}

bool limits_session_data_end(struct limits_session *ls, struct smtp_reply *r)
{
	struct limits_store *st = limits_store_global;
	/* Nothing was held, kicked or blocked since the DATA command's admit. */
	if (st == NULL || atomic_load(&st->generation) == ls->gen_seen)
		return true;
	memset(r, 0, sizeof(*r));
	uint64_t now = limits_now_ms();
	if (st->ops->block_get(st, ls->ip)) {
		r->code = 421;
		snprintf(r->text, sizeof(r->text), "Error: access from your address is blocked");
	} else if (ls->login[0] == '\0') {
		return true;
	} else {
		uint64_t kicked = st->ops->kicked_at(st, ls->login, now);
		if (kicked != 0 && kicked >= ls->login_ms) {
			r->code = 421;
			snprintf(r->text, sizeof(r->text),
				 "Error: session ended by the administrator");
		} else if (st->ops->hold_get(st, ls->login, now, NULL)) {
			r->code = 554;
			snprintf(r->enh, sizeof(r->enh), "5.7.1");
			snprintf(r->text, sizeof(r->text), "%s", limits_held_text);
			log_info("%s: END-OF-MESSAGE: login <%s> is held", ls->id, ls->login);
			metrics_inc(METRICS_MSG_HOLD);
			return false;
		} else {
			return true;
		}
	}
	snprintf(r->enh, sizeof(r->enh), "4.7.1");
	return false;
}

static void limits_lower(char *dst, size_t dstsz, const char *src)
{
	size_t i = 0;
	for (; src[i] != '\0' && i + 1 < dstsz; i++)
		dst[i] = (char)tolower((unsigned char)src[i]);
	dst[i] = '\0';
}

void limits_session_login(struct limits_session *ls, const struct config *cfg, uv_loop_t *loop,
			  const char *login)
{
	size_t len = strnlen(login, 255); /* the longest login limits keep */
	char *low = xmalloc(len + 1);
	limits_lower(low, len + 1, login);
	pthread_mutex_lock(&limits_reg_lock); /* limits_session_each() reads it */
	const char *old = ls->login;
	ls->login = low;
	pthread_mutex_unlock(&limits_reg_lock);
	if (old != limits_no_login)
		free((char *)old);
	ls->login_ms = limits_now_ms();
	ls->have_rules = false;
	const struct limits_conf *lc = cfg->limits;
	struct limits_store *st = limits_store_global;
	if (lc == NULL || st == NULL || lc->addrs_count == 0)
		return;
	/* An IPv6 client is its network (ipv6_client_prefix, /64 by default):
	   privacy addresses change within it and are one client. */
	char net[INET6_ADDRSTRLEN + 8];
	unsigned char a6[16];
	snprintf(net, sizeof(net), "%s", ls->ip);
	if (strchr(ls->ip, ':') != NULL && inet_pton(AF_INET6, ls->ip, a6) == 1) {
		unsigned prefix = cfg->ipv6_client_prefix;
		for (unsigned i = 0; i < 16; i++) {
			unsigned bits = prefix > i * 8 ? prefix - i * 8 : 0;
			if (bits < 8)
				a6[i] &= (unsigned char)(0xff00 >> bits);
		}
		char masked[INET6_ADDRSTRLEN];
		inet_ntop(AF_INET6, a6, masked, sizeof(masked));
		snprintf(net, sizeof(net), "%s/%u", masked, prefix);
	}
	unsigned n = st->ops->addr_seen(st, ls->login, net, lc->addrs_period, ls->login_ms);
	if (n > lc->addrs_count) {
		char fig[160], per[32];
		limits_period_format(lc->addrs_period, per, sizeof(per));
		snprintf(fig, sizeof(fig),
			 "%u client addresses within %s (hold_client_addresses %" PRIu64 "/%s)", n,
			 per, lc->addrs_count, per);
		limits_hold_login(loop, cfg, ls->login, "client_addresses", fig, ls->ip);
	}
}

/* ---- MAIL and RCPT ---- */

static const char *limits_domain(const char *login)
{
	const char *at = strrchr(login, '@');
	return at != NULL && at[1] != '\0' ? at + 1 : NULL;
}

/* A limit was hit: counts toward hold_limit_hits. */
static void limits_hit(struct limits_session *ls, const struct config *cfg, uv_loop_t *loop)
{
	const struct limits_conf *lc = cfg->limits;
	struct limits_store *st = limits_store_global;
	if (ls->login[0] == '\0' || lc->hits_count == 0)
		return;
	char key[LIMITS_KEY_MAX + 1];
	snprintf(key, sizeof(key), "hits|%s", ls->login);
	uint64_t n = st->ops->add(st, key, lc->hits_period, 1, limits_now_ms());
	if (n >= lc->hits_count) {
		char fig[160], per[32];
		limits_period_format(lc->hits_period, per, sizeof(per));
		snprintf(fig, sizeof(fig),
			 "%" PRIu64 " limit refusals within %s (hold_limit_hits %" PRIu64 "/%s)", n,
			 per, lc->hits_count, per);
		limits_hold_login(loop, cfg, ls->login, "limit_hits", fig, ls->ip);
	}
}

/* The rules that apply to one message or recipient of the session. */
struct limits_asks {
	struct limits_ask a[2 * LIMITS_RULES_MAX];
	const char *names[2 * LIMITS_RULES_MAX];
	char keys[2][LIMITS_KEY_MAX + 1];
	size_t n, own; /* asks[0..own) are the login's (or address's) own */
};

static void limits_asks(const struct limits_session *ls, const struct config *cfg, bool rcpt,
			struct limits_asks *q)
{
	const struct limits_conf *lc = cfg->limits;
	struct limits_ask *asks = q->a;
	const char **names = q->names;
	char(*keys)[LIMITS_KEY_MAX + 1] = q->keys;
	size_t n = 0;
	const char *kind = rcpt ? "r" : "m";
	bool login = ls->login[0] != '\0';
	const struct limits_rules *own = ls->have_rules ? &ls->rules[rcpt ? 1 : 0]
					 : login        ? (rcpt ? &lc->login_rcpt : &lc->login_msg)
						 : (rcpt ? &lc->client_rcpt : &lc->client_msg);
	const char *own_name = login ? (rcpt ? "login_recipient_limit" : "login_message_limit")
				     : (rcpt ? "client_recipient_limit" : "client_message_limit");
	if (login)
		snprintf(keys[0], sizeof(keys[0]), "%s|l|%s", kind, ls->login);
	else
		snprintf(keys[0], sizeof(keys[0]), "%s|a|%s", kind, ls->ip);
	for (size_t i = 0; i < own->n; i++) {
		asks[n] = (struct limits_ask){keys[0], own->r[i].count, own->r[i].period_ms};
		names[n++] = own_name;
	}
	const char *dom = ls->login[0] != '\0' ? limits_domain(ls->login) : NULL;
	const struct limits_rules *dr = rcpt ? &lc->domain_rcpt : &lc->domain_msg;
	if (dom != NULL) {
		snprintf(keys[1], sizeof(keys[1]), "%s|d|%s", kind, dom);
		for (size_t i = 0; i < dr->n; i++) {
			asks[n] = (struct limits_ask){keys[1], dr->r[i].count, dr->r[i].period_ms};
			names[n++] = rcpt ? "domain_recipient_limit" : "domain_message_limit";
		}
	}
	q->n = n;
	q->own = own->n;
}

/* Rule which of q is over (free in wait ms): the 450 in r. */
static void limits_refuse(struct limits_session *ls, const struct config *cfg, uv_loop_t *loop,
			  bool rcpt, const struct limits_asks *q, size_t which, uint64_t wait,
			  struct smtp_reply *r)
{
	const struct limits_ask *asks = q->a;
	const char *const *names = q->names;
	char per[32];
	limits_period_format(asks[which].period_ms, per, sizeof(per));
	uint64_t secs = wait == UINT64_MAX ? asks[which].period_ms / 1000 : (wait + 999) / 1000;
	r->code = 450;
	snprintf(r->enh, sizeof(r->enh), "4.7.1");
	snprintf(r->text, sizeof(r->text),
		 "Error: %s %" PRIu64 "/%s reached, try again in %" PRIu64 " s", names[which],
		 asks[which].count, per, secs);
	metrics_inc(rcpt ? METRICS_LIMIT_RECIPIENTS : METRICS_LIMIT_MESSAGES);
	metrics_inc(rcpt ? METRICS_RCPT_LIMIT : METRICS_MSG_LIMIT);
	log_info("%s: %s: %s %" PRIu64 "/%s reached for %s, frees up in %" PRIu64 " s", ls->id,
		 rcpt ? "RCPT" : "MAIL", names[which], asks[which].count, per,
		 ls->login[0] ? ls->login : ls->ip, secs);
	/* Only the login's own rules count toward hold_limit_hits: a domain
	   limit another login used up says nothing about this one. */
	if (which < q->own)
		limits_hit(ls, cfg, loop);
}

/* Takes one message or recipient from every rule that applies; false with
 * the 450 in r. */
static bool limits_take(struct limits_session *ls, const struct config *cfg, uv_loop_t *loop,
			bool rcpt, struct smtp_reply *r)
{
	struct limits_store *st = limits_store_global;
	struct limits_asks q;
	limits_asks(ls, cfg, rcpt, &q);
	size_t which = 0;
	uint64_t wait = 0;
	if (q.n == 0 || st->ops->take(st, q.a, q.n, 1, limits_now_ms(), &which, &wait))
		return true;
	limits_refuse(ls, cfg, loop, rcpt, &q, which, wait, r);
	return false;
}

/* hold_burst: messages within WINDOW against the login's own rate over
 * HISTORY. Called for each accepted message. */
static void limits_burst(struct limits_session *ls, const struct config *cfg, uv_loop_t *loop)
{
	const struct limits_conf *lc = cfg->limits;
	struct limits_store *st = limits_store_global;
	if (ls->login[0] == '\0' || lc->burst_factor == 0)
		return;
	char key[LIMITS_KEY_MAX + 1];
	snprintf(key, sizeof(key), "burst|%s", ls->login);
	uint64_t now = limits_now_ms();
	uint64_t s = st->ops->add(st, key, lc->burst_window, 1, now);
	uint64_t l = st->ops->add(st, key, lc->burst_history, 1, now);
	/* The usual count per WINDOW over the rest of HISTORY. */
	uint64_t before = l > s ? l - s : 0;
	double usual = (double)before * (double)lc->burst_window /
		       (double)(lc->burst_history - lc->burst_window);
	if (usual < 1)
		usual = 1;
	if (s < lc->burst_min || (double)s <= usual * (double)lc->burst_factor)
		return;
	char fig[200], w[32], h[32];
	limits_period_format(lc->burst_window, w, sizeof(w));
	limits_period_format(lc->burst_history, h, sizeof(h));
	snprintf(fig, sizeof(fig),
		 "%" PRIu64 " messages within %s, usually %.1f per %s over %s "
		 "(hold_burst %" PRIu64 "x/%" PRIu64 "/%s/%s)",
		 s, w,
		 (double)before * (double)lc->burst_window /
			 (double)(lc->burst_history - lc->burst_window),
		 w, h, lc->burst_factor, lc->burst_min, w, h);
	limits_hold_login(loop, cfg, ls->login, "burst", fig, ls->ip);
}

static void limits_mail_held(struct limits_session *ls, struct smtp_reply *r)
{
	r->code = 554;
	snprintf(r->enh, sizeof(r->enh), "5.7.1");
	snprintf(r->text, sizeof(r->text), "%s", limits_held_text);
	log_info("%s: MAIL: login <%s> is held", ls->id, ls->login);
	metrics_inc(METRICS_MSG_HOLD);
}

static void limits_mail_ok(struct limits_session *ls, const struct config *cfg, uv_loop_t *loop,
			   struct smtp_reply *r)
{
	limits_burst(ls, cfg, loop);
	r->code = 250;
	snprintf(r->enh, sizeof(r->enh), "2.1.0");
	snprintf(r->text, sizeof(r->text), "Ok");
}

/* What the shared store counted for the recipient rules at this
 * transaction's MAIL; RCPT decides on it plus what the transaction took
 * since (docs/limits.md "Recipients across instances"). */
struct limits_rshare {
	bool valid;
	size_t n;
	uint64_t used[2 * LIMITS_RULES_MAX], wait[2 * LIMITS_RULES_MAX];
	uint64_t taken;
};

static void limits_rshare_set(struct limits_session *ls, const struct limits_redis_verdict *v)
{
	if (v->rn == 0 || v->rn > 2 * LIMITS_RULES_MAX)
		return;
	if (ls->rshare == NULL)
		ls->rshare = xcalloc(1, sizeof(*ls->rshare));
	struct limits_rshare *rs = ls->rshare;
	rs->valid = true;
	rs->n = v->rn;
	rs->taken = 0;
	memcpy(rs->used, v->rused, v->rn * sizeof(rs->used[0]));
	memcpy(rs->wait, v->rwait, v->rn * sizeof(rs->wait[0]));
}

/* The shared store answered MAIL (limits_redis.h): its verdict, kept in
 * the memory store too, so that an outage starts from this instance's own
 * counts and known holds. No answer: the memory store decides. */
static void limits_redis_mail_cb(void *ctx, bool ok, const struct limits_redis_verdict *v)
{
	struct limits_session *ls = ctx;
	ls->rreq = NULL;
	const struct config *cfg = ls->cfg;
	struct limits_store *st = limits_store_global;
	struct smtp_reply r;
	memset(&r, 0, sizeof(r));
	uint64_t now = limits_now_ms();
	struct limits_asks q;
	limits_asks(ls, cfg, false, &q);
	if (!ok) {
		if (limits_take(ls, cfg, ls->loop, false, &r))
			limits_mail_ok(ls, cfg, ls->loop, &r);
	} else if (v->blocked) {
		struct limits_block b;
		memset(&b, 0, sizeof(b));
		snprintf(b.addr, sizeof(b.addr), "%s", ls->ip);
		snprintf(b.reason, sizeof(b.reason), "blocked on another instance");
		b.since = time(NULL);
		st->ops->block_set(st, &b); /* the next command ends the session */
		r.code = 554;
		snprintf(r.enh, sizeof(r.enh), "5.7.1");
		snprintf(r.text, sizeof(r.text), "Error: access from your address is blocked");
	} else if (v->held && ls->login[0] != '\0') {
		struct limits_hold h = v->hold;
		snprintf(h.login, sizeof(h.login), "%s", ls->login);
		if (st->ops->hold_set(st, &h, now))
			log_info("limit_store: login=<%s> held by another instance: reason=%s",
				 h.login, h.reason);
		limits_mail_held(ls, &r);
	} else if (v->over) {
		limits_refuse(ls, cfg, ls->loop, false, &q, v->which, v->wait_ms, &r);
	} else {
		for (size_t i = 0; i < q.n; i++)
			st->ops->add(st, q.a[i].key, q.a[i].period_ms, 1, now);
		limits_rshare_set(ls, v);
		limits_mail_ok(ls, cfg, ls->loop, &r);
	}
	ls->cb(ls->cb_ctx, &r);
}

/* The MAIL verdict once the login's rules are known: true when it is in r
 * now; false when the shared store was asked (its answer goes to ls->cb). */
static bool limits_mail_decide(struct limits_session *ls, const struct config *cfg, uv_loop_t *loop,
			       struct smtp_reply *r)
{
	struct limits_store *st = limits_store_global;
	if (ls->login[0] != '\0' && st->ops->hold_get(st, ls->login, limits_now_ms(), NULL)) {
		limits_mail_held(ls, r);
		return true;
	}
	if (limits_redis_enabled()) {
		struct limits_asks q, rq;
		limits_asks(ls, cfg, false, &q);
		limits_asks(ls, cfg, true, &rq);
		ls->rreq = limits_redis_take(ls->login, ls->ip, q.a, q.n, rq.a, rq.n, 1,
					     limits_redis_mail_cb, ls);
		if (ls->rreq != NULL)
			return false;
	}
	if (limits_take(ls, cfg, loop, false, r))
		limits_mail_ok(ls, cfg, loop, r);
	return true;
}

static void limits_lookup_cb(void *ctx, enum table_status status, const char *value)
{
	struct limits_session *ls = ctx;
	ls->req = NULL;
	table_registry_put(ls->tables, &ls->ti);
	const struct config *cfg = ls->cfg;
	const struct limits_conf *lc = cfg->limits;
	struct smtp_reply r;
	memset(&r, 0, sizeof(r));
	bool login = ls->login[0] != '\0';
	if (ls->rules == NULL)
		ls->rules = xmalloc(2 * sizeof(*ls->rules));
	ls->rules[0] = login ? lc->login_msg : lc->client_msg;
	ls->rules[1] = login ? lc->login_rcpt : lc->client_rcpt;
	if (status == TABLE_TEMPFAIL) {
		r.code = 451;
		snprintf(r.enh, sizeof(r.enh), "4.3.0");
		snprintf(r.text, sizeof(r.text), "Error: temporary lookup failure");
		log_warn("%s: login_limit_maps: temporary failure for %s", ls->id,
			 ls->login[0] ? ls->login : ls->ip);
	} else {
		if (status == TABLE_OK &&
		    !limits_override_parse(value, &ls->rules[0], &ls->rules[1])) {
			log_warn("%s: login_limit_maps: bad value for %s, using the defaults: "
				 "\"%s\"",
				 ls->id, ls->login[0] ? ls->login : ls->ip, value);
			ls->rules[0] = login ? lc->login_msg : lc->client_msg;
			ls->rules[1] = login ? lc->login_rcpt : lc->client_rcpt;
		}
		ls->have_rules = true;
		if (!limits_mail_decide(ls, cfg, ls->loop, &r))
			return; /* the shared store answers */
	}
	ls->cb(ls->cb_ctx, &r);
}

bool limits_mail(struct limits_session *ls, const struct config *cfg, struct table_registry *tables,
		 bool anonymous, limits_cb *cb, void *ctx, struct smtp_reply *r)
{
	uv_loop_t *loop = table_registry_loop(tables);
	memset(r, 0, sizeof(*r));
	ls->anonymous = anonymous;
	if (ls->rshare != NULL)
		ls->rshare->valid = false; /* until the shared store answers this MAIL */
	const struct limits_conf *lc = cfg->limits;
	if (lc == NULL || limits_store_global == NULL) {
		r->code = 250;
		snprintf(r->enh, sizeof(r->enh), "2.1.0");
		snprintf(r->text, sizeof(r->text), "Ok");
		return true;
	}
	bool known = lc->maps == NULL || (ls->have_rules && ls->cfg == cfg);
	ls->cfg = cfg;
	ls->loop = loop;
	ls->cb = cb;
	ls->cb_ctx = ctx;
	if (known)
		return limits_mail_decide(ls, cfg, loop, r);
	ls->tables = tables;
	ls->ti = table_registry_get(tables, (struct config *)cfg, lc->maps);
	ls->req = table_lookup(ls->ti, ls->login[0] ? ls->login : ls->ip, limits_lookup_cb, ls);
	return false;
}

bool limits_rcpt(struct limits_session *ls, const struct config *cfg, uv_loop_t *loop,
		 struct smtp_reply *r)
{
	if (cfg->limits == NULL || limits_store_global == NULL)
		return true;
	struct limits_rshare *rs = ls->rshare;
	if (rs == NULL || !rs->valid)
		return limits_take(ls, cfg, loop, true, r);
	/* Redis' count at MAIL plus what this transaction took since, then
	   the memory store (this instance's other transactions). */
	struct limits_asks q;
	limits_asks(ls, cfg, true, &q);
	if (q.n != rs->n)
		return limits_take(ls, cfg, loop, true, r);
	for (size_t i = 0; i < q.n; i++)
		if (rs->used[i] + rs->taken + 1 > q.a[i].count) {
			limits_refuse(ls, cfg, loop, true, &q, i,
				      rs->wait[i] != 0 ? rs->wait[i] : UINT64_MAX, r);
			return false;
		}
	if (!limits_take(ls, cfg, loop, true, r))
		return false;
	rs->taken++;
	limits_redis_add(q.a, q.n, 1);
	return true;
}

void limits_rcpt_result(struct limits_session *ls, const struct config *cfg, uv_loop_t *loop,
			int code)
{
	const struct limits_conf *lc = cfg->limits;
	struct limits_store *st = limits_store_global;
	if (lc == NULL || st == NULL || ls->login[0] == '\0' || lc->refused_pct == 0)
		return;
	char kt[LIMITS_KEY_MAX + 1], kr[LIMITS_KEY_MAX + 1];
	snprintf(kt, sizeof(kt), "rcpt-tried|%s", ls->login);
	snprintf(kr, sizeof(kr), "rcpt-refused|%s", ls->login);
	uint64_t now = limits_now_ms();
	uint64_t tried = st->ops->add(st, kt, lc->refused_period, 1, now);
	if (code < 500)
		return;
	uint64_t refused = st->ops->add(st, kr, lc->refused_period, 1, now);
	if (tried < lc->refused_min || refused * 100 < lc->refused_pct * tried)
		return;
	char fig[200], per[32];
	limits_period_format(lc->refused_period, per, sizeof(per));
	snprintf(fig, sizeof(fig),
		 "%" PRIu64 " of %" PRIu64 " recipients refused downstream within %s "
		 "(hold_refused_recipients %" PRIu64 "%%/%" PRIu64 "/%s)",
		 refused, tried, per, lc->refused_pct, lc->refused_min, per);
	limits_hold_login(loop, cfg, ls->login, "refused_recipients", fig, ls->ip);
}

void limits_usage_each(const struct config *cfg, const char *login, limits_usage_cb *cb, void *ctx)
{
	const struct limits_conf *lc = cfg->limits;
	struct limits_store *st = limits_store_global;
	if (lc == NULL || st == NULL)
		return;
	char low[256];
	limits_lower(low, sizeof(low), login);
	const char *dom = limits_domain(low);
	const struct {
		const char *what, *kind, *scope;
		const struct limits_rules *r;
	} all[] = {
		{"login_message_limit", "m", "l", &lc->login_msg},
		{"login_recipient_limit", "r", "l", &lc->login_rcpt},
		{"domain_message_limit", "m", "d", &lc->domain_msg},
		{"domain_recipient_limit", "r", "d", &lc->domain_rcpt},
	};
	uint64_t now = limits_now_ms();
	for (size_t k = 0; k < sizeof(all) / sizeof(all[0]); k++) {
		const char *name = all[k].scope[0] == 'l' ? low : dom;
		if (name == NULL)
			continue;
		char key[LIMITS_KEY_MAX + 1];
		snprintf(key, sizeof(key), "%s|%s|%s", all[k].kind, all[k].scope, name);
		for (size_t i = 0; i < all[k].r->n; i++) {
			struct limits_usage u = {.what = all[k].what,
						 .count = all[k].r->r[i].count,
						 .period_ms = all[k].r->r[i].period_ms};
			u.used = st->ops->peek(st, key, u.period_ms, u.count, now, &u.wait_ms);
			cb(ctx, &u);
		}
	}
}
