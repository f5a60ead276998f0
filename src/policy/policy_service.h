/* policy/policy_service: a client of Postfix's SMTP access policy
 * delegation protocol (Postfix's SMTPD_POLICY_README), so existing policy
 * daemons (postfwd, policyd-rate-limit, ...) keep deciding after a move
 * from Postfix (docs/limits.md "Policy daemons").
 *
 *   check_policy_service = inet:ADDRESS:PORT | unix:PATH
 *   policy_service_timeout = 10s
 *   policy_service_default_action = DEFER | DUNNO
 *
 * One connection per request: "name=value" lines and an empty line go out,
 * "action=..." and an empty line (at most POLICY_SERVICE_REPLY_MAX bytes)
 * come back, within policy_service_timeout from the connect. Actions:
 *   OK, DUNNO, DEFER_IF_REJECT, WARN, INFO, PREPEND   go on (the last
 *                                                     three are logged)
 *   REJECT [text]                                    554 5.7.1 text
 *   DEFER [text], DEFER_IF_PERMIT [text]             450 4.7.1 text
 *   4NN / 5NN [d.d.d] text                           as given
 * Anything else (HOLD, DISCARD, FILTER, REDIRECT, BCC need a queue), a
 * daemon that is down, slow, or answers something unreadable: the default
 * action, DEFER (451 4.3.5 Server configuration problem, as Postfix) or
 * DUNNO. Replies come back as struct smtp_reply (docs/design.md §9.7). */
#ifndef SUBMITD_POLICY_SERVICE_H
#define SUBMITD_POLICY_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/config.h"
#include "smtp/reply.h"

#define POLICY_SERVICE_REPLY_MAX 4096

/* Parses check_policy_service and policy_service_default_action into cfg.
 * False with the reason in err. */
bool policy_service_conf_load(struct config *cfg, char *err, size_t errlen);
void policy_service_conf_free(struct config *cfg);
/* True when cfg names a policy service. */
bool policy_service_configured(const struct config *cfg);

/* What Postfix sends; NULL strings are sent empty. */
struct policy_service_attrs {
	const char *protocol_state; /* "RCPT", "END-OF-MESSAGE" */
	const char *protocol_name;  /* "ESMTP" or "SMTP" */
	const char *helo_name;
	const char *queue_id;
	const char *sender;
	const char *recipient;
	unsigned recipient_count;
	const char *client_address;
	const char *server_address;
	unsigned server_port;
	const char *instance;
	const char *sasl_method;
	const char *sasl_username;
	uint64_t size;
	const char *encryption_protocol;
};

/* r->code 0: go on; otherwise the reply. */
typedef void policy_service_cb(void *ctx, const struct smtp_reply *r);
struct policy_service_req;

/* Asks the daemon; cb answers on a later loop turn, exactly once, unless
 * cancelled first. Never returns NULL. */
struct policy_service_req *policy_service_ask(uv_loop_t *loop, const struct config *cfg,
					      const struct policy_service_attrs *a,
					      policy_service_cb *cb, void *ctx);
/* The callback will not fire; *rp becomes NULL (a NULL *rp is ignored). */
void policy_service_cancel(struct policy_service_req **rp);

/* Turns one reply block ("action=...\n...\n\n", as read) into r; false when
 * it cannot be read (then the default action applies). For tests. */
bool policy_service_parse(const char *reply, size_t len, struct smtp_reply *r, char *action,
			  size_t actionsz);

#endif
