/* buf: a growable byte buffer.
 *
 * Owns its memory. buf_consume() drops bytes from the front (cheaply: it moves
 * a read offset and compacts only when that pays). buf_wipe() zeroes the
 * memory before freeing it; use it for anything that held credentials. */
#ifndef SUBMITD_BUF_H
#define SUBMITD_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

struct buf {
	uint8_t *base; /* allocation */
	size_t off;    /* start of unread data inside base */
	size_t len;    /* bytes of data from base + off */
	size_t cap;    /* size of base */
};

#define BUF_INIT              \
	{                     \
		NULL, 0, 0, 0 \
	}

static inline uint8_t *buf_data(const struct buf *b)
{
	return b->base ? b->base + b->off : NULL;
}
static inline size_t buf_len(const struct buf *b)
{
	return b->len;
}

/* Makes room for at least n more bytes; returns the write position. Aborts on OOM. */
uint8_t *buf_reserve(struct buf *b, size_t n);
/* Marks n bytes written at the position buf_reserve() returned. */
void buf_commit(struct buf *b, size_t n);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_append_str(struct buf *b, const char *s);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Drops n bytes from the front. */
void buf_consume(struct buf *b, size_t n);
/* Empties without freeing. */
void buf_reset(struct buf *b);
/* Frees the memory (buf_wipe: zeroes it first). The buf may be reused after. */
void buf_free(struct buf *b);
void buf_wipe(struct buf *b);

/* Allocation helpers that abort on OOM: a mail server that cannot allocate a
 * few bytes cannot keep its promises, so it stops loudly. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* Zeroes then frees a NUL-terminated secret; sets *p to NULL. */
void xfree_secret(char **p);

#endif
