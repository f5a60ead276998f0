/* dkim_hold: a message held for signing. Contracts in dkim_hold.h.
 *
 * Lifetime (docs/design.md §9.9): the owner's reference, the timer handle
 * until its close callback, and the one file request in flight each keep
 * the hold; memory goes when the last is gone. */
#include "config.h"
#include "dkim/dkim_hold.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "smtp/addrlist.h"

#define DKIM_HOLD_CHUNK (64 * 1024) /* a piece sent to the relay */
/* A file request costs a trip through the thread pool: each moves at least
 * this much (or half the memory bound, if smaller). */
#define DKIM_HOLD_IO (256 * 1024)

enum dkim_hold_state { HOLD_MEM, HOLD_FILE, HOLD_SENDING, HOLD_DONE };

struct dkim_hold {
	struct dkim_hold_args a;
	struct dkim_choice ch[DKIM_SIGS_MAX];
	size_t nch;
	struct buf hdr;        /* the header section as it will be sent */
	struct dkim_body body; /* the body hash, fed as content comes */
	struct buf mem;        /* body not yet in the file */
	struct buf io;         /* the buffer of the request in flight */
	enum dkim_hold_state st;
	uv_fs_t req;
	bool busy;        /* req is in flight */
	uv_timer_t timer; /* "next turn" for done and resume */
	int fd;
	uint64_t file_len; /* octets written to the file */
	uint64_t total;    /* body octets taken */
	uint64_t read_off; /* replay: next octet of the file to read */
	bool opening, paused, ended, failed, wait_drain, dead, done_ok;
	size_t mem_off; /* replay: octets of mem already sent */
	time_t now;     /* t= */
	char why[160];
	unsigned refs;
};

static void dkim_hold_step(struct dkim_hold *h);

bool dkim_hold_from(const uint8_t *h, const struct header_info *hi, char *out, size_t outsz)
{
	if (!hi->has_from)
		return false;
	struct addrlist al;
	addrlist_init(&al);
	bool ok = addrlist_parse(&al, h + hi->from.off, hi->from.len);
	const char *first = ok ? addrlist_next(&al, NULL) : NULL;
	ok = first != NULL && strlen(first) < outsz;
	if (ok)
		memcpy(out, first, strlen(first) + 1);
	addrlist_free(&al);
	return ok;
}

static void dkim_hold_unref(struct dkim_hold *h)
{
	if (--h->refs > 0)
		return;
	dkim_body_free(&h->body);
	buf_free(&h->hdr);
	buf_free(&h->mem);
	buf_free(&h->io);
	free(h);
}

struct dkim_hold *dkim_hold_start(const struct dkim_hold_args *a, const char *from,
				  const uint8_t *hdr, size_t hlen)
{
	struct dkim_choice ch[DKIM_SIGS_MAX];
	size_t n = dkim_conf_choose(a->conf, from, ch, DKIM_SIGS_MAX);
	if (n == 0)
		return NULL;
	struct dkim_hold *h = xcalloc(1, sizeof(*h));
	if (!dkim_body_init(&h->body, a->conf->bcanon)) {
		free(h);
		return NULL;
	}
	h->a = *a;
	memcpy(h->ch, ch, n * sizeof(ch[0]));
	h->nch = n;
	buf_append(&h->hdr, hdr, hlen);
	h->fd = -1;
	h->refs = 2; /* the owner, the timer */
	uv_timer_init(a->loop, &h->timer);
	h->timer.data = h;
	return h;
}

static void dkim_hold_fail(struct dkim_hold *h, const char *what, int err)
{
	if (h->failed)
		return;
	h->failed = true;
	snprintf(h->why, sizeof(h->why), "%s%s%s", what, err ? ": " : "",
		 err ? uv_strerror(err) : "");
	buf_free(&h->mem);
}

/* ---- the file: opened on the first spill, written a buffer at a time ---- */

static void dkim_hold_fs_cb(uv_fs_t *req);

/* After a uv_fs_* call: the request keeps the hold until its callback; a
 * call refused at once fails the message. */
static bool dkim_hold_started(struct dkim_hold *h, int r, const char *what)
{
	if (r < 0) {
		h->opening = false;
		dkim_hold_fail(h, what, r);
		return false;
	}
	h->busy = true;
	h->refs++;
	return true;
}

/* O_TMPFILE has no name at all; where the file system cannot, a random
 * name is unlinked right after it is made (dkim_hold_fs_cb). */
static void dkim_hold_open(struct dkim_hold *h)
{
	h->opening = true;
#ifdef O_TMPFILE
	int r = uv_fs_open(h->a.loop, &h->req, h->a.tmpdir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600,
			   dkim_hold_fs_cb);
#else
	int r = UV_ENOSYS;
#endif
	dkim_hold_started(h, r, "cannot open a temporary file");
}

static void dkim_hold_mkstemp(struct dkim_hold *h)
{
	char tpl[4096];
	snprintf(tpl, sizeof(tpl), "%s/submitd-dkim-XXXXXX", h->a.tmpdir);
	dkim_hold_started(h, uv_fs_mkstemp(h->a.loop, &h->req, tpl, dkim_hold_fs_cb),
			  "cannot make a temporary file");
}

/* The relay takes no CRLF split between two writes (smtp_data_stuff()), so
 * no piece sent may end in a CR that has more after it: the file never
 * ends in one (a last CR stays in memory), a piece read back gives its last
 * CR to the next read, a piece of memory ends before it. */
static bool dkim_hold_write_file(struct dkim_hold *h)
{
	/* the buffer in flight is io; new content collects in mem */
	struct buf t = h->io;
	h->io = h->mem;
	h->mem = t;
	buf_reset(&h->mem);
	size_t len = buf_len(&h->io);
	if (buf_data(&h->io)[len - 1] == '\r') {
		buf_append(&h->mem, "\r", 1);
		h->io.len--;
		if (--len == 0)
			return false;
	}
	uv_buf_t b = uv_buf_init((char *)buf_data(&h->io), (unsigned)buf_len(&h->io));
	dkim_hold_started(h,
			  uv_fs_write(h->a.loop, &h->req, h->fd, &b, 1, (int64_t)h->file_len,
				      dkim_hold_fs_cb),
			  "cannot write the temporary file");
	return true;
}

static void dkim_hold_read_file(struct dkim_hold *h)
{
	uint64_t left = h->file_len - h->read_off;
	/* within the memory bound, but never below a relay piece */
	size_t io = h->a.mem_limit < DKIM_HOLD_IO ? (size_t)h->a.mem_limit : DKIM_HOLD_IO;
	io = io < DKIM_HOLD_CHUNK ? DKIM_HOLD_CHUNK : io;
	size_t n = left < io ? (size_t)left : io;
	buf_reset(&h->io);
	uv_buf_t b = uv_buf_init((char *)buf_reserve(&h->io, n), (unsigned)n);
	dkim_hold_started(
		h,
		uv_fs_read(h->a.loop, &h->req, h->fd, &b, 1, (int64_t)h->read_off, dkim_hold_fs_cb),
		"cannot read the temporary file");
}

static void dkim_hold_close_cb(uv_fs_t *req)
{
	uv_fs_req_cleanup(req);
	free(req);
}

/* Closing the file frees its blocks: on the thread pool too. */
static void dkim_hold_close_file(struct dkim_hold *h)
{
	if (h->fd < 0)
		return;
	uv_fs_t *req = xcalloc(1, sizeof(*req));
	if (uv_fs_close(h->a.loop, req, h->fd, dkim_hold_close_cb) < 0)
		free(req);
	h->fd = -1;
}

static void dkim_hold_fs_cb(uv_fs_t *req)
{
	struct dkim_hold *h = (struct dkim_hold *)((char *)req - offsetof(struct dkim_hold, req));
	ssize_t r = req->result;
	uv_fs_type type = req->fs_type;
	char path[4096] = "";
	if (type == UV_FS_MKSTEMP && r >= 0 && req->path != NULL)
		snprintf(path, sizeof(path), "%s", req->path);
	uv_fs_req_cleanup(req);
	h->busy = false;
	if (h->dead) {
		if ((type == UV_FS_OPEN || type == UV_FS_MKSTEMP) && r >= 0) {
			if (path[0])
				unlink(path);
			h->fd = (int)r;
		}
		dkim_hold_close_file(h);
		dkim_hold_unref(h);
		return;
	}
	h->refs--;
	switch (type) {
	case UV_FS_OPEN:
		if (r == UV_ENOTSUP || r == UV_EISDIR || r == UV_EINVAL || r == UV_ENOSYS) {
			dkim_hold_mkstemp(h); /* no O_TMPFILE here */
			return;
		}
		/* fall through */
	case UV_FS_MKSTEMP:
		h->opening = false;
		if (r < 0) {
			dkim_hold_fail(h, "cannot open a temporary file", (int)r);
			break;
		}
		if (path[0])
			unlink(path); /* nothing of it outlives the process */
		h->fd = (int)r;
		h->st = HOLD_FILE;
		break;
	case UV_FS_WRITE:
		if (r < 0 || (size_t)r != buf_len(&h->io)) {
			dkim_hold_fail(h, "cannot write the temporary file",
				       r < 0 ? (int)r : UV_ENOSPC);
			break;
		}
		h->file_len += (uint64_t)r;
		buf_reset(&h->io);
		break;
	case UV_FS_READ:
		if (r <= 0) {
			dkim_hold_fail(h, "cannot read the temporary file",
				       r < 0 ? (int)r : UV_EIO);
			break;
		}
		buf_commit(&h->io, (size_t)r);
		size_t len = buf_len(&h->io);
		if (len > 1 && buf_data(&h->io)[len - 1] == '\r')
			len--; /* read again with the next piece */
		h->read_off += len;
		if (h->a.cbs.out(h->a.ctx, buf_data(&h->io), len))
			h->wait_drain = true;
		buf_reset(&h->io);
		break;
	default:
		break;
	}
	dkim_hold_step(h);
}

/* ---- taking the body ---- */

bool dkim_hold_write(struct dkim_hold *h, const uint8_t *p, size_t n)
{
	if (h->failed || n == 0)
		return false;
	dkim_body_update(&h->body, p, n);
	h->total += n;
	if (h->total > h->a.max_size) {
		dkim_hold_fail(h, "message larger than the hold allows", 0);
		return false;
	}
	buf_append(&h->mem, p, n);
	if (h->st == HOLD_MEM && buf_len(&h->mem) <= h->a.mem_limit)
		return false;
	if (h->fd < 0 && !h->opening)
		dkim_hold_open(h);
	dkim_hold_step(h);
	if (!h->failed && buf_len(&h->mem) >= h->a.mem_limit) {
		h->paused = true;
		return true;
	}
	return false;
}

size_t dkim_hold_memory(const struct dkim_hold *h)
{
	return h->mem.cap + h->io.cap + h->hdr.cap;
}

bool dkim_hold_spilled(const struct dkim_hold *h)
{
	return h->fd >= 0 || h->opening;
}

/* ---- the end: sign, then send header, file, memory ---- */

static void dkim_hold_timer_cb(uv_timer_t *t)
{
	struct dkim_hold *h = t->data;
	if (h->st == HOLD_DONE) {
		h->a.cbs.done(h->a.ctx, h->done_ok, h->why);
		return;
	}
	if (h->paused && (h->failed || buf_len(&h->mem) < h->a.mem_limit)) {
		h->paused = false;
		h->a.cbs.resume(h->a.ctx);
	}
}

static void dkim_hold_finish(struct dkim_hold *h, bool ok)
{
	h->st = HOLD_DONE;
	h->done_ok = ok;
	dkim_hold_close_file(h);
	uv_timer_start(&h->timer, dkim_hold_timer_cb, 0, 0);
}

static void dkim_hold_send_start(struct dkim_hold *h)
{
	uint8_t bh[DKIM_HASH_LEN];
	dkim_body_final(&h->body, bh);
	struct buf sig = BUF_INIT;
	char err[256];
	if (!dkim_conf_sign(h->a.conf, h->ch, h->nch, buf_data(&h->hdr), buf_len(&h->hdr), bh,
			    h->now, &sig, err, sizeof(err))) {
		log_err("%s: dkim: %s", h->a.log_id, err);
		buf_free(&sig);
		dkim_hold_fail(h, "signing failed", 0);
		dkim_hold_finish(h, false);
		return;
	}
	for (size_t i = 0; i < h->nch; i++)
		log_info("%s: dkim: signed, d=%s, s=%s, a=%s-sha256, bits=%u", h->a.log_id,
			 h->ch[i].domain, h->ch[i].key->selector, dkim_alg_name(h->ch[i].key->alg),
			 h->ch[i].key->bits);
	h->st = HOLD_SENDING;
	bool stop = h->a.cbs.out(h->a.ctx, buf_data(&sig), buf_len(&sig));
	buf_free(&sig);
	stop = h->a.cbs.out(h->a.ctx, buf_data(&h->hdr), buf_len(&h->hdr)) || stop;
	buf_free(&h->hdr);
	h->wait_drain = stop;
}

/* Moves the hold on as far as it can without waiting. */
static void dkim_hold_step(struct dkim_hold *h)
{
	if (h->busy || h->st == HOLD_DONE)
		return;
	if (h->failed) {
		if (h->ended)
			dkim_hold_finish(h, false);
		else if (h->paused) /* let the client finish: its end gets the 451 */
			uv_timer_start(&h->timer, dkim_hold_timer_cb, 0, 0);
		return;
	}
	size_t io_min = h->a.mem_limit / 2 < DKIM_HOLD_IO ? h->a.mem_limit / 2 : DKIM_HOLD_IO;
	if (h->st == HOLD_FILE && buf_len(&h->mem) > 0 &&
	    (h->ended || buf_len(&h->mem) >= io_min || h->paused)) {
		if (dkim_hold_write_file(h))
			return;
	}
	if (h->paused && buf_len(&h->mem) < h->a.mem_limit)
		uv_timer_start(&h->timer, dkim_hold_timer_cb, 0, 0);
	if (!h->ended || h->opening)
		return;
	if (h->st == HOLD_MEM || h->st == HOLD_FILE) {
		dkim_hold_send_start(h);
		if (h->st == HOLD_DONE)
			return;
	}
	/* HOLD_SENDING: the file, then what stayed in memory */
	while (!h->wait_drain) {
		if (h->read_off < h->file_len) {
			dkim_hold_read_file(h);
			if (h->failed)
				break;
			return;
		}
		size_t left = buf_len(&h->mem) - h->mem_off;
		if (left > 0) {
			/* in pieces, as content streams: the relay's buffers
			   stay small */
			const uint8_t *p = buf_data(&h->mem) + h->mem_off;
			size_t k = left < DKIM_HOLD_CHUNK ? left : DKIM_HOLD_CHUNK;
			if (k < left && p[k - 1] == '\r')
				k++;
			h->mem_off += k;
			h->wait_drain = h->a.cbs.out(h->a.ctx, p, k);
			continue;
		}
		buf_free(&h->mem);
		dkim_hold_finish(h, true);
		return;
	}
	if (h->failed)
		dkim_hold_finish(h, false);
}

void dkim_hold_end(struct dkim_hold *h, time_t now)
{
	h->now = now;
	h->ended = true;
	h->paused = false;
	dkim_hold_step(h);
}

bool dkim_hold_drain(struct dkim_hold *h)
{
	if (h->st != HOLD_SENDING)
		return false;
	if (h->wait_drain) {
		h->wait_drain = false;
		dkim_hold_step(h);
	}
	return true;
}

static void dkim_hold_timer_closed(uv_handle_t *t)
{
	dkim_hold_unref(t->data);
}

void dkim_hold_free(struct dkim_hold **hp)
{
	struct dkim_hold *h = *hp;
	if (h == NULL)
		return;
	*hp = NULL;
	h->dead = true;
	if (h->busy)
		uv_cancel((uv_req_t *)&h->req); /* its callback still comes */
	else
		dkim_hold_close_file(h);
	uv_close((uv_handle_t *)&h->timer, dkim_hold_timer_closed);
	dkim_hold_unref(h);
}
