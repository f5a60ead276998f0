/* dkim_hold: a message held until it can be signed (docs/dkim.md).
 *
 * The DKIM-Signature field goes first but covers the body, so a message to
 * be signed is held whole: the header section as it will be sent, then the
 * body in memory up to mem_limit, beyond that in a temporary file without a
 * name (O_TMPFILE; else a random name unlinked at once) in tmpdir, so that
 * nothing of it outlives the process. The body is hashed as it arrives. At
 * the end the signatures are made and the whole goes out through out_fn,
 * with the relay's back-pressure. File I/O runs on libuv's thread pool
 * (docs/design.md invariant 1); every request is cancelled with the hold.
 *
 * Bounds: memory at most mem_limit for the body plus one write in flight
 * (2 x mem_limit) and the header section; the file at most max_size.
 * Beyond either, or on a file error, the message fails with a temporary
 * error at its end (done_cb(ok=false)). */
#ifndef SUBMITD_DKIM_HOLD_H
#define SUBMITD_DKIM_HOLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "dkim/dkim_conf.h"
#include "smtp/header.h"

struct dkim_hold;

struct dkim_hold_cbs {
	/* Sends content downstream; true: stop until dkim_hold_drain(). */
	bool (*out)(void *ctx, const uint8_t *p, size_t n);
	/* The hold has room again after dkim_hold_write() returned true. */
	void (*resume)(void *ctx);
	/* Everything went out (ok), or the message cannot be sent: why. Never
	 * called from inside a call into the hold. */
	void (*done)(void *ctx, bool ok, const char *why);
};

struct dkim_hold_args {
	uv_loop_t *loop;
	const struct dkim_conf *conf;
	const char *tmpdir;
	uint64_t mem_limit;
	uint64_t max_size;
	const char *log_id;
	struct dkim_hold_cbs cbs;
	void *ctx;
};

/* The From: address of a header section h that header_scan() read into hi
 * (the first mailbox of the first From: field), into out. False: none that
 * can be read. */
bool dkim_hold_from(const uint8_t *h, const struct header_info *hi, char *out, size_t outsz);

/* When the message from that From: address is to be signed, a hold that
 * keeps hdr[0..hlen) (the header section as it will be sent, empty line
 * included); else NULL: the message streams unsigned. */
struct dkim_hold *dkim_hold_start(const struct dkim_hold_args *a, const char *from,
				  const uint8_t *hdr, size_t hlen);

/* Body content (canonical, unstuffed). True: stop feeding until resume. */
bool dkim_hold_write(struct dkim_hold *h, const uint8_t *p, size_t n);

/* The body is complete: sign (now is t=), then send it all; done follows. */
void dkim_hold_end(struct dkim_hold *h, time_t now);

/* The downstream drained. True when the hold was waiting for it (the event
 * is the hold's). */
bool dkim_hold_drain(struct dkim_hold *h);

/* Memory the hold has now (for tests and logs), and whether a file is used. */
size_t dkim_hold_memory(const struct dkim_hold *h);
bool dkim_hold_spilled(const struct dkim_hold *h);

/* Drops the hold: pending file requests are cancelled, the file closed. */
void dkim_hold_free(struct dkim_hold **h);

#endif
