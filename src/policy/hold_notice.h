/* policy/hold_notice: the notification message sent when a login is held
 * (docs/limits.md "Telling someone"):
 *
 *   hold_notify_recipient = postmaster@example.org
 *   hold_notify_sender    = (empty: the null sender <>, From: MAILER-DAEMON@myhostname)
 *
 * One short RFC 5322 message per hold, through the downstream the sessions
 * use (relay/relay.h, relayhost and sender_relay_maps as for any message),
 * on the loop that made the hold, never waiting: it owns a relay pool and
 * a table registry of its own for its one transaction and frees them after.
 * Bounded: one message per hold and no retry, at most
 * HOLD_NOTICE_INFLIGHT in flight and HOLD_NOTICE_PER_MINUTE sent a minute
 * in the process (the rest is logged, not sent), HOLD_NOTICE_TIMEOUT_MS
 * for the whole transaction. Every outcome is logged.
 *
 * Logins, reasons and figures hold bytes a client chose: every value is
 * cut down to printable ASCII (anything else becomes '?') and to a
 * bounded length before it goes into a header or the body, so no CR, LF,
 * NUL or control byte reaches the message. */
#ifndef SUBMITD_POLICY_HOLD_NOTICE_H
#define SUBMITD_POLICY_HOLD_NOTICE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>
#include <uv.h>

#include "core/buf.h"
#include "core/config.h"
#include "policy/limits_store.h"

#define HOLD_NOTICE_INFLIGHT 4
#define HOLD_NOTICE_PER_MINUTE 10
#define HOLD_NOTICE_TIMEOUT_MS 60000

/* Checks hold_notify_recipient and hold_notify_sender (each one address
 * the SMTP parser takes; the sender may be empty). False with why in err. */
bool hold_notice_conf_check(const struct config *cfg, char *err, size_t errlen);

/* Sends the notice for h when hold_notify_recipient is set. */
void hold_notice_send(uv_loop_t *loop, const struct config *cfg, const struct limits_hold *h);

/* Gives up the notices in flight on loop (logged, their downstream
 * connection closed without a final dot): a stopping loop is not kept
 * running by them. Call on loop's thread once nothing there can make a
 * hold any more. */
void hold_notice_cancel(uv_loop_t *loop);

/* The message, CRLF lines, as it goes out (without dot-stuffing): for
 * tests. now dates it; id is the Message-ID's unique part. */
void hold_notice_format(const struct config *cfg, const struct limits_hold *h, time_t now,
			const char *id, struct buf *out);

#endif
