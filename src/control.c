/* control: the control socket (control.h). Every byte from the socket is
 * hostile until parsed: the request is one bounded line of printable ASCII,
 * read within CONTROL_TIMEOUT_MS, from at most CONTROL_CLIENTS_MAX
 * clients at a time. */
#include "config.h"
#include "control.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/list.h"
#include "core/log.h"
#include "metrics_http.h"
#include "policy/limits.h"
#include "policy/limits_redis.h"

struct control_client {
	struct list_link link;
	uv_pipe_t pipe;
	uv_timer_t timer;
	uv_write_t wr;
	struct buf in, out;
	int open; /* handles not closed yet */
	bool answered;
};

static struct {
	uv_loop_t *loop;
	uv_pipe_t server;
	bool listening;
	char *path;
	struct config *cfg;
	struct list_link clients;
	unsigned nclients;
	time_t started;
} control;

/* ---- answers ---- */

void control_json_str(struct buf *b, const char *s)
{
	buf_append_str(b, "\"");
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			buf_printf(b, "\\%c", *p);
		else if (*p < 0x20 || *p >= 0x7f)
			buf_printf(b, "\\u%04x", *p);
		else
			buf_append(b, p, 1);
	}
	buf_append_str(b, "\"");
}

static void control_time(time_t t, char *out, size_t outsz)
{
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, outsz, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

struct control_list {
	struct buf *out;
	bool json;
	unsigned n;
};

static void control_session_one(void *ctx, const struct limits_session_info *i)
{
	struct control_list *l = ctx;
	char since[32];
	control_time(i->started, since, sizeof(since));
	if (l->json) {
		buf_append_str(l->out, l->n ? "," : "");
		buf_append_str(l->out, "{\"id\":");
		control_json_str(l->out, i->id);
		buf_append_str(l->out, ",\"client\":");
		control_json_str(l->out, i->ip);
		buf_append_str(l->out, ",\"login\":");
		if (i->login[0])
			control_json_str(l->out, i->login);
		else
			buf_append_str(l->out, "null");
		buf_printf(l->out, ",\"worker\":%u,\"since\":\"%s\"}", i->worker, since);
	} else {
		buf_printf(l->out, "%s client=[%s] login=%s worker=%u since=%s\n", i->id, i->ip,
			   i->login[0] ? i->login : "-", i->worker, since);
	}
	l->n++;
}

static void control_hold_one(void *ctx, const struct limits_hold *h)
{
	struct control_list *l = ctx;
	char since[32], until[32] = "released";
	control_time(h->since, since, sizeof(since));
	if (h->until != 0)
		control_time(h->until, until, sizeof(until));
	if (l->json) {
		buf_append_str(l->out, l->n ? "," : "");
		buf_append_str(l->out, "{\"login\":");
		control_json_str(l->out, h->login);
		buf_append_str(l->out, ",\"reason\":");
		control_json_str(l->out, h->reason);
		buf_append_str(l->out, ",\"note\":");
		control_json_str(l->out, h->note);
		buf_append_str(l->out, ",\"client\":");
		if (h->client[0])
			control_json_str(l->out, h->client);
		else
			buf_append_str(l->out, "null");
		buf_printf(l->out, ",\"since\":\"%s\",\"until\":", since);
		if (h->until != 0)
			buf_printf(l->out, "\"%s\"}", until);
		else
			buf_append_str(l->out, "null}");
	} else {
		buf_printf(l->out, "%s reason=%s client=[%s] since=%s until=%s: %s\n", h->login,
			   h->reason, h->client[0] ? h->client : "-", since, until, h->note);
	}
	l->n++;
}

static void control_block_one(void *ctx, const struct limits_block *b)
{
	struct control_list *l = ctx;
	char since[32];
	control_time(b->since, since, sizeof(since));
	if (l->json) {
		buf_append_str(l->out, l->n ? "," : "");
		buf_append_str(l->out, "{\"address\":");
		control_json_str(l->out, b->addr);
		buf_printf(l->out, ",\"since\":\"%s\",\"reason\":", since);
		control_json_str(l->out, b->reason);
		buf_append_str(l->out, "}");
	} else {
		buf_printf(l->out, "blocked [%s] since=%s: %s\n", b->addr, since, b->reason);
	}
	l->n++;
}

static void control_count_hold(void *ctx, const struct limits_hold *h)
{
	(void)h;
	(*(unsigned *)ctx)++;
}

static void control_count_block(void *ctx, const struct limits_block *b)
{
	(void)b;
	(*(unsigned *)ctx)++;
}

static void control_usage_one(void *ctx, const struct limits_usage *u)
{
	struct control_list *l = ctx;
	uint64_t secs = u->wait_ms == UINT64_MAX ? 0 : (u->wait_ms + 999) / 1000;
	if (l->json) {
		buf_append_str(l->out, l->n ? "," : "");
		buf_printf(l->out,
			   "{\"limit\":\"%s\",\"count\":%" PRIu64 ",\"period_s\":%" PRIu64
			   ",\"used\":%" PRIu64 ",\"frees_in_s\":%" PRIu64 "}",
			   u->what, u->count, u->period_ms / 1000, u->used, secs);
	} else {
		buf_printf(l->out, "%s %" PRIu64 "/%" PRIu64 "s: used %" PRIu64 "%s", u->what,
			   u->count, u->period_ms / 1000, u->used, secs ? "" : "\n");
		if (secs)
			buf_printf(l->out, ", full for %" PRIu64 " s\n", secs);
	}
	l->n++;
}

static void control_error(struct buf *out, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void control_error(struct buf *out, const char *fmt, ...)
{
	buf_reset(out);
	buf_append_str(out, "error: ");
	va_list ap;
	va_start(ap, fmt);
	buf_vprintf(out, fmt, ap);
	va_end(ap);
	buf_append_str(out, "\n");
}

/* "ok" or "ok" plus a JSON object with one field. */
static void control_done(struct buf *out, bool json, const char *text, const char *key,
			 const char *val)
{
	buf_append_str(out, "ok\n");
	if (json) {
		buf_printf(out, "{\"%s\":", key);
		control_json_str(out, val);
		buf_append_str(out, ",\"result\":");
		control_json_str(out, text);
		buf_append_str(out, "}\n");
	} else {
		buf_printf(out, "%s\n", text);
	}
}

_Static_assert(CONTROL_REASON_MAX == LIMITS_REASON_MAX, "a reason from the socket fits a hold");

void control_answer(uv_loop_t *loop, const struct config *cfg, const char *line, size_t len,
		    struct buf *out)
{
	struct control_req req;
	char perr[160];
	if (!control_parse(line, len, &req, perr, sizeof(perr))) {
		control_error(out, "%s", perr);
		return;
	}
	bool json = req.json;
	const char *verb = req.name, *arg = req.has_arg ? req.arg : NULL;
	const char *rest = req.has_rest ? req.rest : NULL;
	const char *login = req.arg;
	struct limits_store *st = limits_store();
	if (st == NULL || cfg == NULL) {
		control_error(out, "limits are not loaded");
		return;
	}
	struct control_list l = {.out = out, .json = json};
	uint64_t now = limits_now_ms();
	if (strcmp(verb, "status") == 0) {
		unsigned held = 0, blocked = 0;
		st->ops->hold_each(st, now, control_count_hold, &held);
		st->ops->block_each(st, control_count_block, &blocked);
		struct limits_store_stats ss;
		st->ops->stats(st, &ss);
		long long up = (long long)(time(NULL) - control.started);
		buf_append_str(out, "ok\n");
		if (json) {
			buf_printf(
				out,
				"{\"version\":\"%s\",\"uptime_s\":%lld,\"sessions\":%u,\"held\":%u,"
				"\"blocked\":%u,\"store\":\"%s\",\"store_entries\":%" PRIu64
				",\"store_full_refusals\":%" PRIu64 ",\"blocked_addresses\":[",
				PACKAGE_VERSION, up, limits_session_count(), held, blocked,
				st->ops->name, ss.entries, ss.refused_full);
			st->ops->block_each(st, control_block_one, &l);
			buf_append_str(out, "]");
			if (limits_redis_enabled()) {
				buf_append_str(out, ",\"shared_store\":");
				control_json_str(out, limits_redis_spec());
				buf_printf(out, ",\"shared_store_up\":%s",
					   limits_redis_up() ? "true" : "false");
			}
			buf_append_str(out, "}\n");
		} else {
			buf_printf(out,
				   "submitd %s, up %lld s\nsessions: %u\nheld logins: %u\n"
				   "blocked addresses: %u\nlimit store: %s, %" PRIu64 " entries\n",
				   PACKAGE_VERSION, up, limits_session_count(), held, blocked,
				   st->ops->name, ss.entries);
			if (limits_redis_enabled())
				buf_printf(out, "shared store: %s, %s\n", limits_redis_spec(),
					   limits_redis_up() ? "up" : "unreachable");
			st->ops->block_each(st, control_block_one, &l);
		}
		return;
	}
	if (strcmp(verb, "stats") == 0) { /* metrics_http.h */
		buf_append_str(out, "ok\n");
		metrics_stats(out, json);
		return;
	}
	if (strcmp(verb, "sessions") == 0) {
		buf_append_str(out, json ? "ok\n[" : "ok\n");
		limits_session_each(control_session_one, &l);
		buf_append_str(out, json ? "]\n" : "");
		return;
	}
	if (strcmp(verb, "held") == 0) {
		buf_append_str(out, json ? "ok\n[" : "ok\n");
		st->ops->hold_each(st, now, control_hold_one, &l);
		buf_append_str(out, json ? "]\n" : "");
		return;
	}
	if (strcmp(verb, "limits") == 0) {
		struct limits_hold h;
		bool held = st->ops->hold_get(st, login, now, &h);
		buf_append_str(out, "ok\n");
		if (json) {
			buf_append_str(out, "{\"login\":");
			control_json_str(out, login);
			buf_printf(out, ",\"held\":%s,\"limits\":[", held ? "true" : "false");
			limits_usage_each(cfg, login, control_usage_one, &l);
			buf_append_str(out, "]}\n");
		} else {
			buf_printf(out, "login %s: %s%s%s%s\n", login, held ? "held, " : "not held",
				   held ? h.reason : "", held ? ": " : "", held ? h.note : "");
			limits_usage_each(cfg, login, control_usage_one, &l);
		}
		return;
	}
	if (strcmp(verb, "hold") == 0) {
		const char *why = rest != NULL ? rest : "held with submitctl";
		enum limits_hold_result hr = limits_hold_manual(loop, cfg, login, why);
		if (hr == LIMITS_HOLD_ALREADY)
			control_error(out, "%s is held already", login);
		else if (hr == LIMITS_HOLD_FULL)
			control_error(out, "%s not held: store full (see the log)", login);
		else
			control_done(out, json, "held", "login", login);
		return;
	}
	if (strcmp(verb, "release") == 0) {
		if (!limits_release(login))
			control_error(out, "%s is not held", login);
		else
			control_done(out, json, "released", "login", login);
		return;
	}
	if (strcmp(verb, "block") == 0 || strcmp(verb, "unblock") == 0) {
		unsigned char a[16];
		char norm[INET6_ADDRSTRLEN];
		int af = strchr(arg, ':') != NULL ? AF_INET6 : AF_INET;
		if (inet_pton(af, arg, a) != 1 || inet_ntop(af, a, norm, sizeof(norm)) == NULL) {
			control_error(out, "%s: not an IPv4 or IPv6 address", verb);
			return;
		}
		if (verb[0] == 'b') {
			if (!limits_block(norm, rest != NULL ? rest : "blocked with submitctl"))
				control_error(out, "%s is blocked already", norm);
			else
				control_done(out, json, "blocked", "address", norm);
		} else {
			if (!limits_unblock(norm))
				control_error(out, "%s is not blocked", norm);
			else
				control_done(out, json, "unblocked", "address", norm);
		}
		return;
	}
	/* kick */
	unsigned n = limits_kick(login);
	buf_append_str(out, "ok\n");
	if (json) {
		buf_append_str(out, "{\"login\":");
		control_json_str(out, login);
		buf_printf(out, ",\"sessions\":%u}\n", n);
	} else {
		buf_printf(out, "%u session%s of %s end at their next command\n", n,
			   n == 1 ? "" : "s", login);
	}
}

/* ---- the socket ---- */

static void control_client_closed(uv_handle_t *h)
{
	struct control_client *c = h->data;
	if (--c->open > 0)
		return;
	buf_free(&c->in);
	buf_free(&c->out);
	free(c);
}

static void control_client_close(struct control_client *c)
{
	if (!list_linked(&c->link))
		return;
	list_remove(&c->link);
	control.nclients--;
	uv_timer_stop(&c->timer);
	uv_close((uv_handle_t *)&c->timer, control_client_closed);
	uv_close((uv_handle_t *)&c->pipe, control_client_closed);
}

static void control_written(uv_write_t *w, int status)
{
	(void)status;
	control_client_close(w->data);
}

static void control_send(struct control_client *c)
{
	c->answered = true;
	uv_read_stop((uv_stream_t *)&c->pipe);
	uv_buf_t b = uv_buf_init((char *)buf_data(&c->out), (unsigned)buf_len(&c->out));
	c->wr.data = c;
	if (uv_write(&c->wr, (uv_stream_t *)&c->pipe, &b, 1, control_written) != 0)
		control_client_close(c);
}

static void control_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	(void)hint;
	struct control_client *c = h->data;
	/* Never more than one line plus its newline. */
	size_t room = CONTROL_LINE_MAX + 2 - buf_len(&c->in);
	b->base = (char *)buf_reserve(&c->in, room);
	b->len = room;
}

static void control_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	(void)b;
	struct control_client *c = s->data;
	if (c->answered)
		return;
	if (n < 0) {
		control_client_close(c);
		return;
	}
	buf_commit(&c->in, (size_t)n);
	const char *p = (const char *)buf_data(&c->in);
	size_t len = buf_len(&c->in);
	if (len > 0 && memchr(p, '\0', len) != NULL) {
		control_error(&c->out, "request holds a NUL byte");
		control_send(c);
		return;
	}
	const char *nl = len > 0 ? memchr(p, '\n', len) : NULL;
	if (nl == NULL) {
		if (len > CONTROL_LINE_MAX) {
			control_error(&c->out, "request longer than %d bytes", CONTROL_LINE_MAX);
			control_send(c);
		}
		return;
	}
	size_t ll = (size_t)(nl - p);
	if (ll > 0 && p[ll - 1] == '\r')
		ll--;
	control_answer(control.loop, control.cfg, p, ll, &c->out);
	char first[80];
	size_t fl = strcspn((const char *)buf_data(&c->out), "\n");
	log_sanitize(first, sizeof(first), buf_data(&c->out), fl);
	char reqlog[120];
	log_info("control: \"%.*s\": %s", (int)ll, log_sanitize(reqlog, sizeof(reqlog), p, ll),
		 first);
	control_send(c);
}

static void control_timeout(uv_timer_t *t)
{
	struct control_client *c = t->data;
	if (c->answered) {
		control_client_close(c);
		return;
	}
	control_error(&c->out, "no complete request within %d ms", CONTROL_TIMEOUT_MS);
	control_send(c);
	uv_timer_start(&c->timer, control_timeout, CONTROL_TIMEOUT_MS, 0); /* for the write */
}

static void control_accept(uv_stream_t *server, int status)
{
	if (status != 0)
		return;
	struct control_client *c = xcalloc(1, sizeof(*c));
	uv_pipe_init(control.loop, &c->pipe, 0);
	c->pipe.data = c;
	c->open = 1;
	if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0) {
		uv_close((uv_handle_t *)&c->pipe, control_client_closed);
		return;
	}
	uv_os_fd_t fd;
	struct ucred cr = {.pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1};
	socklen_t crl = sizeof(cr);
	errno = 0;
	bool known = uv_fileno((uv_handle_t *)&c->pipe, &fd) == 0 &&
		     getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crl) == 0;
	bool root = known && cr.uid == 0;
	if (control.nclients >= CONTROL_CLIENTS_MAX || !root) {
		if (!known)
			log_warn("control: refused a client whose uid is unknown: %s",
				 strerror(errno));
		else if (!root)
			log_warn("control: refused a client with uid %ld", (long)cr.uid);
		uv_close((uv_handle_t *)&c->pipe, control_client_closed);
		return;
	}
	uv_timer_init(control.loop, &c->timer);
	c->timer.data = c;
	c->open = 2;
	list_add_tail(&control.clients, &c->link);
	control.nclients++;
	uv_timer_start(&c->timer, control_timeout, CONTROL_TIMEOUT_MS, 0);
	uv_read_start((uv_stream_t *)&c->pipe, control_alloc, control_read);
}

/* A socket at path that nobody answers on was left by an earlier run and
 * goes; one that answers belongs to a running instance, and anything that
 * is not a socket (a file, a symlink) is not ours to remove. */
static bool control_clear_stale(const char *path, char *err, size_t errlen)
{
	struct stat sb;
	if (lstat(path, &sb) != 0)
		return true; /* bind reports what is wrong with the directory */
	if (!S_ISSOCK(sb.st_mode)) {
		snprintf(err, errlen, "control_socket %s: exists and is not a socket; not removed",
			 path);
		return false;
	}
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "control_socket %s: path too long", path);
		return false;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	/* Non-blocking: a live instance with a full backlog answers EAGAIN
	   rather than stalling the start. */
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		snprintf(err, errlen, "control_socket %s: socket: %s", path, strerror(errno));
		return false;
	}
	int r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	int e = errno;
	close(fd);
	if (r == 0 || e == EAGAIN) {
		snprintf(err, errlen,
			 "control_socket %s: another submitd is listening on it; not started",
			 path);
		return false;
	}
	if (e != ECONNREFUSED) {
		snprintf(err, errlen, "control_socket %s: %s", path, strerror(e));
		return false;
	}
	if (unlink(path) != 0 && errno != ENOENT) {
		snprintf(err, errlen, "control_socket %s: removing the stale socket: %s", path,
			 strerror(errno));
		return false;
	}
	return true;
}

bool control_start(uv_loop_t *loop, struct config *cfg, char *err, size_t errlen)
{
	list_init(&control.clients);
	control.loop = loop;
	control.started = time(NULL);
	control.cfg = config_ref(cfg);
	if (cfg->control_socket == NULL || cfg->control_socket[0] == '\0')
		return true;
	const char *path = cfg->control_socket;
	if (!control_clear_stale(path, err, errlen))
		return false;
	uv_pipe_init(loop, &control.server, 0);
	/* 0600 from the start: a chmod after bind could follow a symlink put
	   in its place. */
	mode_t old = umask(0177);
	int r = uv_pipe_bind(&control.server, path);
	umask(old);
	if (r == 0)
		r = uv_listen((uv_stream_t *)&control.server, 8, control_accept);
	if (r != 0) {
		snprintf(err, errlen, "control_socket %s: %s", path, uv_strerror(r));
		uv_close((uv_handle_t *)&control.server, NULL);
		return false;
	}
	control.listening = true;
	control.path = xstrdup(path);
	log_info("control socket %s (root only)", path);
	return true;
}

void control_reconfigure(struct config *cfg)
{
	const char *a = control.cfg != NULL ? control.cfg->control_socket : NULL;
	const char *b = cfg->control_socket;
	if ((a == NULL) != (b == NULL) || (a != NULL && strcmp(a, b) != 0))
		log_warn("reload: control_socket changed; it takes effect after a restart");
	config_unref(&control.cfg);
	control.cfg = config_ref(cfg);
}

void control_stop(void)
{
	if (control.clients.next != NULL) {
		struct list_link *pos, *tmp;
		list_for_each_safe(pos, tmp, &control.clients)
			control_client_close(list_entry(pos, struct control_client, link));
	}
	if (control.listening) {
		uv_close((uv_handle_t *)&control.server, NULL);
		control.listening = false;
		unlink(control.path);
	}
	free(control.path);
	control.path = NULL;
	if (control.cfg != NULL)
		config_unref(&control.cfg);
}
