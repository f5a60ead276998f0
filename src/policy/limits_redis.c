/* policy/limits_redis: limits, holds, blocks, kicks and AUTH failures
 * shared through Redis (limits_redis.h, docs/limits.md "Redis"). */
#include "config.h"
#include "policy/limits_redis.h"

#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/metrics.h"
#include "policy/limits.h"

_Static_assert(2 * LIMITS_RULES_MAX <= LIMITS_REDIS_RULES_MAX, "rules of one kind");

#define LR_BACKOFF_MIN_MS 100
#define LR_BACKOFF_MAX_MS 5000
#define LR_PENDING_MAX 4096 /* calls in flight on one connection */
#define LR_EVENT_MAX 1024   /* one event line */
#define LR_KEY_MAX (LIMITS_REDIS_PREFIX_MAX + 32 + LIMITS_KEY_MAX)
/* What a reply may hold (hiredis 0.14 sets no bound of its own): the
 * widest is the MAIL script's, the longest string an event line or an
 * error; nothing we send is answered with nested arrays. */
#define LR_REPLY_ELEMENTS_MAX 64
#define LR_REPLY_STRING_MAX 4096
/* Unparsed bytes in a connection's reader: more is a reply over the bounds
 * above still arriving (a bulk string is parsed only once complete). */
#define LR_READ_MAX 65536

/* The MAIL decision, one round trip (docs/limits.md "Redis").
 * KEYS[1] the hold, KEYS[2] the block, KEYS[3..n+2] one counter per message
 * rule, then one per recipient rule (read only); ARGV[1] amount, ARGV[2] n,
 * then COUNT and PERIOD (ms) per message rule, then PERIOD per recipient
 * rule. A counter is a hash of slot index -> count over 61 slots of
 * ceil(PERIOD/60), like struct limits_win; the time is Redis's, the same
 * for every instance. A slot past now (Redis' clock stepped back) is
 * dropped: a step back forgets counts rather than keeping a login refused
 * for the length of the step. */
static const char lr_script[] =
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
	"local S = 60\n"
	"local n = tonumber(ARGV[2])\n"
	"local function scan(key, period)\n"
	"  local slot = math.ceil(period / S)\n"
	"  local head = math.floor(now / slot)\n"
	"  local f = redis.call('HGETALL', key)\n"
	"  local used, live = 0, {}\n"
	"  for j = 1, #f, 2 do\n"
	"    local idx, c = tonumber(f[j]), tonumber(f[j + 1]) or 0\n"
	"    if idx == nil or idx < head - S or idx > head then\n"
	"      redis.call('HDEL', key, f[j])\n"
	"    else\n"
	"      used = used + c\n"
	"      live[#live + 1] = {idx, c}\n"
	"    end\n"
	"  end\n"
	"  table.sort(live, function(a, b) return a[1] < b[1] end)\n"
	"  return used, live, slot, head\n"
	"end\n"
	"local rc = {}\n"
	"for i = 1, #KEYS - 2 - n do\n"
	"  local used, live, slot = scan(KEYS[i + 2 + n], tonumber(ARGV[2 * n + 2 + i]))\n"
	"  local wait = 0\n"
	"  if #live > 0 then wait = math.max((live[1][1] + S + 1) * slot - now, 1) end\n"
	"  rc[#rc + 1] = used\n"
	"  rc[#rc + 1] = wait\n"
	"end\n"
	"local function answer(r)\n"
	"  for _, x in ipairs(rc) do r[#r + 1] = x end\n"
	"  return r\n"
	"end\n"
	"local blocked = redis.call('EXISTS', KEYS[2])\n"
	"local h = redis.call('HMGET', KEYS[1], 'reason', 'note', 'client', 'until')\n"
	"if h[1] then\n"
	"  return answer({0, 0, 0, 1, h[1], h[2] or '', h[3] or '', tonumber(h[4]) or 0, "
	"blocked})\n"
	"end\n"
	"local amount = tonumber(ARGV[1])\n"
	"local heads = {}\n"
	"for i = 1, n do\n"
	"  local count = tonumber(ARGV[2 * i + 1])\n"
	"  local used, live, slot, head = scan(KEYS[i + 2], tonumber(ARGV[2 * i + 2]))\n"
	"  heads[i] = head\n"
	"  if used + amount > count then\n"
	"    if amount > count then return answer({1, i - 1, -1, 0, '', '', '', 0, blocked}) end\n"
	"    local need, freed, wait = used + amount - count, 0, (S + 1) * slot\n"
	"    for _, e in ipairs(live) do\n"
	"      freed = freed + e[2]\n"
	"      if freed >= need then\n"
	"        wait = (e[1] + S + 1) * slot - now\n"
	"        break\n"
	"      end\n"
	"    end\n"
	"    wait = math.min(math.max(wait, 1), (S + 1) * slot)\n"
	"    return answer({1, i - 1, wait, 0, '', '', '', 0, blocked})\n"
	"  end\n"
	"end\n"
	"for i = 1, n do\n"
	"  local slot = math.ceil(tonumber(ARGV[2 * i + 2]) / S)\n"
	"  redis.call('HINCRBY', KEYS[i + 2], heads[i], amount)\n"
	"  redis.call('PEXPIRE', KEYS[i + 2], (S + 1) * slot)\n"
	"end\n"
	"return answer({0, 0, 0, 0, '', '', '', 0, blocked})\n";

/* Recipients a transaction took: KEYS the counters, ARGV[1] amount, then
 * PERIOD (ms) per key, into the slot of Redis' now. */
static const char lr_add_script[] =
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
	"for i = 1, #KEYS do\n"
	"  local slot = math.ceil(tonumber(ARGV[i + 1]) / 60)\n"
	"  redis.call('HINCRBY', KEYS[i], math.floor(now / slot), tonumber(ARGV[1]))\n"
	"  redis.call('PEXPIRE', KEYS[i], 61 * slot)\n"
	"end\n"
	"return 0\n";

/* ---- settings, set once from the first configuration ---- */

static struct {
	bool on;
	bool unix_sock;
	char host[64];
	int port;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char spec[160];
	char prefix[LIMITS_REDIS_PREFIX_MAX + 1];
	uint64_t timeout_ms;
	char origin[17];
} lr;

/* Outages: even while Redis is taken as up, odd while it is down. A
 * connection remembers the value it started under, so a stale attempt's
 * failure after Redis came back starts no new outage (one warning each). */
static atomic_uint lr_epoch;
/* Set when the main thread opened its connections: the settings are fixed. */
static bool lr_started;

/* hiredis' reply constructors, and ours around them (below). */
static redisReplyObjectFunctions lr_fns_orig, lr_fns;
static void *lr_create_string(const redisReadTask *t, char *s, size_t len);
static void *lr_create_array(const redisReadTask *t, int n);
static void *lr_create_integer(const redisReadTask *t, long long v);
static void *lr_create_nil(const redisReadTask *t);

bool limits_redis_parse(const char *spec, bool *redis_r, char *err, size_t errlen)
{
	*redis_r = false;
	if (strcmp(spec, "memory") == 0)
		return true;
	if (strncmp(spec, "redis:", 6) != 0) {
		snprintf(err, errlen, "\"%s\": want memory, redis:HOST:PORT or redis:unix:PATH",
			 spec);
		return false;
	}
	const char *rest = spec + 6;
	if (strncmp(rest, "unix:", 5) == 0) {
		if (rest[5] != '/' || strlen(rest + 5) >= sizeof(lr.path)) {
			snprintf(err, errlen, "\"%s\": want redis:unix:/ABSOLUTE/PATH", spec);
			return false;
		}
		*redis_r = true;
		return true;
	}
	/* HOST is an address, never a name: hiredis would resolve a name
	   synchronously, on a worker's loop. */
	char host[64];
	const char *colon = strrchr(rest, ':');
	size_t hl = colon != NULL ? (size_t)(colon - rest) : 0;
	if (hl >= 2 && rest[0] == '[' && rest[hl - 1] == ']') {
		rest++;
		hl -= 2;
	}
	unsigned char a[16];
	char *end;
	errno = 0;
	long port = colon != NULL ? strtol(colon + 1, &end, 10) : 0;
	if (colon == NULL || hl == 0 || hl >= sizeof(host) || errno != 0 || end == colon + 1 ||
	    *end != '\0' || port < 1 || port > 65535 || colon[1] == '+' || colon[1] == '-') {
		snprintf(err, errlen, "\"%s\": want redis:ADDRESS:PORT or redis:unix:PATH", spec);
		return false;
	}
	memcpy(host, rest, hl);
	host[hl] = '\0';
	if (inet_pton(AF_INET, host, a) != 1 && inet_pton(AF_INET6, host, a) != 1) {
		snprintf(err, errlen, "\"%s\": the host must be an IP address (no name lookups)",
			 spec);
		return false;
	}
	*redis_r = true;
	return true;
}

/* This instance's AUTH failure budget (main thread). */
static struct addrcount_auth_limits lr_auth;

void limits_redis_configure(const char *spec, const char *prefix, uint64_t timeout_ms,
			    const struct addrcount_auth_limits *auth)
{
	lr_auth = *auth;
	bool redis = false;
	char err[200];
	bool parsed = limits_redis_parse(spec, &redis, err, sizeof(err));
	if (!lr.on && (!parsed || !redis))
		return;
	if (lr_started && !lr.on) {
		log_warn("reload: limit_store takes effect after a restart");
		return;
	}
	if (lr.on) {
		if (strcmp(spec, lr.spec) != 0 || strcmp(prefix, lr.prefix) != 0 ||
		    timeout_ms != lr.timeout_ms)
			log_warn("reload: limit_store, limit_store_prefix and limit_store_timeout "
				 "take effect after a restart");
		return;
	}
	snprintf(lr.spec, sizeof(lr.spec), "%s", spec);
	snprintf(lr.prefix, sizeof(lr.prefix), "%s", prefix);
	lr.timeout_ms = timeout_ms;
	const char *rest = spec + 6;
	if (strncmp(rest, "unix:", 5) == 0) {
		lr.unix_sock = true;
		snprintf(lr.path, sizeof(lr.path), "%s", rest + 5);
	} else {
		const char *colon = strrchr(rest, ':');
		size_t hl = (size_t)(colon - rest);
		if (rest[0] == '[') {
			rest++;
			hl -= 2;
		}
		memcpy(lr.host, rest, hl);
		lr.host[hl] = '\0';
		lr.port = atoi(colon + 1);
	}
	redisReader *rd = redisReaderCreate(); /* hiredis' constructors, to wrap */
	if (rd == NULL) {
		log_warn("limit_store: out of memory, Redis is not used");
		return;
	}
	lr_fns_orig = *rd->fn;
	redisReaderFree(rd);
	lr_fns = lr_fns_orig;
	lr_fns.createString = lr_create_string;
	lr_fns.createArray = lr_create_array;
	lr_fns.createInteger = lr_create_integer;
	lr_fns.createNil = lr_create_nil;
	uint64_t rnd[2] = {0, 0};
	if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
		rnd[0] = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	snprintf(lr.origin, sizeof(lr.origin), "%016" PRIx64, rnd[0] ^ rnd[1]);
	lr.on = true;
}

bool limits_redis_enabled(void)
{
	return lr.on;
}

const char *limits_redis_spec(void)
{
	return lr.spec;
}

bool limits_redis_up(void)
{
	return atomic_load(&lr_epoch) % 2 == 0;
}

/* ---- connections ---- */

struct lr_conn {
	uv_loop_t *loop;
	uv_check_t check; /* the reader's buffer, after every read */
	int handles;      /* open handles; freed at 0 */
	redisAsyncContext *ac;
	bool up;
	bool sub;     /* the subscriber */
	bool closing; /* freed once the timer is closed */
	unsigned epoch;
	unsigned pending;
	/* replies asked for and begun on ac: hiredis 0.14 aborts on a reply
	   nobody asked for unless the connection is subscribed */
	uint64_t asked, begun;
	bool subscribed;
	uint64_t backoff_ms;
	uv_timer_t timer; /* connect deadline, then reconnect backoff */
};

struct limits_redis_req {
	struct lr_conn *conn;
	redisAsyncContext *ac;
	uv_timer_t timer;
	limits_redis_cb *cb; /* NULL: fire and forget */
	void *ctx;
	size_t n, rn; /* the MAIL script's rules: message, recipient */
	bool answered;
	bool in_redis;
	bool timer_open;
};

static _Thread_local struct lr_conn *lr_here;

/* Why the reader refused a reply (the disconnect's reason), or NULL. */
static _Thread_local const char *lr_refused;

/* The reader's constructors with the bounds above; a refusal makes the
 * reader fail, and hiredis drops the connection. */
static bool lr_reply_ok(const redisReadTask *t)
{
	struct lr_conn *c = t->privdata;
	if (t->parent != NULL || c == NULL || c->subscribed)
		return true;
	if (c->begun >= c->asked) {
		lr_refused = "a reply nobody asked for";
		return false;
	}
	c->begun++;
	return true;
}

static void *lr_create_string(const redisReadTask *t, char *s, size_t len)
{
	if (len > LR_REPLY_STRING_MAX) {
		lr_refused = "a reply larger than any the script sends";
		return NULL;
	}
	return lr_reply_ok(t) ? lr_fns_orig.createString(t, s, len) : NULL;
}

static void *lr_create_array(const redisReadTask *t, int n)
{
	if (n > LR_REPLY_ELEMENTS_MAX || t->parent != NULL) {
		lr_refused = "a reply larger than any the script sends";
		return NULL;
	}
	return lr_reply_ok(t) ? lr_fns_orig.createArray(t, n) : NULL;
}

static void *lr_create_integer(const redisReadTask *t, long long v)
{
	return lr_reply_ok(t) ? lr_fns_orig.createInteger(t, v) : NULL;
}

static void *lr_create_nil(const redisReadTask *t)
{
	return lr_reply_ok(t) ? lr_fns_orig.createNil(t) : NULL;
}
static struct lr_conn *lr_sub; /* main thread */

static void lr_connect(struct lr_conn *c);
static void lr_lost(struct lr_conn *c, const char *why, bool ours);
static void lr_apply(const char *s, size_t len);

/* was_up: the connection worked until now, so its failure is news even
 * if another connection's outage ended since it came up; a connection
 * attempt only counts under the value it started with. */
static void lr_down(struct lr_conn *c, const char *why, bool was_up)
{
	unsigned e = was_up ? atomic_load(&lr_epoch) : c->epoch;
	if (e % 2 == 0 && atomic_compare_exchange_strong(&lr_epoch, &e, e + 1))
		log_warn("limit_store: redis %s unreachable, using local counters (%s)", lr.spec,
			 why);
}

static void lr_retry_cb(uv_timer_t *t)
{
	struct lr_conn *c = t->data;
	if (c->ac != NULL && !c->up)
		lr_lost(c, "connect timed out", true); /* the deadline passed */
	else if (c->ac == NULL)
		lr_connect(c);
}

/* The connection is gone (hiredis frees ac itself when !ours): answer
 * locally from now on and try again after the backoff. */
static void lr_lost(struct lr_conn *c, const char *why, bool ours)
{
	redisAsyncContext *ac = c->ac;
	bool was_up = c->up;
	c->ac = NULL;
	c->up = false;
	metrics_backend_up("redis", NULL, false); /* this thread's connection */
	lr_down(c, why, was_up);
	if (ours && ac != NULL)
		redisAsyncFree(ac); /* pending calls answer "unavailable" */
	if (c->closing)
		return;
	uv_timer_start(&c->timer, lr_retry_cb, c->backoff_ms, 0);
	c->backoff_ms =
		c->backoff_ms * 2 > LR_BACKOFF_MAX_MS ? LR_BACKOFF_MAX_MS : c->backoff_ms * 2;
}

static void lr_sub_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct lr_conn *c = privdata;
	const redisReply *r = reply;
	/* ["message", channel, payload]; anything else is ignored. */
	if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 3)
		return;
	if (c->ac == ac)
		c->backoff_ms = LR_BACKOFF_MIN_MS; /* subscribed, or a message */
	const redisReply *k = r->element[0], *p = r->element[2];
	if (k->type != REDIS_REPLY_STRING || k->len != 7 || memcmp(k->str, "message", 7) != 0 ||
	    p->type != REDIS_REPLY_STRING || p->len > LR_EVENT_MAX)
		return;
	lr_apply(p->str, p->len);
}

/* The first PONG: Redis answers (a stopped one accepts connections but
 * never does), so the connection is up. */
static void lr_ping_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct lr_conn *c = privdata;
	const redisReply *r = reply;
	if (r == NULL || c->ac != ac || c->up)
		return;
	if (r->type != REDIS_REPLY_STATUS || strcmp(r->str, "PONG") != 0)
		return; /* an error (a password is wanted, say): the deadline ends it */
	c->up = true;   /* the backoff is reset by the first call answered */
	uv_timer_stop(&c->timer);
	metrics_backend_up("redis", NULL, true);
	unsigned e = atomic_load(&lr_epoch);
	if (e % 2 == 1 && atomic_compare_exchange_strong(&lr_epoch, &e, e + 1)) {
		log_info("limit_store: redis %s is back, sharing counters and holds again",
			 lr.spec);
		e++;
	}
	c->epoch = e;
	if (c->sub) {
		char chan[LIMITS_REDIS_PREFIX_MAX + 8];
		snprintf(chan, sizeof(chan), "%sevents", lr.prefix);
		if (redisAsyncCommand(c->ac, lr_sub_cb, c, "SUBSCRIBE %s", chan) == REDIS_OK)
			c->subscribed = true; /* messages come unasked from now on */
	}
}

static void lr_connect_cb(const redisAsyncContext *ac, int status)
{
	struct lr_conn *c = ac->data;
	if (c == NULL || c->ac != ac)
		return;
	if (status != REDIS_OK) {
		lr_lost(c, ac->errstr[0] ? ac->errstr : "connection failed", false);
		return;
	}
	/* the connect deadline keeps running until the PONG */
	if (redisAsyncCommand(c->ac, lr_ping_cb, c, "PING") == REDIS_OK)
		c->asked++;
}

static void lr_disconnect_cb(const redisAsyncContext *ac, int status)
{
	(void)status;
	struct lr_conn *c = ac->data;
	const char *why = lr_refused != NULL ? lr_refused
			  : ac->errstr[0]    ? ac->errstr
					     : "connection closed";
	lr_refused = NULL;
	if (c != NULL && c->ac == ac)
		lr_lost(c, why, false);
}

static void lr_check_cb(uv_check_t *h)
{
	struct lr_conn *c = h->data;
	const redisReader *rd = c->ac != NULL ? c->ac->c.reader : NULL;
	if (rd != NULL && rd->len - rd->pos > LR_READ_MAX)
		lr_lost(c, "a reply larger than any the script sends", true);
}

static void lr_connect(struct lr_conn *c)
{
	c->epoch = atomic_load(&lr_epoch);
	redisAsyncContext *ac =
		lr.unix_sock ? redisAsyncConnectUnix(lr.path) : redisAsyncConnect(lr.host, lr.port);
	if (ac == NULL) {
		c->ac = NULL;
		lr_lost(c, "out of memory", false);
		return;
	}
	if (ac->err != 0 || redisLibuvAttach(ac, c->loop) != REDIS_OK) {
		char why[128];
		snprintf(why, sizeof(why), "%s", ac->err ? ac->errstr : "cannot watch the socket");
		redisAsyncFree(ac);
		c->ac = NULL;
		lr_lost(c, why, false);
		return;
	}
	ac->data = c;
	c->ac = ac;
	ac->c.reader->fn = &lr_fns;
	ac->c.reader->privdata = c; /* lr_reply_ok */
	/* The subscriber sends nothing after SUBSCRIBE: without keepalives a
	   peer gone without a word (a host down, a NAT entry dropped) would
	   leave it waiting for events forever. */
	if (!lr.unix_sock)
		redisEnableKeepAlive(&ac->c);
	c->asked = c->begun = 0;
	c->subscribed = false;
	redisAsyncSetConnectCallback(ac, lr_connect_cb);
	redisAsyncSetDisconnectCallback(ac, lr_disconnect_cb);
	uint64_t deadline = lr.timeout_ms * 5 < 1000 ? 1000 : lr.timeout_ms * 5;
	uv_timer_start(&c->timer, lr_retry_cb, deadline, 0);
}

static struct lr_conn *lr_conn_new(uv_loop_t *loop, bool sub)
{
	struct lr_conn *c = xcalloc(1, sizeof(*c));
	c->loop = loop;
	c->sub = sub;
	c->backoff_ms = LR_BACKOFF_MIN_MS;
	uv_timer_init(loop, &c->timer);
	c->timer.data = c;
	uv_check_init(loop, &c->check);
	c->check.data = c;
	uv_check_start(&c->check, lr_check_cb);
	uv_unref((uv_handle_t *)&c->check);
	c->handles = 2;
	lr_connect(c);
	return c;
}

void limits_redis_thread_start(uv_loop_t *loop, bool start_subscriber)
{
	if (start_subscriber)
		lr_started = true;
	if (!lr.on || lr_here != NULL)
		return;
	lr_here = lr_conn_new(loop, false);
	if (start_subscriber && lr_sub == NULL)
		lr_sub = lr_conn_new(loop, true);
}

static void lr_conn_closed(uv_handle_t *h)
{
	struct lr_conn *c = h->data;
	if (--c->handles == 0)
		free(c);
}

static void lr_conn_free(struct lr_conn *c)
{
	c->closing = true;
	uv_timer_stop(&c->timer);
	if (c->ac != NULL) {
		redisAsyncContext *ac = c->ac;
		c->ac = NULL;
		c->up = false;
		redisAsyncFree(ac);
	}
	uv_close((uv_handle_t *)&c->timer, lr_conn_closed);
	uv_close((uv_handle_t *)&c->check, lr_conn_closed);
}

void limits_redis_thread_done(void)
{
	struct lr_conn *c = lr_here;
	if (c == NULL)
		return;
	lr_here = NULL;
	if (lr_sub != NULL && lr_sub->loop == c->loop) {
		lr_conn_free(lr_sub);
		lr_sub = NULL;
	}
	lr_conn_free(c);
}

/* ---- calls ---- */

static void lr_req_closed(uv_handle_t *h)
{
	struct limits_redis_req *q = h->data;
	q->timer_open = false;
	if (!q->in_redis)
		free(q);
}

static void lr_req_answer(struct limits_redis_req *q, bool ok, const struct limits_redis_verdict *v)
{
	if (q->answered)
		return;
	q->answered = true;
	uv_timer_stop(&q->timer);
	uv_close((uv_handle_t *)&q->timer, lr_req_closed);
	if (q->cb != NULL)
		q->cb(q->ctx, ok, v);
}

/* A reply that is not the script's (an error: out of memory, a read-only
 * replica, a script refused): logged at most once a minute per process. */
static void lr_bad_reply(const redisReply *r)
{
	static _Atomic uint64_t last;
	uint64_t now = limits_now_ms(), then = atomic_load(&last);
	if ((then != 0 && now - then < 60000) || !atomic_compare_exchange_strong(&last, &then, now))
		return;
	char why[120] = "";
	if (r->type == REDIS_REPLY_ERROR && r->str != NULL) {
		size_t i = 0;
		for (; i < r->len && i + 1 < sizeof(why); i++)
			why[i] = (unsigned char)r->str[i] < 0x20 || r->str[i] == 0x7f ? '?'
										      : r->str[i];
		why[i] = '\0';
	}
	log_warn("limit_store: redis %s: an answer that is not the script's, deciding locally%s%s",
		 lr.spec, why[0] ? ": " : "", why);
}

static void lr_reply_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
	(void)ac;
	struct limits_redis_req *q = privdata;
	q->in_redis = false;
	q->conn->pending--;
	if (reply != NULL)
		q->conn->backoff_ms = LR_BACKOFF_MIN_MS;
	if (!q->answered) {
		struct limits_redis_verdict v;
		bool ok = q->cb != NULL && reply != NULL &&
			  limits_redis_decode(reply, q->n, q->rn, &v);
		if (q->cb != NULL && reply != NULL && !ok)
			lr_bad_reply(reply);
		lr_req_answer(q, ok, ok ? &v : NULL);
	}
	if (!q->timer_open)
		free(q);
}

static void lr_req_timeout(uv_timer_t *t)
{
	struct limits_redis_req *q = t->data;
	struct lr_conn *c = q->conn;
	redisAsyncContext *ac = q->ac;
	lr_req_answer(q, false, NULL);
	/* A Redis that does not answer in time is treated as gone: the calls
	   behind this one would wait as long. */
	if (c->ac == ac && ac != NULL)
		lr_lost(c, "no answer within limit_store_timeout", true);
}

/* Sends one command on the thread's connection; false when there is none
 * up or too many calls are in flight. */
static bool lr_send(struct limits_redis_req **q_r, limits_redis_cb *cb, void *ctx, size_t n,
		    int argc, const char **argv, const size_t *lens)
{
	struct lr_conn *c = lr_here;
	if (q_r != NULL)
		*q_r = NULL;
	if (c == NULL || !c->up || c->ac == NULL || c->pending >= LR_PENDING_MAX)
		return false;
	struct limits_redis_req *q = xcalloc(1, sizeof(*q));
	q->conn = c;
	q->ac = c->ac;
	q->cb = cb;
	q->ctx = ctx;
	q->n = n;
	if (redisAsyncCommandArgv(c->ac, lr_reply_cb, q, argc, argv, lens) != REDIS_OK) {
		free(q);
		return false;
	}
	q->in_redis = true;
	c->pending++;
	c->asked++;
	uv_timer_init(c->loop, &q->timer);
	q->timer.data = q;
	q->timer_open = true;
	uv_timer_start(&q->timer, lr_req_timeout, lr.timeout_ms, 0);
	if (q_r != NULL)
		*q_r = q;
	return true;
}

void limits_redis_cancel(struct limits_redis_req **req)
{
	struct limits_redis_req *q = *req;
	*req = NULL;
	if (q == NULL)
		return;
	q->cb = NULL;
	lr_req_answer(q, false, NULL);
}

/* The counter of one rule in Redis. */
static void lr_counter_key(char *out, size_t sz, const struct limits_ask *a)
{
	snprintf(out, sz, "%sc:%" PRIu64 ":%s", lr.prefix, a->period_ms, a->key);
}

struct limits_redis_req *limits_redis_take(const char *login, const char *ip,
					   const struct limits_ask *asks, size_t n,
					   const struct limits_ask *rasks, size_t rn,
					   uint64_t amount, limits_redis_cb *cb, void *ctx)
{
	if (!lr.on || n > LIMITS_REDIS_RULES_MAX || rn > LIMITS_REDIS_RULES_MAX)
		return NULL;
	enum { MAXK = 2 * LIMITS_REDIS_RULES_MAX + 2 };
	char keys[MAXK][LR_KEY_MAX + 1], nums[2 + 3 * LIMITS_REDIS_RULES_MAX][24];
	const char *argv[3 + MAXK + 2 + 3 * LIMITS_REDIS_RULES_MAX];
	size_t lens[sizeof(argv) / sizeof(argv[0])];
	int argc = 0;
	argv[argc++] = "EVAL";
	argv[argc++] = lr_script;
	size_t k = 0;
	snprintf(nums[k], sizeof(nums[k]), "%zu", n + rn + 2);
	argv[argc++] = nums[k++];
	snprintf(keys[0], sizeof(keys[0]), "%sh:%s", lr.prefix, login);
	snprintf(keys[1], sizeof(keys[1]), "%sb:%s", lr.prefix, ip);
	for (size_t i = 0; i < n; i++)
		lr_counter_key(keys[i + 2], sizeof(keys[i + 2]), &asks[i]);
	for (size_t i = 0; i < rn; i++)
		lr_counter_key(keys[n + i + 2], sizeof(keys[n + i + 2]), &rasks[i]);
	for (size_t i = 0; i < n + rn + 2; i++)
		argv[argc++] = keys[i];
	snprintf(nums[k], sizeof(nums[k]), "%" PRIu64, amount);
	argv[argc++] = nums[k++];
	snprintf(nums[k], sizeof(nums[k]), "%zu", n);
	argv[argc++] = nums[k++];
	for (size_t i = 0; i < n; i++) {
		snprintf(nums[k], sizeof(nums[k]), "%" PRIu64, asks[i].count);
		argv[argc++] = nums[k++];
		snprintf(nums[k], sizeof(nums[k]), "%" PRIu64, asks[i].period_ms);
		argv[argc++] = nums[k++];
	}
	for (size_t i = 0; i < rn; i++) {
		snprintf(nums[k], sizeof(nums[k]), "%" PRIu64, rasks[i].period_ms);
		argv[argc++] = nums[k++];
	}
	for (int i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	struct limits_redis_req *q;
	if (!lr_send(&q, cb, ctx, n, argc, argv, lens))
		return NULL;
	q->rn = rn;
	return q;
}

void limits_redis_add(const struct limits_ask *asks, size_t n, uint64_t amount)
{
	if (!lr.on || n == 0 || n > LIMITS_REDIS_RULES_MAX)
		return;
	char keys[LIMITS_REDIS_RULES_MAX][LR_KEY_MAX + 1], nums[1 + LIMITS_REDIS_RULES_MAX][24];
	const char *argv[3 + 2 * LIMITS_REDIS_RULES_MAX + 1];
	size_t lens[sizeof(argv) / sizeof(argv[0])];
	int argc = 0;
	argv[argc++] = "EVAL";
	argv[argc++] = lr_add_script;
	snprintf(nums[0], sizeof(nums[0]), "%zu", n);
	argv[argc++] = nums[0];
	for (size_t i = 0; i < n; i++) {
		lr_counter_key(keys[i], sizeof(keys[i]), &asks[i]);
		argv[argc++] = keys[i];
	}
	char am[24];
	snprintf(am, sizeof(am), "%" PRIu64, amount);
	argv[argc++] = am;
	for (size_t i = 0; i < n; i++) {
		snprintf(nums[i + 1], sizeof(nums[i + 1]), "%" PRIu64, asks[i].period_ms);
		argv[argc++] = nums[i + 1];
	}
	for (int i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	lr_send(NULL, NULL, NULL, 0, argc, argv, lens);
}

/* ---- announcements ---- */

static void lr_publish(const struct limits_redis_event *e)
{
	char line[LR_EVENT_MAX + 1], chan[LIMITS_REDIS_PREFIX_MAX + 8];
	if (!lr.on || !limits_redis_event_format(e, line, sizeof(line)))
		return;
	snprintf(chan, sizeof(chan), "%sevents", lr.prefix);
	const char *argv[] = {"PUBLISH", chan, line};
	size_t lens[] = {7, strlen(chan), strlen(line)};
	lr_send(NULL, NULL, NULL, 0, 3, argv, lens);
}

static void lr_simple(const char *cmd, const char *kind, const char *name, const char *value)
{
	char key[LR_KEY_MAX + 1];
	snprintf(key, sizeof(key), "%s%s:%s", lr.prefix, kind, name);
	const char *argv[] = {cmd, key, value};
	size_t lens[] = {strlen(cmd), strlen(key), value ? strlen(value) : 0};
	lr_send(NULL, NULL, NULL, 0, value ? 3 : 2, argv, lens);
}

void limits_redis_hold(const struct limits_hold *h)
{
	if (!lr.on)
		return;
	char key[LR_KEY_MAX + 1], until[24];
	snprintf(key, sizeof(key), "%sh:%s", lr.prefix, h->login);
	snprintf(until, sizeof(until), "%lld", (long long)h->until);
	const char *argv[] = {"HSET",  key,      "reason",  h->reason, "note",
			      h->note, "client", h->client, "until",   until};
	size_t lens[10];
	for (size_t i = 0; i < 10; i++)
		lens[i] = strlen(argv[i]);
	lr_send(NULL, NULL, NULL, 0, 10, argv, lens);
	if (h->until != 0) {
		const char *ex[] = {"EXPIREAT", key, until};
		size_t el[] = {8, strlen(key), strlen(until)};
		lr_send(NULL, NULL, NULL, 0, 3, ex, el);
	}
	struct limits_redis_event e = {.kind = LRE_HOLD, .hold = *h};
	lr_publish(&e);
}

void limits_redis_release(const char *login)
{
	if (!lr.on)
		return;
	lr_simple("DEL", "h", login, NULL);
	struct limits_redis_event e = {.kind = LRE_RELEASE};
	snprintf(e.hold.login, sizeof(e.hold.login), "%s", login);
	lr_publish(&e);
}

void limits_redis_block(const struct limits_block *b)
{
	if (!lr.on)
		return;
	lr_simple("SET", "b", b->addr, b->reason[0] ? b->reason : "blocked");
	struct limits_redis_event e = {.kind = LRE_BLOCK, .block = *b};
	lr_publish(&e);
}

void limits_redis_unblock(const char *addr)
{
	if (!lr.on)
		return;
	lr_simple("DEL", "b", addr, NULL);
	struct limits_redis_event e = {.kind = LRE_UNBLOCK};
	snprintf(e.block.addr, sizeof(e.block.addr), "%s", addr);
	lr_publish(&e);
}

void limits_redis_kick(const char *login)
{
	if (!lr.on)
		return;
	struct limits_redis_event e = {.kind = LRE_KICK};
	snprintf(e.hold.login, sizeof(e.hold.login), "%s", login);
	lr_publish(&e);
}

void limits_redis_auth_failed(const struct addrcount_key *key,
			      const struct addrcount_auth_limits *lim)
{
	if (!lr.on || lim->limit == 0)
		return;
	struct limits_redis_event e = {.kind = LRE_AUTHFAIL, .key = *key, .lim = *lim};
	lr_publish(&e);
}

/* An event from another instance, on the main loop: into the memory store
 * (which bumps its generation, so sessions look at it at their next
 * command). Never published again. */
static void lr_apply(const char *s, size_t len)
{
	struct limits_redis_event e;
	struct limits_store *st = limits_store();
	if (!limits_redis_event_parse(s, len, &e)) {
		log_warn("limit_store: redis %s: an event that does not parse, ignored", lr.spec);
		return;
	}
	if (strcmp(e.origin, lr.origin) == 0 || st == NULL)
		return;
	uint64_t now = limits_now_ms();
	switch (e.kind) {
	case LRE_HOLD:
		if (st->ops->hold_set(st, &e.hold, now))
			log_info("limit_store: login=<%s> held by another instance: reason=%s",
				 e.hold.login, e.hold.reason);
		break;
	case LRE_RELEASE:
		if (st->ops->hold_clear(st, e.hold.login))
			log_info("limit_store: login=<%s> released by another instance",
				 e.hold.login);
		break;
	case LRE_BLOCK:
		st->ops->block_set(st, &e.block);
		break;
	case LRE_UNBLOCK:
		st->ops->block_clear(st, e.block.addr);
		break;
	case LRE_KICK:
		st->ops->kick(st, e.hold.login, now, 24ULL * 3600 * 1000); /* as limits_kick */
		break;
	case LRE_AUTHFAIL: {
		/* counted with this instance's budget, not the sender's: an
		   event cannot set how long an address stays blocked here */
		struct addrcount *ac = addrcount_global();
		uint64_t t = addrcount_now();
		if (lr_auth.limit != 0 && addrcount_auth_begin(ac, &e.key, &lr_auth, t))
			addrcount_auth_end(ac, &e.key, &lr_auth, true, t);
		break;
	}
	}
}

/* ---- pure parts ---- */

static bool lr_int(const redisReply *r, long long min, long long max, long long *v_r)
{
	if (r == NULL || r->type != REDIS_REPLY_INTEGER || r->integer < min || r->integer > max)
		return false;
	*v_r = r->integer;
	return true;
}

/* A string of printable bytes (no control characters) shorter than sz. */
static bool lr_str(const redisReply *r, char *out, size_t sz)
{
	if (r == NULL || r->type != REDIS_REPLY_STRING || r->len >= sz || r->str == NULL)
		return false;
	for (size_t i = 0; i < r->len; i++)
		if ((unsigned char)r->str[i] < 0x20 || r->str[i] == 0x7f)
			return false;
	memcpy(out, r->str, r->len);
	out[r->len] = '\0';
	return true;
}

bool limits_redis_decode(const struct redisReply *r, size_t n, size_t rn,
			 struct limits_redis_verdict *v_r)
{
	memset(v_r, 0, sizeof(*v_r));
	if (r == NULL || r->type != REDIS_REPLY_ARRAY || rn > LIMITS_REDIS_RULES_MAX ||
	    r->elements != 9 + 2 * rn || r->element == NULL)
		return false;
	for (size_t i = 0; i < rn; i++) {
		long long used, wait;
		if (!lr_int(r->element[9 + 2 * i], 0, INT64_MAX, &used) ||
		    !lr_int(r->element[10 + 2 * i], 0, INT64_MAX, &wait))
			return false;
		v_r->rused[i] = (uint64_t)used;
		v_r->rwait[i] = (uint64_t)wait;
	}
	v_r->rn = rn;
	long long over, which, wait, held, until, blocked;
	struct limits_hold *h = &v_r->hold;
	if (!lr_int(r->element[0], 0, 1, &over) || !lr_int(r->element[1], 0, 1000, &which) ||
	    !lr_int(r->element[2], -1, INT64_MAX, &wait) || !lr_int(r->element[3], 0, 1, &held) ||
	    !lr_str(r->element[4], h->reason, sizeof(h->reason)) ||
	    !lr_str(r->element[5], h->note, sizeof(h->note)) ||
	    !lr_str(r->element[6], h->client, sizeof(h->client)) ||
	    !lr_int(r->element[7], 0, INT64_MAX, &until) || !lr_int(r->element[8], 0, 1, &blocked))
		return false;
	if (over && (n == 0 || (size_t)which >= n))
		return false;
	if (held && h->reason[0] == '\0')
		return false;
	v_r->over = over == 1 && !held;
	v_r->which = (size_t)which;
	v_r->wait_ms = wait < 0 ? UINT64_MAX : (uint64_t)wait;
	v_r->held = held == 1;
	h->until = (time_t)until;
	h->since = time(NULL);
	if (h->until != 0 && h->until <= h->since)
		h->until = h->since + 1;
	v_r->blocked = blocked == 1;
	return true;
}

static const char *const lr_kinds[] = {"hold", "release", "block", "unblock", "kick", "authfail"};

static bool lr_clean(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

bool limits_redis_event_format(const struct limits_redis_event *e, char *out, size_t outsz)
{
	const struct limits_hold *h = &e->hold;
	const struct limits_block *b = &e->block;
	int w = -1;
	const char *o = e->origin[0] ? e->origin : lr.origin;
	const char *k = lr_kinds[e->kind];
	switch (e->kind) {
	case LRE_HOLD:
		if (!lr_clean(h->login) || !lr_clean(h->reason) || !lr_clean(h->note) ||
		    !lr_clean(h->client) || h->login[0] == '\0' || h->reason[0] == '\0')
			return false;
		w = snprintf(out, outsz, "%s\t%s\t%s\t%s\t%s\t%s\t%lld\t%lld", o, k, h->login,
			     h->reason, h->note, h->client, (long long)h->since,
			     (long long)h->until);
		break;
	case LRE_RELEASE:
	case LRE_KICK:
		if (!lr_clean(h->login) || h->login[0] == '\0')
			return false;
		w = snprintf(out, outsz, "%s\t%s\t%s", o, k, h->login);
		break;
	case LRE_BLOCK:
		if (!lr_clean(b->addr) || !lr_clean(b->reason) || b->addr[0] == '\0')
			return false;
		w = snprintf(out, outsz, "%s\t%s\t%s\t%s\t%lld", o, k, b->addr, b->reason,
			     (long long)b->since);
		break;
	case LRE_UNBLOCK:
		if (!lr_clean(b->addr) || b->addr[0] == '\0')
			return false;
		w = snprintf(out, outsz, "%s\t%s\t%s", o, k, b->addr);
		break;
	case LRE_AUTHFAIL: {
		char hex[2 * sizeof(e->key.b) + 1];
		for (size_t i = 0; i < sizeof(e->key.b); i++)
			snprintf(hex + 2 * i, 3, "%02x", e->key.b[i]);
		w = snprintf(out, outsz, "%s\t%s\t%s\t%u\t%" PRIu64 "\t%" PRIu64, o, k, hex,
			     e->lim.limit, e->lim.window_ms, e->lim.block_ms);
		break;
	}
	}
	return w > 0 && (size_t)w < outsz && (size_t)w <= LR_EVENT_MAX;
}

/* Copies field f (len bytes) into out of size sz: false when it does not
 * fit or holds a control byte. */
static bool lr_field(const char *f, size_t len, char *out, size_t sz, bool empty_ok)
{
	if (len >= sz || (len == 0 && !empty_ok))
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)f[i] < 0x20 || f[i] == 0x7f)
			return false;
	memcpy(out, f, len);
	out[len] = '\0';
	return true;
}

static bool lr_num(const char *f, size_t len, uint64_t max, uint64_t *v_r)
{
	if (len == 0 || len > 19)
		return false;
	uint64_t v = 0;
	for (size_t i = 0; i < len; i++) {
		if (f[i] < '0' || f[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(f[i] - '0');
	}
	if (v > max)
		return false;
	*v_r = v;
	return true;
}

bool limits_redis_event_parse(const char *s, size_t len, struct limits_redis_event *e_r)
{
	memset(e_r, 0, sizeof(*e_r));
	if (len > LR_EVENT_MAX)
		return false;
	const char *f[8];
	size_t fl[8], nf = 0, start = 0;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && s[i] != '\t')
			continue;
		if (nf == 8)
			return false;
		f[nf] = s + start;
		fl[nf++] = i - start;
		start = i + 1;
	}
	if (nf < 3 || fl[0] != 16 ||
	    !lr_field(f[0], fl[0], e_r->origin, sizeof(e_r->origin), false))
		return false;
	size_t kind = 0;
	for (; kind < sizeof(lr_kinds) / sizeof(lr_kinds[0]); kind++)
		if (strlen(lr_kinds[kind]) == fl[1] && memcmp(lr_kinds[kind], f[1], fl[1]) == 0)
			break;
	struct limits_hold *h = &e_r->hold;
	struct limits_block *b = &e_r->block;
	uint64_t a, c, d;
	switch (kind) {
	case LRE_HOLD:
		if (nf != 8 || !lr_field(f[2], fl[2], h->login, sizeof(h->login), false) ||
		    !lr_field(f[3], fl[3], h->reason, sizeof(h->reason), false) ||
		    !lr_field(f[4], fl[4], h->note, sizeof(h->note), true) ||
		    !lr_field(f[5], fl[5], h->client, sizeof(h->client), true) ||
		    !lr_num(f[6], fl[6], INT64_MAX, &a) || !lr_num(f[7], fl[7], INT64_MAX, &c))
			return false;
		h->since = (time_t)a;
		h->until = (time_t)c;
		break;
	case LRE_RELEASE:
	case LRE_KICK:
		if (nf != 3 || !lr_field(f[2], fl[2], h->login, sizeof(h->login), false))
			return false;
		break;
	case LRE_BLOCK:
		if (nf != 5 || !lr_field(f[2], fl[2], b->addr, sizeof(b->addr), false) ||
		    !lr_field(f[3], fl[3], b->reason, sizeof(b->reason), true) ||
		    !lr_num(f[4], fl[4], INT64_MAX, &a))
			return false;
		b->since = (time_t)a;
		break;
	case LRE_UNBLOCK:
		if (nf != 3 || !lr_field(f[2], fl[2], b->addr, sizeof(b->addr), false))
			return false;
		break;
	case LRE_AUTHFAIL:
		if (nf != 6 || fl[2] != 2 * sizeof(e_r->key.b) ||
		    !lr_num(f[3], fl[3], 1000000, &a) || !lr_num(f[4], fl[4], 86400000, &c) ||
		    !lr_num(f[5], fl[5], 86400000, &d))
			return false;
		for (size_t i = 0; i < sizeof(e_r->key.b); i++) {
			unsigned v = 0;
			for (size_t j = 0; j < 2; j++) {
				char x = f[2][2 * i + j];
				unsigned nib = x >= '0' && x <= '9'   ? (unsigned)(x - '0')
					       : x >= 'a' && x <= 'f' ? (unsigned)(x - 'a' + 10)
								      : 16;
				if (nib == 16)
					return false;
				v = v * 16 + nib;
			}
			e_r->key.b[i] = (uint8_t)v;
		}
		e_r->lim = (struct addrcount_auth_limits){
			.limit = (unsigned)a, .window_ms = c, .block_ms = d};
		break;
	default:
		return false;
	}
	e_r->kind = (enum limits_redis_event_kind)kind;
	return true;
}
