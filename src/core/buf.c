#include "config.h"
#include "core/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (p == NULL) {
		fputs("submitd: out of memory\n", stderr);
		abort();
	}
	return p;
}

void *xcalloc(size_t n, size_t m)
{
	void *p = calloc(n ? n : 1, m ? m : 1);
	if (p == NULL) {
		fputs("submitd: out of memory\n", stderr);
		abort();
	}
	return p;
}

void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (p == NULL) {
		fputs("submitd: out of memory\n", stderr);
		abort();
	}
	return p;
}

char *xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

void xfree_secret(char **p)
{
	if (*p == NULL)
		return;
	explicit_bzero(*p, strlen(*p));
	free(*p);
	*p = NULL;
}

uint8_t *buf_reserve(struct buf *b, size_t n)
{
	if (b->off + b->len + n <= b->cap)
		return b->base + b->off + b->len;
	/* Compact first when the dead front is at least half the allocation. */
	if (b->off > 0 && b->len + n <= b->cap && b->off >= b->cap / 2) {
		memmove(b->base, b->base + b->off, b->len);
		b->off = 0;
		return b->base + b->len;
	}
	if (b->off > 0) {
		memmove(b->base, b->base + b->off, b->len);
		b->off = 0;
	}
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + n)
		cap *= 2;
	b->base = xrealloc(b->base, cap);
	b->cap = cap;
	return b->base + b->len;
}

void buf_commit(struct buf *b, size_t n)
{
	b->len += n;
}

void buf_append(struct buf *b, const void *p, size_t n)
{
	if (n == 0)
		return;
	memcpy(buf_reserve(b, n), p, n);
	b->len += n;
}

void buf_append_str(struct buf *b, const char *s)
{
	buf_append(b, s, strlen(s));
}

void buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	va_copy(ap2, ap);
	char tmp[256];
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap2);
	va_end(ap2);
	if (n < 0)
		return;
	if ((size_t)n < sizeof(tmp)) {
		buf_append(b, tmp, (size_t)n);
		return;
	}
	uint8_t *w = buf_reserve(b, (size_t)n + 1);
	vsnprintf((char *)w, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
}

void buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	buf_vprintf(b, fmt, ap);
	va_end(ap);
}

void buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len) {
		b->off = 0;
		b->len = 0;
		return;
	}
	b->off += n;
	b->len -= n;
}

void buf_reset(struct buf *b)
{
	b->off = 0;
	b->len = 0;
}

void buf_free(struct buf *b)
{
	free(b->base);
	*b = (struct buf)BUF_INIT;
}

void buf_wipe(struct buf *b)
{
	if (b->base != NULL)
		explicit_bzero(b->base, b->cap);
	buf_free(b);
}
