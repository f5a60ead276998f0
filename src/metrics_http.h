/* metrics_http: GET /metrics on metrics_listen, served by a thread of its
 * own so that a scrape never runs on a worker loop (docs/observability.md).
 * Every byte from the socket is hostile: one request per connection, its
 * request line and header fields within METRICS_HTTP_REQUEST_MAX bytes,
 * whole within METRICS_HTTP_DEADLINE_MS, no NUL, at most
 * METRICS_HTTP_CLIENTS_MAX connections at a time (more are closed at once). */
#ifndef SUBMITD_METRICS_HTTP_H
#define SUBMITD_METRICS_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/config.h"

#define METRICS_HTTP_REQUEST_MAX 4096
#define METRICS_HTTP_DEADLINE_MS 5000
#define METRICS_HTTP_CLIENTS_MAX 16
/* After the answer, how long a client that neither reads nor closes keeps
 * its connection. */
#define METRICS_HTTP_LINGER_MS 1000

/* Binds cfg->metrics_listen (main thread, before privileges are dropped);
 * false with err filled in when it cannot. Nothing to do when unset. */
bool metrics_http_open(const struct config *cfg, char *err, size_t errlen);
/* Starts serving on its own thread. */
void metrics_http_start(void);
/* Stops the thread and closes the socket. */
void metrics_http_stop(void);

/* The exposition (OpenMetrics 1.0 when om, else text format 0.0.4), and
 * the `submitctl stats` answer (the same figures, plus the top logins),
 * appended to b. Safe from any thread. */
void metrics_scrape(struct buf *b, bool om);
void metrics_stats(struct buf *b, bool json);

#endif
