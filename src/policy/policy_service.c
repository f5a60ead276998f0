/* policy/policy_service: the policy delegation client (policy_service.h).
 * The daemon's reply is hostile until parsed: bounded, one block, one
 * action line, printable text only. */
#include "config.h"
#include "policy/policy_service.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "core/buf.h"
#include "core/log.h"

struct policy_service_conf {
	bool unix_socket;
	char *path;                   /* unix: */
	struct sockaddr_storage addr; /* inet: */
	bool defer_by_default;        /* DEFER (451 4.3.5) or DUNNO */
};

struct policy_service_req {
	union {
		uv_handle_t h;
		uv_stream_t s;
		uv_tcp_t tcp;
		uv_pipe_t pipe;
	} u;
	uv_connect_t connect;
	uv_write_t wr;
	uv_timer_t timer;
	struct buf out, in;
	int open; /* handles not closed yet */
	bool done;
	bool connect_failed; /* at once, reported from the timer */
	const struct policy_service_conf *pc;
	char name[160]; /* for logs */
	policy_service_cb *cb;
	void *ctx;
};

bool policy_service_configured(const struct config *cfg)
{
	return cfg->policy_service != NULL;
}

bool policy_service_conf_load(struct config *cfg, char *err, size_t errlen)
{
	bool defer;
	const char *da = cfg->policy_service_default_action;
	if (strcasecmp(da, "DEFER") == 0)
		defer = true;
	else if (strcasecmp(da, "DUNNO") == 0)
		defer = false;
	else {
		snprintf(err, errlen, "policy_service_default_action: want DEFER or DUNNO");
		return false;
	}
	const char *s = cfg->check_policy_service;
	if (s == NULL || s[0] == '\0')
		return true;
	struct policy_service_conf *pc = xcalloc(1, sizeof(*pc));
	pc->defer_by_default = defer;
	cfg->policy_service = pc;
	if (strncmp(s, "unix:", 5) == 0) {
		if (s[5] != '/' || strlen(s + 5) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
			snprintf(err, errlen, "check_policy_service: unix: wants an absolute path");
			return false;
		}
		pc->unix_socket = true;
		pc->path = xstrdup(s + 5);
		return true;
	}
	char host[64];
	const char *p = strncmp(s, "inet:", 5) == 0 ? s + 5 : NULL;
	const char *colon = p != NULL ? strrchr(p, ':') : NULL;
	if (p == NULL || colon == NULL || colon == p || (size_t)(colon - p) >= sizeof(host)) {
		snprintf(err, errlen, "check_policy_service: want inet:ADDRESS:PORT or unix:PATH");
		return false;
	}
	memcpy(host, p, (size_t)(colon - p));
	host[colon - p] = '\0';
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	char *end;
	long port = strtol(colon + 1, &end, 10);
	if (strcmp(host, "localhost") == 0)
		snprintf(host, sizeof(host), "127.0.0.1");
	if (*end != '\0' || port < 1 || port > 65535 ||
	    (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&pc->addr) != 0 &&
	     uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&pc->addr) != 0)) {
		snprintf(err, errlen,
			 "check_policy_service: want inet:ADDRESS:PORT (an IP address, "
			 "no host name) or unix:PATH");
		return false;
	}
	return true;
}

void policy_service_conf_free(struct config *cfg)
{
	if (cfg->policy_service == NULL)
		return;
	free(cfg->policy_service->path);
	free(cfg->policy_service);
	cfg->policy_service = NULL;
}

/* ---- the reply ---- */

static void policy_service_reply(struct smtp_reply *r, int code, const char *enh, const char *text)
{
	memset(r, 0, sizeof(*r));
	r->code = code;
	snprintf(r->enh, sizeof(r->enh), "%s", enh);
	snprintf(r->text, sizeof(r->text), "%s", text);
}

/* "5.7.1 text": when text opens with an enhanced code of class cls (RFC
 * 3463), it goes to enh (once, not again in the text) and the rest is
 * returned; otherwise text as it is and enh untouched. */
static const char *policy_service_dsn(const char *text, char cls, char *enh, size_t enhsz)
{
	if (text[0] != cls || text[1] != '.')
		return text;
	const char *p = text + 2;
	size_t n = strspn(p, "0123456789");
	if (n == 0 || n > 3 || p[n] != '.')
		return text;
	p += n + 1;
	n = strspn(p, "0123456789");
	if (n == 0 || n > 3)
		return text;
	p += n;
	if (*p != '\0' && *p != ' ' && *p != '\t')
		return text;
	snprintf(enh, enhsz, "%.*s", (int)(p - text), text);
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

bool policy_service_parse(const char *reply, size_t len, struct smtp_reply *r, char *action,
			  size_t actionsz)
{
	memset(r, 0, sizeof(*r));
	action[0] = '\0';
	/* One block: lines up to the first empty one, printable ASCII only. */
	const char *end = NULL;
	for (size_t i = 0; i + 1 < len; i++)
		if (reply[i] == '\n' && reply[i + 1] == '\n') {
			end = reply + i + 1;
			break;
		}
	if (end == NULL)
		return false;
	const char *act = NULL;
	size_t actlen = 0;
	for (const char *p = reply; p < end;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = (size_t)(nl - p);
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)p[i] < 0x20 || (unsigned char)p[i] >= 0x7f)
				return false;
		if (n > 7 && strncmp(p, "action=", 7) == 0) {
			if (act != NULL)
				return false; /* two actions: which one? */
			act = p + 7;
			actlen = n - 7;
		}
		p = nl + 1;
	}
	if (act == NULL || actlen == 0 || actlen >= actionsz)
		return false;
	memcpy(action, act, actlen);
	action[actlen] = '\0';
	char verb[32];
	size_t vl = strcspn(action, " \t");
	if (vl >= sizeof(verb))
		return false;
	for (size_t i = 0; i < vl; i++)
		verb[i] = (char)toupper((unsigned char)action[i]);
	verb[vl] = '\0';
	const char *text = action + vl;
	while (*text == ' ' || *text == '\t')
		text++;
	if (strcmp(verb, "OK") == 0 || strcmp(verb, "DUNNO") == 0 ||
	    strcmp(verb, "DEFER_IF_REJECT") == 0 || strcmp(verb, "WARN") == 0 ||
	    strcmp(verb, "INFO") == 0 || strcmp(verb, "PREPEND") == 0)
		return true; /* code 0: go on */
	char enh[16];
	if (strcmp(verb, "REJECT") == 0) {
		snprintf(enh, sizeof(enh), "5.7.1");
		text = policy_service_dsn(text, '5', enh, sizeof(enh));
		policy_service_reply(r, 554, enh, *text ? text : "Access denied");
		return true;
	}
	if (strcmp(verb, "DEFER") == 0 || strcmp(verb, "DEFER_IF_PERMIT") == 0) {
		snprintf(enh, sizeof(enh), "4.7.1");
		text = policy_service_dsn(text, '4', enh, sizeof(enh));
		policy_service_reply(r, 450, enh, *text ? text : "Service unavailable");
		return true;
	}
	if (vl == 3 && (verb[0] == '4' || verb[0] == '5') && isdigit((unsigned char)verb[1]) &&
	    isdigit((unsigned char)verb[2])) {
		int code = atoi(verb);
		snprintf(enh, sizeof(enh), "%c.7.1", verb[0]);
		text = policy_service_dsn(text, verb[0], enh, sizeof(enh));
		policy_service_reply(r, code, enh, *text ? text : "Access denied");
		return true;
	}
	return false; /* HOLD, DISCARD, FILTER, REDIRECT, BCC, ...: no queue here */
}

/* ---- the request ---- */

static void policy_service_closed(uv_handle_t *h)
{
	struct policy_service_req *q = h->data;
	if (--q->open > 0)
		return;
	buf_free(&q->out);
	buf_free(&q->in);
	free(q);
}

static void policy_service_close(struct policy_service_req *q)
{
	uv_timer_stop(&q->timer);
	if (!uv_is_closing((uv_handle_t *)&q->timer))
		uv_close((uv_handle_t *)&q->timer, policy_service_closed);
	if (!uv_is_closing(&q->u.h))
		uv_close(&q->u.h, policy_service_closed);
}

/* Answers once: r NULL means "the daemon failed us": the default action. */
static void policy_service_finish(struct policy_service_req *q, const struct smtp_reply *r,
				  const char *why)
{
	if (q->done)
		return;
	q->done = true;
	struct smtp_reply d;
	if (r == NULL) {
		log_warn("policy service %s: %s; default action %s", q->name, why,
			 q->pc->defer_by_default ? "DEFER" : "DUNNO");
		memset(&d, 0, sizeof(d));
		if (q->pc->defer_by_default)
			policy_service_reply(&d, 451, "4.3.5", "Server configuration problem");
		r = &d;
	}
	policy_service_cb *cb = q->cb;
	q->cb = NULL;
	policy_service_close(q);
	if (cb != NULL)
		cb(q->ctx, r);
}

static void policy_service_timeout(uv_timer_t *t)
{
	struct policy_service_req *q = t->data;
	policy_service_finish(q, NULL, q->connect_failed ? "cannot connect" : "no answer in time");
}

static void policy_service_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	(void)hint;
	struct policy_service_req *q = h->data;
	size_t room = POLICY_SERVICE_REPLY_MAX + 1 - buf_len(&q->in);
	b->base = (char *)buf_reserve(&q->in, room);
	b->len = room;
}

static void policy_service_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	(void)b;
	struct policy_service_req *q = s->data;
	if (q->done)
		return;
	if (n < 0) {
		policy_service_finish(q, NULL,
				      n == UV_EOF ? "closed before the end of its answer"
						  : uv_strerror((int)n));
		return;
	}
	buf_commit(&q->in, (size_t)n);
	const char *p = (const char *)buf_data(&q->in);
	size_t len = buf_len(&q->in);
	bool complete = false;
	for (size_t i = 0; i + 1 < len; i++)
		if (p[i] == '\n' && p[i + 1] == '\n') {
			complete = true;
			break;
		}
	if (!complete) {
		if (len > POLICY_SERVICE_REPLY_MAX)
			policy_service_finish(q, NULL, "answer too long");
		return;
	}
	struct smtp_reply r;
	char action[POLICY_SERVICE_REPLY_MAX + 1];
	if (!policy_service_parse(p, len, &r, action, sizeof(action))) {
		char shown[200];
		log_sanitize(shown, sizeof(shown), p, len);
		char why[300];
		snprintf(why, sizeof(why), "cannot use its answer \"%s\"", shown);
		policy_service_finish(q, NULL, why);
		return;
	}
	if (r.code == 0 && action[0] != '\0' && strncasecmp(action, "OK", 2) != 0 &&
	    strncasecmp(action, "DUNNO", 5) != 0)
		log_info("policy service %s: %s", q->name, action);
	policy_service_finish(q, &r, NULL);
}

static void policy_service_written(uv_write_t *w, int status)
{
	struct policy_service_req *q = w->data;
	if (status != 0 && !q->done)
		policy_service_finish(q, NULL, uv_strerror(status));
}

static void policy_service_connected(uv_connect_t *c, int status)
{
	struct policy_service_req *q = c->data;
	if (q->done)
		return;
	if (status != 0) {
		policy_service_finish(q, NULL, uv_strerror(status));
		return;
	}
	uv_buf_t b = uv_buf_init((char *)buf_data(&q->out), (unsigned)buf_len(&q->out));
	q->wr.data = q;
	int r = uv_write(&q->wr, &q->u.s, &b, 1, policy_service_written);
	if (r == 0)
		r = uv_read_start(&q->u.s, policy_service_alloc, policy_service_read);
	if (r != 0)
		policy_service_finish(q, NULL, uv_strerror(r));
}

/* name=value; a value never holds a newline (it would end the request). */
static void policy_service_attr(struct buf *b, const char *name, const char *value)
{
	buf_printf(b, "%s=", name);
	for (const char *p = value != NULL ? value : ""; *p; p++)
		buf_append(b, (*p == '\n' || *p == '\r' || *p == '\0') ? "?" : p, 1);
	buf_append_str(b, "\n");
}

struct policy_service_req *policy_service_ask(uv_loop_t *loop, const struct config *cfg,
					      const struct policy_service_attrs *a,
					      policy_service_cb *cb, void *ctx)
{
	struct policy_service_req *q = xcalloc(1, sizeof(*q));
	const struct policy_service_conf *pc = cfg->policy_service;
	q->pc = pc;
	q->cb = cb;
	q->ctx = ctx;
	snprintf(q->name, sizeof(q->name), "%s", cfg->check_policy_service);
	char num[32];
	struct buf *b = &q->out;
	policy_service_attr(b, "request", "smtpd_access_policy");
	policy_service_attr(b, "protocol_state", a->protocol_state);
	policy_service_attr(b, "protocol_name", a->protocol_name);
	policy_service_attr(b, "helo_name", a->helo_name);
	policy_service_attr(b, "queue_id", a->queue_id);
	policy_service_attr(b, "sender", a->sender);
	policy_service_attr(b, "recipient", a->recipient);
	snprintf(num, sizeof(num), "%u", a->recipient_count);
	policy_service_attr(b, "recipient_count", num);
	policy_service_attr(b, "client_address", a->client_address);
	policy_service_attr(b, "client_name", "unknown");
	policy_service_attr(b, "reverse_client_name", "unknown");
	policy_service_attr(b, "instance", a->instance);
	policy_service_attr(b, "sasl_method", a->sasl_method);
	policy_service_attr(b, "sasl_username", a->sasl_username);
	policy_service_attr(b, "sasl_sender", "");
	snprintf(num, sizeof(num), "%llu", (unsigned long long)a->size);
	policy_service_attr(b, "size", num);
	policy_service_attr(b, "encryption_protocol", a->encryption_protocol);
	policy_service_attr(b, "server_address", a->server_address);
	snprintf(num, sizeof(num), "%u", a->server_port);
	policy_service_attr(b, "server_port", num);
	buf_append_str(b, "\n");

	uv_timer_init(loop, &q->timer);
	q->timer.data = q;
	q->open = 1;
	uv_timer_start(&q->timer, policy_service_timeout, cfg->policy_service_timeout_ms, 0);
	int r;
	if (pc->unix_socket) {
		uv_pipe_init(loop, &q->u.pipe, 0);
		q->u.h.data = q;
		q->open = 2;
		q->connect.data = q;
		uv_pipe_connect(&q->connect, &q->u.pipe, pc->path, policy_service_connected);
		r = 0; /* uv_pipe_connect reports through the callback */
	} else {
		uv_tcp_init(loop, &q->u.tcp);
		q->u.h.data = q;
		q->open = 2;
		q->connect.data = q;
		r = uv_tcp_connect(&q->connect, &q->u.tcp, (const struct sockaddr *)&pc->addr,
				   policy_service_connected);
	}
	if (r != 0) {
		/* Answered from the timer, on a later turn, never from here. */
		q->connect_failed = true;
		uv_timer_start(&q->timer, policy_service_timeout, 0, 0);
	}
	return q;
}

void policy_service_cancel(struct policy_service_req **rp)
{
	struct policy_service_req *q = *rp;
	*rp = NULL;
	if (q == NULL || q->done)
		return;
	q->done = true;
	q->cb = NULL;
	policy_service_close(q);
}
