/* relay: the downstream SMTP/LMTP client and its connection pool
 * (DESIGN.md §4, reference/downstream-relay.md).
 *
 * One pool per worker loop. A transaction borrows a greeted connection (or
 * opens one, trying the destinations in order until one greets us), forwards
 * MAIL, each RCPT and DATA one at a time, and passes every downstream verdict
 * back through its callback, exactly once per call. Failures of the path
 * itself become the 4xx replies of downstream-relay.md §6; a downstream
 * 4xx/5xx is passed through. A transaction freed before its end is aborted
 * downstream without the final dot (DESIGN.md invariant 2). */
#ifndef SUBMITD_RELAY_H
#define SUBMITD_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/config.h"
#include "smtp/addr.h"
#include "smtp/reply.h"

struct relay_pool;
struct relay_txn;

struct relay_pool *relay_pool_new(uv_loop_t *loop);
/* Closes idle connections; transactions must be gone. */
void relay_pool_free(struct relay_pool **pool);
/* Opens one connection to cfg's route ahead of time, to learn the
 * downstream's capabilities and warm the pool. */
void relay_pool_probe(struct relay_pool *pool, struct config *cfg);
/* The downstream's capabilities as last seen; false if never seen. */
bool relay_pool_caps(const struct relay_pool *pool, struct smtp_caps *caps_r);
/* Closes idle connections now (shutdown, reload). */
void relay_pool_flush(struct relay_pool *pool);

/* Called with the downstream's (or the synthesised) reply to each step. */
typedef void relay_txn_cb(void *ctx, const struct smtp_reply *reply);
/* Called when buffered content has drained below the high-water mark. */
typedef void relay_drain_cb(void *ctx);

struct relay_txn *relay_txn_new(struct relay_pool *pool, struct config *cfg, const char *log_id,
				relay_txn_cb *cb, relay_drain_cb *drain_cb, void *ctx);
/* Each of these is answered through cb, never before it returns. */
void relay_txn_mail(struct relay_txn *t, const struct smtp_mail_args *a);
void relay_txn_rcpt(struct relay_txn *t, const struct smtp_rcpt_args *a);
void relay_txn_data(struct relay_txn *t);
/* Content in canonical form; dot-stuffed on the way out. Returns true when
 * the caller should stop feeding until drain_cb (back-pressure). */
bool relay_txn_write(struct relay_txn *t, const uint8_t *p, size_t n);
void relay_txn_end(struct relay_txn *t);
/* Which destination and connection the transaction went through, for logs:
 * "127.0.0.1[127.0.0.1]:10025". */
const char *relay_txn_relay(const struct relay_txn *t);
/* Ends the transaction. If it did not finish, the downstream transaction is
 * aborted (RSET, or the connection closed during DATA). No callback after. */
void relay_txn_free(struct relay_txn **t);

#endif
