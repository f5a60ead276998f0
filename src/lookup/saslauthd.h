/* saslauthd: async client for Cyrus SASL's saslauthd (docs/saslauthd.md).
 *
 * saslauthd checks a user name and a cleartext password (against sasldb,
 * PAM, shadow, LDAP, IMAP...). It knows no SASL mechanism, so this client
 * runs PLAIN (RFC 4616) and LOGIN itself and hands saslauthd the pair.
 *
 * Wire protocol, one request per connection on its UNIX socket: four counted
 * strings (a 2-byte big-endian length, then the bytes) for login, password,
 * service and realm; the answer is one counted string that starts "OK" or
 * "NO". saslauthd refuses any of the four longer than 256 bytes, so longer
 * ones are refused here without asking. As Cyrus SASL's client library
 * does, a login "user@realm" is sent as user and realm (split at the last
 * '@'); a login without '@' is sent with the configured realm. The user
 * name handed back on OK is the login as the client typed it.
 *
 * The request API mirrors lookup/dovecot_auth.h, with its types and its
 * contract (lookup/auth_backend.h puts both behind one seam):
 *  - the callback fires exactly once per step, never inside begin, continue
 *    or abort (a zero timer defers it);
 *  - OK, FAIL and TEMPFAIL are final; CONTINUE hands back a challenge and
 *    waits for saslauthd_continue() or saslauthd_abort();
 *  - every wait for saslauthd (connect, write, answer) has the request
 *    timeout; expiry, a refused connection, an answer that is cut short,
 *    longer than SASLAUTHD_MAX_REPLY or neither OK nor NO are TEMPFAIL;
 *  - abort never calls back; detach hands the remaining callbacks to
 *    another owner.
 * The password is wiped from every buffer once written or abandoned. */
#ifndef SUBMITD_SASLAUTHD_H
#define SUBMITD_SASLAUTHD_H

#include <stdbool.h>
#include <uv.h>

#include "lookup/dovecot_auth.h"

/* saslauthd's own limit for each of the four request strings. */
#define SASLAUTHD_MAX_FIELD 256
/* The longest answer read (saslauthd's replies are a few dozen bytes; its
 * own buffer for them is 1024). */
#define SASLAUTHD_MAX_REPLY 1024

struct saslauthd_client;
struct saslauthd_request;

/* service: sent as the service name ("smtp"); realm: sent as the user realm
 * ("" for none). Both are copied. Nothing connects until a request needs
 * it. */
struct saslauthd_client *saslauthd_client_create(uv_loop_t *loop, const char *socket_path,
						 const char *service, const char *realm,
						 unsigned request_timeout_ms);

/* Completes every live request with TEMPFAIL inside this call (as
 * dovecot_auth_client_destroy does), closes its handles and sets *c to NULL;
 * keep running the loop afterwards so the close callbacks free memory. */
void saslauthd_client_destroy(struct saslauthd_client **c);

/* "PLAIN LOGIN": what this client can run. */
const char *saslauthd_client_mechs(const struct saslauthd_client *c);

/* info->mech must be PLAIN or LOGIN (else FAIL); info->initial_resp_b64 as
 * in dovecot_auth_begin(). The other fields are not sent: saslauthd takes
 * none of them. Never NULL, except from callbacks fired by destroy. */
struct saslauthd_request *saslauthd_begin(struct saslauthd_client *c,
					  const struct dovecot_auth_request_info *info,
					  dovecot_auth_cb *cb, void *ctx);
void saslauthd_continue(struct saslauthd_request *req, const char *response_b64);
void saslauthd_abort(struct saslauthd_request **req);
void saslauthd_detach(struct saslauthd_request *req, dovecot_auth_cb *cb, void *ctx);

#endif
