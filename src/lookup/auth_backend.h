/* auth_backend: the one seam between policy/auth.c and whatever checks
 * passwords: Dovecot's auth socket (lookup/dovecot_auth.h) or Cyrus
 * saslauthd (lookup/saslauthd.h). Exactly one is configured
 * (dovecot_auth_socket or saslauthd_socket).
 *
 * The vocabulary is dovecot_auth.h's (request info, result, callback) and so
 * is the contract: one callback per step, never inside the call that
 * started it; OK/FAIL/TEMPFAIL final; abort never calls back; detach moves
 * the remaining callbacks to another owner. A request belongs to the backend
 * that began it and is passed back to that backend only. */
#ifndef SUBMITD_AUTH_BACKEND_H
#define SUBMITD_AUTH_BACKEND_H

#include <stdbool.h>
#include <uv.h>

#include "lookup/dovecot_auth.h"

struct auth_backend;
struct auth_backend_request;

struct auth_backend *auth_backend_dovecot(uv_loop_t *loop, const char *socket_path,
					  unsigned request_timeout_ms);
struct auth_backend *auth_backend_saslauthd(uv_loop_t *loop, const char *socket_path,
					    const char *service, const char *realm,
					    unsigned request_timeout_ms);
/* As dovecot_auth_client_destroy(): live requests complete with TEMPFAIL
 * inside this call; keep running the loop afterwards. */
void auth_backend_destroy(struct auth_backend **b);

/* "Dovecot" or "saslauthd", for log lines. */
const char *auth_backend_name(const struct auth_backend *b);
/* Starts connecting where that means something (Dovecot's handshake). */
void auth_backend_connect(struct auth_backend *b);
/* Whether a request can be answered now (saslauthd: always; its socket is
 * opened per request). */
bool auth_backend_ready(const struct auth_backend *b);
/* The mechanisms the backend can run, space-separated, upper-case; "" while
 * Dovecot never completed a handshake. */
const char *auth_backend_mechs(const struct auth_backend *b);

struct auth_backend_request *auth_backend_begin(struct auth_backend *b,
						const struct dovecot_auth_request_info *info,
						dovecot_auth_cb *cb, void *ctx);
void auth_backend_continue(struct auth_backend *b, struct auth_backend_request *req,
			   const char *response_b64);
void auth_backend_abort(struct auth_backend *b, struct auth_backend_request **req);
void auth_backend_detach(struct auth_backend *b, struct auth_backend_request *req,
			 dovecot_auth_cb *cb, void *ctx);

#endif
