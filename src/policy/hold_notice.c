/* policy/hold_notice: the message that tells someone a login was held
 * (hold_notice.h). */
#include "config.h"
#include "policy/hold_notice.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/list.h"
#include "core/log.h"
#include "lookup/table_registry.h"
#include "relay/relay.h"
#include "smtp/addr.h"

/* ---- the message ---- */

/* src as printable ASCII, at most max bytes of it (then "..."): what a
 * client chose never brings a line break or a control byte along. */
static void hold_notice_clean(char *dst, size_t dstsz, const char *src, size_t max)
{
	size_t n = 0, i = 0;
	for (; src[i] != '\0' && i < max && n + 4 < dstsz; i++) {
		unsigned char ch = (unsigned char)src[i];
		dst[n++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
	}
	if (src[i] != '\0' && n + 3 < dstsz) {
		memcpy(dst + n, "...", 3);
		n += 3;
	}
	dst[n] = '\0';
}

static void hold_notice_date(time_t t, char *out, size_t outsz)
{
	struct tm tm;
	gmtime_r(&t, &tm);
	/* RFC 5322 §3.3, in English whatever the locale */
	static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	snprintf(out, outsz, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday % 7],
		 tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
		 tm.tm_sec);
}

static void hold_notice_iso(time_t t, char *out, size_t outsz)
{
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, outsz, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void hold_notice_format(const struct config *cfg, const struct limits_hold *h, time_t now,
			const char *id, struct buf *out)
{
	char login[80], reason[80], note[220], client[70], host[260], from[300], to[300];
	char date[64], since[32], until[32] = "until released";
	/* In the Subject the login is cut to 64 bytes: the line stays short. */
	hold_notice_clean(login, sizeof(login), h->login, 64);
	hold_notice_clean(reason, sizeof(reason), h->reason, 64);
	hold_notice_clean(note, sizeof(note), h->note, 200);
	hold_notice_clean(client, sizeof(client), h->client[0] ? h->client : "-", 64);
	hold_notice_clean(host, sizeof(host), cfg->myhostname ? cfg->myhostname : "localhost", 253);
	const char *snd = cfg->hold_notify_sender;
	if (snd != NULL && snd[0] != '\0')
		hold_notice_clean(from, sizeof(from), snd, 254);
	else
		snprintf(from, sizeof(from), "MAILER-DAEMON@%s", host);
	hold_notice_clean(to, sizeof(to), cfg->hold_notify_recipient, 254);
	hold_notice_date(now, date, sizeof(date));
	hold_notice_iso(h->since, since, sizeof(since));
	if (h->until != 0)
		hold_notice_iso(h->until, until, sizeof(until));
	char full[300];
	hold_notice_clean(full, sizeof(full), h->login, 255);
	/* The release command is shown ready to paste only when no shell
	   would read anything into the login. */
	bool plain = h->login[0] != '\0' && h->login[0] != '-' &&
		     strspn(h->login, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				      "0123456789@._+-") == strlen(h->login);
	buf_printf(out,
		   "Date: %s\r\n"
		   "Message-ID: <hold.%s@%s>\r\n"
		   "From: Mail submission <%s>\r\n"
		   "To: <%s>\r\n"
		   "Subject: login %s held: %s\r\n"
		   "Auto-Submitted: auto-generated\r\n"
		   "MIME-Version: 1.0\r\n"
		   "Content-Type: text/plain; charset=us-ascii\r\n"
		   "Content-Transfer-Encoding: 7bit\r\n"
		   "\r\n"
		   "submitd on %s held a login: it may still log in, but every message\r\n"
		   "it tries to send is refused (554 5.7.1) until the hold ends.\r\n"
		   "\r\n"
		   "Login:   %s\r\n"
		   "Reason:  %s\r\n"
		   "Figures: %s\r\n"
		   "Client:  %s\r\n"
		   "Since:   %s\r\n"
		   "Until:   %s\r\n"
		   "\r\n"
		   "Release it, once the account is safe again, with:\r\n"
		   "  submitctl release %s\r\n",
		   date, id, host, from, to, login, reason, host, full, reason, note, client, since,
		   until, plain ? full : "LOGIN (this login holds bytes a shell would read)");
}

/* ---- configuration ---- */

static bool hold_notice_addr_ok(const char *a)
{
	char cmd[600];
	struct smtp_rcpt_args r;
	int n = snprintf(cmd, sizeof(cmd), "TO:<%s>", a);
	return n > 0 && (size_t)n < sizeof(cmd) && strchr(a, '@') != NULL &&
	       smtp_rcpt_args_parse(cmd, (size_t)n, &r, NULL) == SMTP_ADDR_OK && !r.path.utf8;
}

bool hold_notice_conf_check(const struct config *cfg, char *err, size_t errlen)
{
	const char *rcpt = cfg->hold_notify_recipient, *snd = cfg->hold_notify_sender;
	if (rcpt != NULL && rcpt[0] != '\0' && !hold_notice_addr_ok(rcpt)) {
		snprintf(err, errlen, "hold_notify_recipient: want one address, user@domain");
		return false;
	}
	if (snd != NULL && snd[0] != '\0' && !hold_notice_addr_ok(snd)) {
		snprintf(err, errlen,
			 "hold_notify_sender: want one address, user@domain (empty: <>)");
		return false;
	}
	return true;
}

/* ---- sending ---- */

static atomic_uint hold_notice_inflight;
static pthread_mutex_t hold_notice_lock = PTHREAD_MUTEX_INITIALIZER;
static time_t hold_notice_minute;
static unsigned hold_notice_sent, hold_notice_dropped;
static atomic_uint hold_notice_seq;
/* Every notice not yet closed, on whichever loop (hold_notice_cancel()). */
static struct list_link hold_notice_all = {&hold_notice_all, &hold_notice_all};

enum hold_notice_step { HN_MAIL, HN_RCPT, HN_DATA, HN_END, HN_DONE };

struct hold_notice {
	uv_timer_t timer;      /* the deadline, then the clean-up on the next turn */
	struct list_link link; /* on hold_notice_all until closed */
	struct config *cfg;
	struct table_registry *tables;
	struct relay_pool *pool;
	struct relay_txn *txn;
	enum hold_notice_step step;
	char login[80];
	char id[64];
	struct smtp_rcpt_args rcpt;
	struct buf msg;
};

/* Counts one notice against the minute's budget; false when it is spent
 * (logged once a minute with how many were not sent). */
static bool hold_notice_admit(const char *login)
{
	time_t now = time(NULL);
	bool ok;
	unsigned dropped = 0;
	pthread_mutex_lock(&hold_notice_lock);
	if (now / 60 != hold_notice_minute) {
		dropped = hold_notice_dropped;
		hold_notice_minute = now / 60;
		hold_notice_sent = 0;
		hold_notice_dropped = 0;
	}
	ok = hold_notice_sent < HOLD_NOTICE_PER_MINUTE;
	if (ok)
		hold_notice_sent++;
	else if (hold_notice_dropped++ == 0)
		log_warn("hold notice for %s: not sent: %d sent this minute already (and the "
			 "next ones this minute are not either)",
			 login, HOLD_NOTICE_PER_MINUTE);
	pthread_mutex_unlock(&hold_notice_lock);
	if (dropped > 0)
		log_warn("hold notice: %u not sent in the last minute (at most %d a minute)",
			 dropped, HOLD_NOTICE_PER_MINUTE);
	return ok;
}

static void hold_notice_closed(uv_handle_t *h)
{
	struct hold_notice *n = h->data;
	pthread_mutex_lock(&hold_notice_lock);
	list_remove(&n->link);
	pthread_mutex_unlock(&hold_notice_lock);
	buf_free(&n->msg);
	config_unref(&n->cfg);
	free(n);
	atomic_fetch_sub(&hold_notice_inflight, 1);
}

static void hold_notice_cleanup(uv_timer_t *t)
{
	struct hold_notice *n = t->data;
	relay_txn_free(&n->txn); /* aborts an unfinished transaction */
	relay_pool_free(&n->pool);
	table_registry_free(&n->tables);
	uv_close((uv_handle_t *)&n->timer, hold_notice_closed);
}

/* The outcome, once: logged, and everything goes on the next loop turn
 * (never from inside the relay's own callback). */
static void hold_notice_finish(struct hold_notice *n, const char *what, const struct smtp_reply *r)
{
	if (n->step == HN_DONE)
		return;
	n->step = HN_DONE;
	if (r != NULL && r->code >= 200 && r->code < 300)
		log_info("hold notice for %s: sent to <%s> through %s: %d %s", n->login,
			 n->rcpt.path.addr, relay_txn_relay(n->txn), r->code, r->text);
	else if (r != NULL)
		log_warn("hold notice for %s: not sent to <%s>: %s: %d %s %s", n->login,
			 n->rcpt.path.addr, what, r->code, r->enh, r->text);
	else
		log_warn("hold notice for %s: not sent to <%s>: %s", n->login, n->rcpt.path.addr,
			 what);
	uv_timer_stop(&n->timer);
	uv_timer_start(&n->timer, hold_notice_cleanup, 0, 0);
}

static void hold_notice_timeout(uv_timer_t *t)
{
	hold_notice_finish(t->data, "no answer in time", NULL);
}

static void hold_notice_drain(void *ctx)
{
	(void)ctx; /* the message is small and written whole */
}

static void hold_notice_cb(void *ctx, const struct smtp_reply *r)
{
	struct hold_notice *n = ctx;
	bool ok = r->code >= 200 && r->code < 400;
	switch (n->step) {
	case HN_MAIL:
		if (!ok)
			break;
		n->step = HN_RCPT;
		relay_txn_rcpt(n->txn, &n->rcpt, false);
		return;
	case HN_RCPT:
		if (!ok)
			break;
		n->step = HN_DATA;
		relay_txn_data(n->txn);
		return;
	case HN_DATA:
		if (r->code != 354)
			break;
		n->step = HN_END;
		relay_txn_write(n->txn, buf_data(&n->msg), buf_len(&n->msg));
		relay_txn_end(n->txn);
		return;
	case HN_END:
		hold_notice_finish(n, "the message", r);
		return;
	case HN_DONE:
		return;
	}
	static const char *const steps[] = {"MAIL", "RCPT", "DATA"};
	hold_notice_finish(n, steps[n->step], r);
}

void hold_notice_send(uv_loop_t *loop, const struct config *cfg, const struct limits_hold *h)
{
	const char *to = cfg->hold_notify_recipient;
	if (to == NULL || to[0] == '\0')
		return;
	char login[80];
	hold_notice_clean(login, sizeof(login), h->login, 64);
	if (atomic_fetch_add(&hold_notice_inflight, 1) >= HOLD_NOTICE_INFLIGHT) {
		atomic_fetch_sub(&hold_notice_inflight, 1);
		log_warn("hold notice for %s: not sent: %d in flight already", login,
			 HOLD_NOTICE_INFLIGHT);
		return;
	}
	if (!hold_notice_admit(login)) {
		atomic_fetch_sub(&hold_notice_inflight, 1);
		return;
	}
	struct hold_notice *n = xcalloc(1, sizeof(*n));
	memcpy(n->login, login, sizeof(login));
	n->cfg = config_ref((struct config *)cfg);
	snprintf(n->id, sizeof(n->id), "%lld.%d.%u", (long long)time(NULL), (int)getpid(),
		 atomic_fetch_add(&hold_notice_seq, 1));
	char cmd[600];
	int cl = snprintf(cmd, sizeof(cmd), "TO:<%s>", to);
	struct smtp_mail_args m;
	memset(&m, 0, sizeof(m));
	const char *snd = cfg->hold_notify_sender != NULL ? cfg->hold_notify_sender : "";
	int ml = snprintf(m.path.addr, sizeof(m.path.addr), "%s", snd);
	const char *at = strrchr(m.path.addr, '@');
	m.path.local_len = at != NULL ? (size_t)(at - m.path.addr) : 0;
	hold_notice_format(cfg, h, time(NULL), n->id, &n->msg);
	m.has_size = true;
	m.size = buf_len(&n->msg);
	uv_timer_init(loop, &n->timer);
	n->timer.data = n;
	pthread_mutex_lock(&hold_notice_lock);
	list_add_tail(&hold_notice_all, &n->link);
	pthread_mutex_unlock(&hold_notice_lock);
	/* hold_notice_conf_check() passed both at load */
	if (cl <= 0 || (size_t)cl >= sizeof(cmd) || ml < 0 || (size_t)ml >= sizeof(m.path.addr) ||
	    smtp_rcpt_args_parse(cmd, (size_t)cl, &n->rcpt, NULL) != SMTP_ADDR_OK) {
		n->step = HN_DONE;
		log_warn("hold notice for %s: not sent: bad hold_notify_recipient", login);
		uv_timer_start(&n->timer, hold_notice_cleanup, 0, 0);
		return;
	}
	n->tables = table_registry_new(loop);
	n->pool = relay_pool_new(loop, n->tables);
	char logid[96];
	snprintf(logid, sizeof(logid), "hold-notice %s", n->id);
	n->txn = relay_txn_new(n->pool, n->cfg, logid, hold_notice_cb, hold_notice_drain, n);
	uv_timer_start(&n->timer, hold_notice_timeout, HOLD_NOTICE_TIMEOUT_MS, 0);
	n->step = HN_MAIL;
	relay_txn_mail(n->txn, &m);
}

void hold_notice_cancel(uv_loop_t *loop)
{
	/* Only this loop's thread frees its notices, so the ones found stay
	   valid after the lock is dropped; the list is walked once under it. */
	struct hold_notice *mine[HOLD_NOTICE_INFLIGHT * 2];
	size_t k = 0;
	pthread_mutex_lock(&hold_notice_lock);
	struct list_link *l, *tmp;
	list_for_each_safe(l, tmp, &hold_notice_all)
	{
		struct hold_notice *n = list_entry(l, struct hold_notice, link);
		if (n->timer.loop == loop && n->step != HN_DONE &&
		    k < sizeof(mine) / sizeof(mine[0]))
			mine[k++] = n;
	}
	pthread_mutex_unlock(&hold_notice_lock);
	for (size_t i = 0; i < k; i++)
		hold_notice_finish(mine[i], "shutting down", NULL);
}
