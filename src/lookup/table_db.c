/* lookup/table_db: `hash:` and `btree:` tables, the Berkeley DB files that
 * Postfix's postmap writes (PATH.db for the source file PATH), so that a
 * table built for Postfix works as it is. Read whole into memory at load
 * (and on SIGHUP), like texthash: lookups never touch the file, and a
 * postmap run in between changes nothing until the next reload.
 *
 * postmap stores keys and values with a trailing NUL by default (-N) or
 * without one (-n); both are read. Keys are lower-cased, as postmap writes
 * them without -f and as every lookup asks. A key or value with a NUL
 * inside is refused: no lookup could ever match it whole. */
#include "config.h"

#include <db.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "lookup/table_backend.h"

/* postmap holds an exclusive lock while it rewrites the file; a load waits
 * this long for it before giving up (load runs on the main thread). */
#define TABLE_DB_LOCK_WAIT_MS 2000

/* Copies a DBT into a string, dropping one trailing NUL; NULL if another
 * NUL is inside. */
static char *table_db_string(const DBT *d)
{
	size_t n = d->size;
	const char *p = d->data;
	if (n > 0 && p[n - 1] == 0)
		n--;
	if (n > 0 && memchr(p, 0, n) != NULL)
		return NULL;
	char *s = xmalloc(n + 1);
	if (n > 0)
		memcpy(s, p, n);
	s[n] = 0;
	return s;
}

static bool table_db_lock(int fd, const char *path, char *err, size_t errlen)
{
	for (int waited = 0;; waited += 50) {
		if (flock(fd, LOCK_SH | LOCK_NB) == 0)
			return true;
		if (errno != EWOULDBLOCK || waited >= TABLE_DB_LOCK_WAIT_MS) {
			table_seterr(err, errlen, "%s: cannot lock: %s", path,
				     errno == EWOULDBLOCK ? "held by another program (postmap?)"
							  : strerror(errno));
			return false;
		}
		struct timespec ts = {0, 50 * 1000000L};
		nanosleep(&ts, NULL);
	}
}

static bool table_db_read(DB *db, struct table_hash *h, const char *path, char *err, size_t errlen)
{
	DBC *cur;
	int rc = db->cursor(db, NULL, &cur, 0);
	if (rc != 0) {
		table_seterr(err, errlen, "%s: %s", path, db_strerror(rc));
		return false;
	}
	DBT k, v;
	memset(&k, 0, sizeof(k));
	memset(&v, 0, sizeof(v));
	bool ok = true;
	while (ok && (rc = cur->get(cur, &k, &v, DB_NEXT)) == 0) {
		char *key = table_db_string(&k), *value = table_db_string(&v);
		if (key == NULL || value == NULL || *key == 0) {
			table_seterr(err, errlen, "%s: a %s with a NUL inside or an empty key",
				     path, key == NULL || *key == 0 ? "key" : "value");
			ok = false;
		} else {
			table_lower(key);
			/* postmap -f may have stored two spellings of one key:
			   the first one read wins, as a lookup finds only one. */
			if (table_hash_put(h, key, value))
				key = value = NULL;
		}
		free(key);
		free(value);
	}
	if (ok && rc != DB_NOTFOUND) {
		table_seterr(err, errlen, "%s: %s", path, db_strerror(rc));
		ok = false;
	}
	cur->close(cur);
	return ok;
}

static void *table_db_open(const char *arg, DBTYPE want, const char *type, char *err, size_t errlen)
{
	if (*arg == 0) {
		table_seterr(err, errlen, "%s: missing file name", type);
		return NULL;
	}
	char path[4096];
	if ((size_t)snprintf(path, sizeof(path), "%s.db", arg) >= sizeof(path)) {
		table_seterr(err, errlen, "%s:%s: file name too long", type, arg);
		return NULL;
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		table_seterr(err, errlen, "%s: %s%s", path, strerror(errno),
			     errno == ENOENT ? " (run postmap on the source file)" : "");
		return NULL;
	}
	struct table_hash *h = NULL;
	DB *db = NULL;
	int rc;
	if (!table_db_lock(fd, path, err, errlen))
		goto out;
	if ((rc = db_create(&db, NULL, 0)) != 0) {
		table_seterr(err, errlen, "%s: %s", path, db_strerror(rc));
		db = NULL;
		goto out;
	}
	if ((rc = db->open(db, NULL, path, NULL, DB_UNKNOWN, DB_RDONLY, 0)) != 0) {
		table_seterr(err, errlen, "%s: %s", path, db_strerror(rc));
		goto out;
	}
	DBTYPE got;
	if (db->get_type(db, &got) != 0 || got != want) {
		table_seterr(err, errlen, "%s: not a %s file (postmap %s:%s)", path, type, type,
			     arg);
		goto out;
	}
	h = table_hash_new();
	if (!table_db_read(db, h, path, err, errlen))
		table_hash_free(&h);
out:
	if (db != NULL)
		db->close(db, 0);
	close(fd); /* drops the lock */
	return h;
}

static void *table_hash_db_parse(const char *text, size_t len, const char *origin, char *err,
				 size_t errlen)
{
	(void)len;
	(void)origin;
	return table_db_open(text, DB_HASH, "hash", err, errlen);
}

static void *table_btree_db_parse(const char *text, size_t len, const char *origin, char *err,
				  size_t errlen)
{
	(void)len;
	(void)origin;
	return table_db_open(text, DB_BTREE, "btree", err, errlen);
}

const struct table_backend table_backend_hash = {
	.type = "hash",
	.parse = table_hash_db_parse,
	.free = table_hash_free_row,
	.get = table_hash_get_row,
};

const struct table_backend table_backend_btree = {
	.type = "btree",
	.parse = table_btree_db_parse,
	.free = table_hash_free_row,
	.get = table_hash_get_row,
};
