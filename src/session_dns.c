/* session_dns: reject_unknown_sender_domain and
 * reject_unknown_recipient_domain in the session's restriction lists
 * (policy/restrictions.h RESTRICTIONS_DNS): the lookup on the worker's
 * resolver (lookup/dns.h), then Postfix's reply or the rest of the list. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "lookup/dns.h"
#include "policy/restrictions.h"
#include "relay/relay.h"
#include "session_impl.h"
#include "worker.h"

static void session_dns_cb_do(struct session *s, const struct dns_result *r)
{
	s->dns_req = NULL;
	const char *addr = s->dns_rcpt ? s->txn->rcpt.path.addr : s->txn->mail.path.addr;
	const char *at = strrchr(addr, '@');
	const char *domain = at != NULL ? at + 1 : "";
	struct smtp_reply no;
	if (restrictions_unknown_domain_reply(addr, domain, s->dns_rcpt,
					      s->cfg->unknown_address_reject_code, r->status,
					      r->null_mx, r->malformed, &no)) {
		bool later = r->status == DNS_TEMPFAIL && !r->null_mx &&
			     !s->cfg->unknown_address_tempfail_defer;
		log_info("%s: reject_unknown_%s_domain: <%s>: %s%s", s->id,
			 s->dns_rcpt ? "recipient" : "sender", addr, r->why,
			 later ? " (defer_if_permit)" : "");
		if (!later) {
			session_complete(s, &no);
			return;
		}
		/* Postfix's defer_if_permit: a later reject still wins */
		if (s->dns_deferred == NULL) {
			s->dns_deferred = xmalloc(sizeof(*s->dns_deferred));
			*s->dns_deferred = no;
		}
	}
	session_restr_run(s, s->restr_next);
}

bool session_dns_deferred(struct session *s)
{
	if (s->dns_deferred == NULL)
		return false;
	struct smtp_reply r = *s->dns_deferred;
	free(s->dns_deferred);
	s->dns_deferred = NULL;
	session_complete(s, &r);
	return true;
}

static void session_dns_cb(void *ctx, const struct dns_result *r)
{
	SESSION_TIMED((struct session *)ctx, session_dns_cb_do(ctx, r));
}

void session_dns_check(struct session *s, const struct restrictions *list,
		       const struct restrictions_facts *f)
{
	bool rcpt = false;
	const char *domain = NULL;
	restrictions_dns_address(list, s->restr_next, f, &rcpt, &domain);
	s->dns_rcpt = rcpt;
	s->dns_req = dns_domain_check(relay_pool_dns(s->w->relay), s->cfg, domain ? domain : "",
				      session_dns_cb, s);
}
