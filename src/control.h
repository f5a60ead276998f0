/* control: the control socket submitctl talks to (control_socket = PATH;
 * docs/limits.md "The control socket", man/submitctl.8).
 *
 * It runs on the main thread's loop: requests are rare and short (a store
 * lookup under its shard lock, a walk of the session list), the main loop
 * carries no mail, and an administrator can still hold or kick a login
 * while every worker is busy.
 *
 * One request per connection: a line of at most CONTROL_LINE_MAX bytes,
 * "[json ]VERB [ARG...]\n"; the answer is "ok\n" or "error: WHY\n",
 * then the body (text, or one JSON document), then the server closes.
 * Only root is served: the socket is made 0600 before privileges are
 * dropped (by root, or by the unit's unprivileged User=), and the peer's
 * uid must be 0 (SO_PEERCRED). */
#ifndef SUBMITD_CONTROL_H
#define SUBMITD_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "core/buf.h"
#include "control_parse.h"
#include "core/config.h"

#define CONTROL_CLIENTS_MAX 16
#define CONTROL_TIMEOUT_MS 5000

/* Listens on cfg->control_socket (nothing when unset). A socket there that
 * answers is another instance's: false. Only a stale socket is replaced.
 * False with the reason in err. */
/* s as a JSON string (quotes, backslashes, and \uNNNN for every byte that is
 * not printable ASCII), appended to b. */
void control_json_str(struct buf *b, const char *s);

bool control_start(uv_loop_t *loop, struct config *cfg, char *err, size_t errlen);
/* The snapshot holds and limits are reported against (after a reload). */
void control_reconfigure(struct config *cfg);
/* Closes the socket and every client; removes the socket file. */
void control_stop(void);

/* Builds the answer to one request line (no newline), as the socket sends
 * it; for tests and the socket alike. */
void control_answer(uv_loop_t *loop, const struct config *cfg, const char *line, size_t len,
		    struct buf *out);

#endif
