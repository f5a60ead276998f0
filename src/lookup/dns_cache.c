#include "config.h"
#include "lookup/dns_cache.h"

#include <ares.h>
#include <arpa/nameser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"

struct dns_cache_entry {
	char name[DNS_NAME_MAX];
	int type;
	enum dns_status st;
	uint64_t expires_ms;
	unsigned char *abuf;
	size_t alen;
};

struct dns_cache {
	size_t max, n;
	struct dns_cache_entry *e;
};

struct dns_cache *dns_cache_new(size_t max)
{
	struct dns_cache *c = xcalloc(1, sizeof(*c));
	c->max = max;
	if (max > 0)
		c->e = xcalloc(max, sizeof(*c->e));
	return c;
}

void dns_cache_free(struct dns_cache **cp)
{
	struct dns_cache *c = *cp;
	if (c == NULL)
		return;
	*cp = NULL;
	for (size_t i = 0; i < c->n; i++)
		free(c->e[i].abuf);
	free(c->e);
	free(c);
}

size_t dns_cache_count(const struct dns_cache *c)
{
	return c->n;
}

static struct dns_cache_entry *dns_cache_find(struct dns_cache *c, const char *name, int type)
{
	/* A few hundred entries at most: a scan costs less than a lookup. */
	for (size_t i = 0; i < c->n; i++)
		if (c->e[i].type == type && strcasecmp(c->e[i].name, name) == 0)
			return &c->e[i];
	return NULL;
}

void dns_cache_put(struct dns_cache *c, const char *name, int type, enum dns_status st,
		   const unsigned char *abuf, size_t alen, uint32_t ttl, uint64_t now_ms)
{
	if (c->max == 0 || st == DNS_TEMPFAIL || ttl == 0 || alen > DNS_CACHE_ANSWER_MAX ||
	    strlen(name) >= DNS_NAME_MAX)
		return;
	struct dns_cache_entry *e = dns_cache_find(c, name, type);
	if (e == NULL && c->n < c->max)
		e = &c->e[c->n++];
	if (e == NULL) {
		/* full: the expired entry, or the one expiring first, goes */
		e = &c->e[0];
		for (size_t i = 1; i < c->n; i++)
			if (c->e[i].expires_ms < e->expires_ms)
				e = &c->e[i];
	}
	free(e->abuf);
	snprintf(e->name, sizeof(e->name), "%s", name);
	e->type = type;
	e->st = st;
	e->expires_ms = now_ms + (uint64_t)ttl * 1000;
	e->abuf = xmalloc(alen > 0 ? alen : 1);
	memcpy(e->abuf, abuf, alen);
	e->alen = alen;
}

bool dns_cache_get(struct dns_cache *c, const char *name, int type, uint64_t now_ms,
		   enum dns_status *st_r, const unsigned char **abuf_r, size_t *alen_r)
{
	struct dns_cache_entry *e = dns_cache_find(c, name, type);
	if (e == NULL || e->expires_ms <= now_ms)
		return false;
	*st_r = e->st;
	*abuf_r = e->abuf;
	*alen_r = e->alen;
	return true;
}

static unsigned dns_u16(const unsigned char *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

static uint32_t dns_u32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Moves *pos past the (possibly compressed) name there; false when it is
 * malformed or runs past the end. */
static bool dns_skip_name(const unsigned char *abuf, size_t alen, size_t *pos)
{
	char *s = NULL;
	long enclen = 0;
	if (*pos >= alen ||
	    ares_expand_name(abuf + *pos, abuf, (int)alen, &s, &enclen) != ARES_SUCCESS)
		return false;
	ares_free_string(s);
	if (enclen <= 0 || (size_t)enclen > alen - *pos)
		return false;
	*pos += (size_t)enclen;
	return true;
}

uint32_t dns_answer_ttl(const unsigned char *abuf, size_t alen, enum dns_status st)
{
	if (alen < NS_HFIXEDSZ || alen > 65535 || st == DNS_TEMPFAIL)
		return 0;
	unsigned qd = dns_u16(abuf + 4), an = dns_u16(abuf + 6), ns = dns_u16(abuf + 8);
	size_t pos = NS_HFIXEDSZ;
	for (unsigned i = 0; i < qd; i++) {
		if (!dns_skip_name(abuf, alen, &pos) || alen - pos < NS_QFIXEDSZ)
			return 0;
		pos += NS_QFIXEDSZ;
	}
	bool found = false;
	uint32_t ttl = 0;
	unsigned nrr = st == DNS_OK ? an : an + ns;
	for (unsigned i = 0; i < nrr; i++) {
		if (!dns_skip_name(abuf, alen, &pos) || alen - pos < NS_RRFIXEDSZ)
			return 0;
		unsigned type = dns_u16(abuf + pos);
		uint32_t rttl = dns_u32(abuf + pos + 4);
		size_t rdlen = dns_u16(abuf + pos + 8);
		pos += NS_RRFIXEDSZ;
		if (alen - pos < rdlen)
			return 0;
		if (rttl > 0x7fffffff) /* RFC 2181 §8: treated as zero */
			rttl = 0;
		if (st == DNS_OK) {
			/* the CNAMEs on the way count too */
			if (!found || rttl < ttl)
				ttl = rttl;
			found = true;
		} else if (i >= an && type == ns_t_soa && !found) {
			/* RFC 2308 §5: the SOA's own TTL, at most its MINIMUM */
			size_t p = pos;
			if (!dns_skip_name(abuf, alen, &p) || !dns_skip_name(abuf, alen, &p) ||
			    p + 20 > pos + rdlen)
				return 0;
			uint32_t min = dns_u32(abuf + p + 16);
			ttl = rttl < min ? rttl : min;
			found = true;
		}
		pos += rdlen;
	}
	uint32_t cap = st == DNS_OK ? DNS_TTL_MAX : DNS_NEGATIVE_TTL_MAX;
	return !found ? 0 : ttl > cap ? cap : ttl;
}

static int dns_mx_cmp(const void *a, const void *b)
{
	const struct dns_mx *x = a, *y = b;
	return x->pref < y->pref ? -1 : x->pref > y->pref;
}

void dns_mx_order(struct dns_mx *mx, size_t n, unsigned (*rnd)(unsigned n))
{
	if (n < 2)
		return;
	qsort(mx, n, sizeof(*mx), dns_mx_cmp);
	for (size_t lo = 0, hi; lo < n; lo = hi) {
		for (hi = lo + 1; hi < n && mx[hi].pref == mx[lo].pref; hi++)
			;
		/* Fisher-Yates within [lo, hi) */
		for (size_t i = hi - 1; i > lo; i--) {
			size_t j = lo + rnd((unsigned)(i - lo + 1));
			if (j != i) {
				struct dns_mx t = mx[i];
				mx[i] = mx[j];
				mx[j] = t;
			}
		}
	}
}

bool dns_name_valid(const char *name)
{
	size_t n = strlen(name), label = 0;
	if (n == 0 || n > 253)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)name[i];
		if (ch == '.') {
			if (label == 0)
				return false;
			label = 0;
			continue;
		}
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
			return false;
		if (++label > 63)
			return false;
	}
	return true;
}

int dns_mx_parse(const unsigned char *abuf, size_t alen, struct dns_mx *mx, size_t max,
		 bool *null_mx_r, size_t *bad_r)
{
	*null_mx_r = false;
	*bad_r = 0;
	struct ares_mx_reply *list = NULL;
	if (alen > 65535 || ares_parse_mx_reply(abuf, (int)alen, &list) != ARES_SUCCESS)
		return -1;
	/* Every record is looked at (the answer's size bounds them), so the
	   best preferences are kept wherever the server put them. */
	size_t n = 0;
	for (struct ares_mx_reply *m = list; m != NULL; m = m->next) {
		if (m->host == NULL || m->host[0] == '\0' || strcmp(m->host, ".") == 0) {
			*null_mx_r = true;
			continue;
		}
		if (!dns_name_valid(m->host)) {
			(*bad_r)++;
			continue;
		}
		size_t slot = n;
		if (n == max) {
			/* full: it replaces the worst kept, if better */
			slot = 0;
			for (size_t i = 1; i < n; i++)
				if (mx[i].pref > mx[slot].pref)
					slot = i;
			if (max == 0 || m->priority >= mx[slot].pref)
				continue;
		} else {
			n++;
		}
		snprintf(mx[slot].host, sizeof(mx[slot].host), "%s", m->host);
		mx[slot].pref = m->priority;
	}
	ares_free_data(list);
	return (int)n;
}
