/* lookup/table_registry: a worker's table instances per configuration
 * snapshot. The one lifetime rule (lookup/table_registry.h): an instance
 * lives while referenced or while its snapshot is current; the snapshot
 * (owner of the table definition) lives until its instances are gone — also
 * when it is retired while a lookup is in flight. Real snapshots are loaded
 * from files, with relay_load() opening their tables, as at startup. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "lookup/table.h"
#include "lookup/table_registry.h"
#include "loop-wait.h"
#include "relay/relay.h"
#include "tap.h"

static char dir[64];

/* Which snapshots were freed (their free hook ran). */
static const struct config *freed[8];
static size_t nfreed;

static void note_freed(struct config *cfg)
{
	if (nfreed < 8)
		freed[nfreed++] = cfg;
}

static bool was_freed(const struct config *cfg)
{
	for (size_t i = 0; i < nfreed; i++)
		if (freed[i] == cfg)
			return true;
	return false;
}

static void write_file(const char *name, const char *text)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	fputs(text, f);
	fclose(f);
}

/* A snapshot as main.c builds one: the file, listener snapshots, tables. */
static struct config *load(const char *name, const char *text, char *err, size_t errlen)
{
	char path[128];
	write_file(name, text);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	struct config *cfg = config_load(path, err, errlen);
	if (cfg == NULL)
		return NULL;
	if (!relay_load(cfg, err, errlen) || !config_listeners_load(cfg, err, errlen)) {
		config_unref(&cfg);
		return NULL;
	}
	for (size_t i = 0; i < cfg->nlistens; i++)
		if (cfg->listens[i].cfg != NULL && !relay_load(cfg->listens[i].cfg, err, errlen)) {
			config_unref(&cfg);
			return NULL;
		}
	config_on_free(cfg, note_freed);
	return cfg;
}

struct answer {
	bool done;
	enum table_status st;
	char value[64];
	struct table_registry *r;
	struct table_inst **put; /* give this reference back from the callback */
};

static void answer_cb(void *ctx, enum table_status st, const char *value)
{
	struct answer *a = ctx;
	a->done = true;
	a->st = st;
	snprintf(a->value, sizeof(a->value), "%s", value ? value : "");
	if (a->put != NULL)
		table_registry_put(a->r, a->put);
}

static void test_load_error(void)
{
	char err[512], conf[256];
	snprintf(conf, sizeof(conf), "listen = 127.0.0.1:1587 plain\n\nsender_relay_maps = texthash:%s/none\n",
		 dir);
	struct config *cfg = load("bad.conf", conf, err, sizeof(err));
	char want[256];
	snprintf(want, sizeof(want), "%s/bad.conf:3: sender_relay_maps: %s/none: ", dir, dir);
	ok(cfg == NULL && strncmp(err, want, strlen(want)) == 0,
	   "a map that cannot be opened refuses the snapshot, naming file, line and key (%s)", err);
	snprintf(conf, sizeof(conf), "listen = 127.0.0.1:1587 plain\nrelay_password_maps = nosuch:x\n");
	cfg = load("bad2.conf", conf, err, sizeof(err));
	ok(cfg == NULL && strstr(err, "bad2.conf:2: relay_password_maps: nosuch:x: unsupported") != NULL,
	   "an unknown table type too (%s)", err);
}

int main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/test-table-registry.XXXXXX");
	if (mkdtemp(dir) == NULL)
		return skip_all("mkdtemp failed");
	uv_loop_init(loop);
	uv_timer_init(loop, &guard);
	write_file("pw", "[relay.example]:587 alice:secret\n");
	char conf[512], err[512];
	snprintf(conf, sizeof(conf),
		 "listen = 127.0.0.1:1587 plain\nlisten = 127.0.0.1:1588 plain message_size_limit=100000\n"
		 "relay_password_maps = texthash:%s/pw\n", dir);

	test_load_error();

	struct config *a = load("a.conf", conf, err, sizeof(err));
	struct config *b = load("b.conf", conf, err, sizeof(err));
	if (!ok(a != NULL && b != NULL, "two snapshots load (%s)", a && b ? "" : err))
		return done_testing();
	struct config *a_listener = a->listens[1].cfg;
	ok(a_listener != NULL && a_listener->relay_password_table != NULL,
	   "the listener snapshot has its own table");

	struct table_registry *r = table_registry_new(loop);
	table_registry_set_current(r, a);

	/* shared: one instance per (snapshot, table) */
	struct table_inst *t1 = table_registry_get(r, a, a->relay_password_table);
	struct table_inst *t2 = table_registry_get(r, a, a->relay_password_table);
	ok(t1 == t2 && table_registry_count(r) == 1, "two users of a snapshot share one instance");
	struct table_inst *tl = table_registry_get(r, a_listener, a_listener->relay_password_table);
	ok(tl != t1 && table_registry_count(r) == 2, "a listener snapshot's table has its own");
	struct answer ans = {0};
	struct table_req *req = table_lookup(t1, "[relay.example]:587", answer_cb, &ans);
	WAIT(ans.done, 2000);
	ok(ans.done && ans.st == TABLE_OK && strcmp(ans.value, "alice:secret") == 0, "lookup answers");
	table_registry_put(r, &t1);
	table_registry_put(r, &t2);
	table_registry_put(r, &tl);
	ok(t1 == NULL && table_registry_count(r) == 2,
	   "the current snapshot's instances (its listeners' too) stay open unused");
	t1 = table_registry_get(r, a, a->relay_password_table);
	struct table_stats st;
	table_inst_stats(t1, &st);
	ok(st.lookups == 1, "...and the next user gets the same instance (its counters)");

	/* retired while a lookup is in flight */
	memset(&ans, 0, sizeof(ans));
	req = table_lookup(t1, "[relay.example]:587", answer_cb, &ans);
	table_registry_set_current(r, b);
	ok(table_registry_count(r) == 1, "reload: the unused listener instance of the old one closes");
	struct config *a_keep = a;
	config_unref(&a); /* as the worker drops its reference on reload */
	SETTLE(20);
	ok(ans.done && ans.st == TABLE_OK && strcmp(ans.value, "alice:secret") == 0,
	   "a lookup in flight when its snapshot was retired still answers");
	ok(!was_freed(a_keep) && nfreed == 0, "the snapshot lives while its instance is used");
	table_registry_put(r, &t1);
	ok(table_registry_count(r) == 0, "the last user of a retired snapshot closes its instance");
	SETTLE(20);
	ok(was_freed(a_keep) && nfreed == 1,
	   "...and the snapshot goes once the instance's close callbacks ran");

	/* the new current snapshot; a user that gives its reference back from
	   inside its own lookup's callback, after the snapshot was retired */
	struct table_inst *tb = table_registry_get(r, b, b->relay_password_table);
	struct table_inst *tb2 = table_registry_get(r, b, b->relay_password_table);
	memset(&ans, 0, sizeof(ans));
	ans.r = r;
	ans.put = &tb;
	req = table_lookup(tb, "nobody", answer_cb, &ans);
	struct answer never = {0};
	struct table_req *cancelled = table_lookup(tb2, "nobody", answer_cb, &never);
	table_cancel(&cancelled);
	table_registry_put(r, &tb2);
	table_registry_set_current(r, NULL);
	ok(table_registry_count(r) == 1, "retired, but in use");
	struct config *b_keep = b;
	config_unref(&b);
	SETTLE(20);
	ok(ans.done && ans.st == TABLE_NOTFOUND && tb == NULL,
	   "the callback gave the last reference back");
	ok(!never.done, "a cancelled lookup never answers");
	ok(table_registry_count(r) == 0, "...which closed the instance");
	SETTLE(20);
	ok(was_freed(b_keep) && nfreed == 2, "...and the snapshot went");
	(void)req;

	/* freeing the registry closes what is left */
	struct config *c = load("c.conf", conf, err, sizeof(err));
	table_registry_set_current(r, c);
	struct table_inst *tc = table_registry_get(r, c, c->relay_password_table);
	table_registry_put(r, &tc);
	config_unref(&c);
	ok(nfreed == 2, "an open instance keeps its snapshot");
	table_registry_free(&r);
	SETTLE(20);
	ok(r == NULL && nfreed == 3, "table_registry_free closes every instance, then the snapshot goes");

	uv_close((uv_handle_t *)&guard, NULL);
	uv_run(loop, UV_RUN_DEFAULT);
	ok(uv_loop_close(loop) == 0, "no handle left on the loop");
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		diag("could not remove %s", dir);
	return done_testing();
}
