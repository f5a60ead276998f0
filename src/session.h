/* session: one client connection, from accept to close. The only place that
 * knows the order of the chain (docs/design.md §2):
 *   conn (+TLS) -> smtp server -> policy -> relay -> downstream.
 * Teardown runs the other way: the server is told the connection is gone,
 * the relay transaction is aborted, then the connection is closed and the
 * memory freed in its close callback. */
#ifndef SUBMITD_SESSION_H
#define SUBMITD_SESSION_H

#include <uv.h>

#include "core/config.h"
#include "worker.h"

/* Starts the session of a connection just accepted (fd, non-blocking) on a
 * listening socket for cfg->listens[listen_idx]; takes fd over. */
void session_accept(struct worker *w, int fd, size_t listen_idx);
/* Logs what a stopping worker waits for: sessions in DATA (and the oldest
 * one's age) and the others. */
void session_log_waiting(struct worker *w, const char *what);
/* Graceful stop: every session finishes its transaction, then gets 421. */
void session_shutdown_all(struct worker *w);

#endif
