#include "config.h"
#include "lookup/auth_backend.h"

#include <stdlib.h>

#include "core/buf.h"
#include "lookup/saslauthd.h"

/* A request handle is the backend's own request pointer, converted; only
 * the backend that made it converts it back. */
struct auth_backend {
	struct dovecot_auth_client *dovecot;
	struct saslauthd_client *saslauthd;
	bool sasl; /* which one: the pointers go NULL while being destroyed */
};

struct auth_backend *auth_backend_dovecot(uv_loop_t *loop, const char *socket_path,
					  unsigned request_timeout_ms)
{
	struct auth_backend *b = xcalloc(1, sizeof(*b));
	b->dovecot = dovecot_auth_client_create(loop, socket_path, request_timeout_ms);
	return b;
}

struct auth_backend *auth_backend_saslauthd(uv_loop_t *loop, const char *socket_path,
					    const char *service, const char *realm,
					    unsigned request_timeout_ms)
{
	struct auth_backend *b = xcalloc(1, sizeof(*b));
	b->sasl = true;
	b->saslauthd =
		saslauthd_client_create(loop, socket_path, service, realm, request_timeout_ms);
	return b;
}

void auth_backend_destroy(struct auth_backend **bp)
{
	struct auth_backend *b = *bp;
	if (b == NULL)
		return;
	/* The callbacks fired here may still abort through b. */
	if (b->dovecot != NULL)
		dovecot_auth_client_destroy(&b->dovecot);
	if (b->saslauthd != NULL)
		saslauthd_client_destroy(&b->saslauthd);
	*bp = NULL;
	free(b);
}

const char *auth_backend_name(const struct auth_backend *b)
{
	return b->sasl ? "saslauthd" : "Dovecot";
}

void auth_backend_connect(struct auth_backend *b)
{
	if (b->dovecot != NULL)
		dovecot_auth_client_connect(b->dovecot);
}

bool auth_backend_ready(const struct auth_backend *b)
{
	return b->dovecot != NULL ? dovecot_auth_client_ready(b->dovecot) : b->saslauthd != NULL;
}

const char *auth_backend_mechs(const struct auth_backend *b)
{
	if (b->dovecot != NULL)
		return dovecot_auth_client_mechs(b->dovecot);
	return b->saslauthd != NULL ? saslauthd_client_mechs(b->saslauthd) : "";
}

struct auth_backend_request *auth_backend_begin(struct auth_backend *b,
						const struct dovecot_auth_request_info *info,
						dovecot_auth_cb *cb, void *ctx)
{
	if (b->dovecot != NULL)
		return (struct auth_backend_request *)dovecot_auth_begin(b->dovecot, info, cb, ctx);
	if (b->saslauthd != NULL)
		return (struct auth_backend_request *)saslauthd_begin(b->saslauthd, info, cb, ctx);
	return NULL; /* only while being destroyed */
}

void auth_backend_continue(struct auth_backend *b, struct auth_backend_request *req,
			   const char *response_b64)
{
	if (b->sasl)
		saslauthd_continue((struct saslauthd_request *)req, response_b64);
	else
		dovecot_auth_continue((struct dovecot_auth_request *)req, response_b64);
}

void auth_backend_abort(struct auth_backend *b, struct auth_backend_request **req)
{
	if (*req == NULL)
		return;
	if (b->sasl) {
		struct saslauthd_request *r = (struct saslauthd_request *)*req;
		saslauthd_abort(&r);
	} else {
		struct dovecot_auth_request *r = (struct dovecot_auth_request *)*req;
		dovecot_auth_abort(&r);
	}
	*req = NULL;
}

void auth_backend_detach(struct auth_backend *b, struct auth_backend_request *req,
			 dovecot_auth_cb *cb, void *ctx)
{
	if (b->sasl)
		saslauthd_detach((struct saslauthd_request *)req, cb, ctx);
	else
		dovecot_auth_detach((struct dovecot_auth_request *)req, cb, ctx);
}
