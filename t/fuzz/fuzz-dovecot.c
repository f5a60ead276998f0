/* fuzz-dovecot: arbitrary bytes from "Dovecot" into the auth client.
 *
 * The client runs without a socket (dovecot_auth_client_fake_connect()),
 * with three requests queued before the handshake, so inputs that complete
 * a handshake (see corpus/dovecot/) reach the reply parser with live ids 1-3.
 * Three passes per input:
 *  1. whole buffer, then the loop delivers callbacks;
 *  2. one byte at a time, then the loop: results must equal pass 1
 *     (docs/design.md §9.3: resumable parsers agree whatever the chunking);
 *  3. small chunks with loop turns between them, answering challenges or
 *     aborting, to exercise the request state machine.
 * Every pass ends with the client destroyed and no handle left on the loop
 * (docs/design.md invariant 9: each request completes exactly once). */
#include "config.h"

#include "core/log.h"
#include "lookup/dovecot_auth.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { FUZZ_NREQ = 3 };

struct fuzz_req {
	struct dovecot_auth_request *req;
	int calls, finals;
	bool interactive;
	char trace[512];
	size_t tlen;
};

static void fuzz_cb(void *ctx, enum dovecot_auth_result r, const char *user, const char *chal,
		    const char *reason)
{
	struct fuzz_req *x = ctx;
	x->calls++;
	int n = snprintf(x->trace + x->tlen, sizeof(x->trace) - x->tlen, "%d|%s|%s|%s;", (int)r,
			 user ? user : "-", chal ? chal : "-", reason ? reason : "-");
	if (n > 0)
		x->tlen = (size_t)n >= sizeof(x->trace) - x->tlen ? sizeof(x->trace) - 1 : x->tlen + (size_t)n;
	if (r != DOVECOT_AUTH_CONTINUE) {
		x->finals++;
		x->req = NULL;
		if (x->finals > 1)
			abort(); /* a request completed twice */
		return;
	}
	if (!x->interactive)
		return;
	/* Answer odd-numbered challenges, abort on the others. */
	if (x->calls % 2 == 1)
		dovecot_auth_continue(x->req, "dGVzdA==");
	else
		dovecot_auth_abort(&x->req);
}

static void fuzz_pass(const uint8_t *data, size_t size, int mode, struct fuzz_req *reqs)
{
	uv_loop_t loop;
	if (uv_loop_init(&loop) != 0)
		abort();
	struct dovecot_auth_client *c = dovecot_auth_client_create(&loop, "/nonexistent/fuzz-dovecot", 1000);
	dovecot_auth_client_fake_connect(c);
	static const struct dovecot_auth_request_info infos[FUZZ_NREQ] = {
		{.mech = "PLAIN", .remote_ip = "192.0.2.1", .initial_resp_b64 = "AGEAYg=="},
		{.mech = "LOGIN", .remote_ip = "192.0.2.2", .secured = true},
		{.mech = "PLAIN", .local_name = "x\ty", .initial_resp_b64 = ""},
	};
	memset(reqs, 0, sizeof(*reqs) * FUZZ_NREQ);
	for (int i = 0; i < FUZZ_NREQ; i++) {
		reqs[i].interactive = mode == 3;
		reqs[i].req = dovecot_auth_begin(c, &infos[i], fuzz_cb, &reqs[i]);
	}
	if (mode == 1) {
		dovecot_auth_client_feed(c, data, size);
	} else if (mode == 2) {
		for (size_t i = 0; i < size; i++)
			dovecot_auth_client_feed(c, data + i, 1);
	} else {
		size_t step = size > 0 ? (size_t)(data[0] % 7) + 1 : 1;
		for (size_t i = 0; i < size; i += step) {
			dovecot_auth_client_feed(c, data + i, size - i < step ? size - i : step);
			uv_run(&loop, UV_RUN_NOWAIT);
		}
	}
	uv_run(&loop, UV_RUN_NOWAIT);
	/* Requests still waiting for the caller are aborted, like a session
	 * that goes away; destroy completes the rest. */
	for (int i = 0; i < FUZZ_NREQ; i++)
		if (reqs[i].req != NULL && reqs[i].finals == 0 && reqs[i].calls > 0)
			dovecot_auth_abort(&reqs[i].req);
	dovecot_auth_client_destroy(&c);
	uv_run(&loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&loop) != 0)
		abort(); /* a handle leaked */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool init;
	if (!init) {
		log_open(LOG_TARGET_STDERR, 0, LOG_CRIT); /* protocol errors are expected */
		init = true;
	}
	if (size > 4 * DOVECOT_AUTH_MAX_LINE)
		return 0;
	struct fuzz_req whole[FUZZ_NREQ], bytes[FUZZ_NREQ], inter[FUZZ_NREQ];
	fuzz_pass(data, size, 1, whole);
	fuzz_pass(data, size, 2, bytes);
	for (int i = 0; i < FUZZ_NREQ; i++)
		if (whole[i].tlen != bytes[i].tlen || memcmp(whole[i].trace, bytes[i].trace, whole[i].tlen) != 0) {
			fprintf(stderr, "req %d: whole '%.*s' vs bytewise '%.*s'\n", i, (int)whole[i].tlen,
				whole[i].trace, (int)bytes[i].tlen, bytes[i].trace);
			abort();
		}
	fuzz_pass(data, size, 3, inter);
	return 0;
}
