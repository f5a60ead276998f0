/* Unit tests for the pure parts of policy/limits_redis (docs/limits.md
 * "Redis"):
 *  - limit_store values: memory, redis:ADDRESS:PORT, redis:[IPv6]:PORT,
 *    redis:unix:/PATH; names, bad ports and relative paths refused;
 *  - the MAIL script's reply: every shape it returns decodes; a reply of
 *    another type or size, an index past the rules, a number out of range,
 *    a string with a control byte or longer than its field is refused;
 *  - events: each kind survives format + parse; a field with a control
 *    character is never formatted; a line with a field too many or too few,
 *    an unknown kind, a bad origin, an over-long field, an overflowing
 *    number, bad hex, any truncation before the last field is refused. */
#include "config.h"

#include <hiredis/hiredis.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "policy/limits_redis.h"

#include "tap.h"

static redisReply ints[16], strs[16], arr;
static redisReply *elems[16];

static void r_int(size_t i, long long v)
{
	memset(&ints[i], 0, sizeof(ints[i]));
	ints[i].type = REDIS_REPLY_INTEGER;
	ints[i].integer = v;
	elems[i] = &ints[i];
}

static void r_str(size_t i, const char *s, size_t len)
{
	memset(&strs[i], 0, sizeof(strs[i]));
	strs[i].type = REDIS_REPLY_STRING;
	strs[i].str = (char *)s;
	strs[i].len = len;
	elems[i] = &strs[i];
}

/* {over, which, wait, held, reason, note, client, until, blocked} */
static redisReply *reply(long long over, long long which, long long wait, long long held,
			 const char *reason, const char *note, const char *client, long long until,
			 long long blocked)
{
	r_int(0, over);
	r_int(1, which);
	r_int(2, wait);
	r_int(3, held);
	r_str(4, reason, strlen(reason));
	r_str(5, note, strlen(note));
	r_str(6, client, strlen(client));
	r_int(7, until);
	r_int(8, blocked);
	memset(&arr, 0, sizeof(arr));
	arr.type = REDIS_REPLY_ARRAY;
	arr.elements = 9;
	arr.element = elems;
	return &arr;
}

static void test_parse(void)
{
	char err[200];
	bool redis = true;
	ok(limits_redis_parse("memory", &redis, err, sizeof(err)) && !redis, "memory");
	const char *good[] = {"redis:127.0.0.1:6379", "redis:[::1]:6380", "redis:::1:6380",
			      "redis:unix:/run/redis/redis.sock"};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		ok(limits_redis_parse(good[i], &redis, err, sizeof(err)) && redis, "accepted: %s",
		   good[i]);
	const char *bad[] = {"redis:localhost:6379",
			     "redis:127.0.0.1",
			     "redis:127.0.0.1:0",
			     "redis:127.0.0.1:65536",
			     "redis:127.0.0.1:+1",
			     "redis:127.0.0.1:6379x",
			     "redis:unix:relative.sock",
			     "redis:",
			     "redis::6379",
			     "mem",
			     "Redis:1.2.3.4:1"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ok(!limits_redis_parse(bad[i], &redis, err, sizeof(err)), "refused: %s (%s)",
		   bad[i], err);
}

static void test_decode(void)
{
	struct limits_redis_verdict v;
	ok(limits_redis_decode(reply(0, 0, 0, 0, "", "", "", 0, 0), 2, 0, &v) && !v.over &&
		   !v.held && !v.blocked,
	   "taken");
	ok(limits_redis_decode(reply(1, 1, 1234, 0, "", "", "", 0, 0), 2, 0, &v) && v.over &&
		   v.which == 1 && v.wait_ms == 1234,
	   "over: rule and wait");
	ok(limits_redis_decode(reply(1, 0, -1, 0, "", "", "", 0, 0), 1, 0, &v) && v.over &&
		   v.wait_ms == UINT64_MAX,
	   "over for ever (amount above COUNT)");
	ok(limits_redis_decode(reply(0, 0, 0, 1, "manual", "by hand", "192.0.2.1", 0, 1), 1, 0,
			       &v) &&
		   v.held && !v.over && strcmp(v.hold.reason, "manual") == 0 &&
		   strcmp(v.hold.note, "by hand") == 0 && strcmp(v.hold.client, "192.0.2.1") == 0 &&
		   v.hold.until == 0 && v.blocked,
	   "held, with its fields, and blocked");
	ok(limits_redis_decode(reply(0, 0, 0, 1, "burst", "", "", 4102444800LL, 0), 1, 0, &v) &&
		   v.hold.until == 4102444800LL,
	   "held until a time");

	ok(!limits_redis_decode(NULL, 1, 0, &v), "no reply");
	redisReply *r = reply(0, 0, 0, 0, "", "", "", 0, 0);
	r->elements = 8;
	ok(!limits_redis_decode(r, 1, 0, &v), "8 elements");
	r = reply(0, 0, 0, 0, "", "", "", 0, 0);
	r->elements = 10;
	elems[9] = &ints[0];
	ok(!limits_redis_decode(r, 1, 0, &v), "10 elements");
	r = reply(0, 0, 0, 0, "", "", "", 0, 0);
	r->type = REDIS_REPLY_ERROR;
	ok(!limits_redis_decode(r, 1, 0, &v), "an error reply");
	ok(!limits_redis_decode(reply(1, 2, 5, 0, "", "", "", 0, 0), 2, 0, &v),
	   "rule index past n");
	ok(!limits_redis_decode(reply(1, 0, 5, 0, "", "", "", 0, 0), 0, 0, &v),
	   "over with no rules");
	ok(!limits_redis_decode(reply(2, 0, 0, 0, "", "", "", 0, 0), 1, 0, &v), "over = 2");
	ok(!limits_redis_decode(reply(0, 0, -2, 0, "", "", "", 0, 0), 1, 0, &v), "wait = -2");
	ok(!limits_redis_decode(reply(0, 0, 0, 1, "", "", "", 0, 0), 1, 0, &v), "held, no reason");
	ok(!limits_redis_decode(reply(0, 0, 0, 0, "", "", "", -5, 0), 1, 0, &v), "until < 0");
	ok(!limits_redis_decode(reply(0, 0, 0, 0, "", "", "", 0, 3), 1, 0, &v), "blocked = 3");
	ok(!limits_redis_decode(reply(0, 0, 0, 1, "a\nb", "", "", 0, 0), 1, 0, &v),
	   "LF in a string");
	r = reply(0, 0, 0, 1, "manual", "", "", 0, 0);
	r_str(4, "man\0al", 6);
	ok(!limits_redis_decode(r, 1, 0, &v), "NUL in a string");
	char longs[400];
	memset(longs, 'x', sizeof(longs) - 1);
	longs[sizeof(longs) - 1] = '\0';
	ok(!limits_redis_decode(reply(0, 0, 0, 1, longs, "", "", 0, 0), 1, 0, &v),
	   "a reason longer than its field");
	ok(!limits_redis_decode(reply(0, 0, 0, 1, "x", "", longs, 0, 0), 1, 0, &v),
	   "a client longer than its field");
	r = reply(0, 0, 0, 0, "", "", "", 0, 0);
	r_int(4, 7);
	ok(!limits_redis_decode(r, 1, 0, &v), "an integer where a string goes");
	r = reply(0, 0, 0, 0, "", "", "", 0, 0);
	r_str(0, "0", 1);
	ok(!limits_redis_decode(r, 1, 0, &v), "a string where an integer goes");
}

static bool roundtrip(const struct limits_redis_event *e, struct limits_redis_event *back)
{
	char line[1100];
	return limits_redis_event_format(e, line, sizeof(line)) &&
	       limits_redis_event_parse(line, strlen(line), back);
}

static bool refused(const char *line)
{
	struct limits_redis_event e;
	return !limits_redis_event_parse(line, strlen(line), &e);
}

static void test_events(void)
{
	struct limits_redis_event e, b;
	memset(&e, 0, sizeof(e));
	snprintf(e.origin, sizeof(e.origin), "0123456789abcdef");
	e.kind = LRE_HOLD;
	snprintf(e.hold.login, sizeof(e.hold.login), "alice@example.com");
	snprintf(e.hold.reason, sizeof(e.hold.reason), "burst");
	snprintf(e.hold.note, sizeof(e.hold.note), "120 messages within 10m");
	snprintf(e.hold.client, sizeof(e.hold.client), "2001:db8::1");
	e.hold.since = 1700000000;
	e.hold.until = 1700003600;
	ok(roundtrip(&e, &b) && b.kind == LRE_HOLD && strcmp(b.origin, e.origin) == 0 &&
		   strcmp(b.hold.login, e.hold.login) == 0 && strcmp(b.hold.reason, "burst") == 0 &&
		   strcmp(b.hold.note, e.hold.note) == 0 &&
		   strcmp(b.hold.client, e.hold.client) == 0 && b.hold.since == 1700000000 &&
		   b.hold.until == 1700003600,
	   "hold survives");
	snprintf(e.hold.note, sizeof(e.hold.note), "two\tfields");
	char line[1100];
	ok(!limits_redis_event_format(&e, line, sizeof(line)), "a tab in a field is not formatted");
	snprintf(e.hold.note, sizeof(e.hold.note), "line\r\nbreak");
	ok(!limits_redis_event_format(&e, line, sizeof(line)), "CR LF neither");
	e.kind = LRE_RELEASE;
	ok(roundtrip(&e, &b) && b.kind == LRE_RELEASE && strcmp(b.hold.login, e.hold.login) == 0,
	   "release survives");
	e.kind = LRE_KICK;
	ok(roundtrip(&e, &b) && b.kind == LRE_KICK && strcmp(b.hold.login, e.hold.login) == 0,
	   "kick survives");
	e.kind = LRE_BLOCK;
	snprintf(e.block.addr, sizeof(e.block.addr), "192.0.2.7");
	snprintf(e.block.reason, sizeof(e.block.reason), "blocked with submitctl");
	e.block.since = 42;
	ok(roundtrip(&e, &b) && b.kind == LRE_BLOCK && strcmp(b.block.addr, "192.0.2.7") == 0 &&
		   strcmp(b.block.reason, e.block.reason) == 0 && b.block.since == 42,
	   "block survives");
	e.kind = LRE_UNBLOCK;
	ok(roundtrip(&e, &b) && b.kind == LRE_UNBLOCK && strcmp(b.block.addr, "192.0.2.7") == 0,
	   "unblock survives");
	e.kind = LRE_AUTHFAIL;
	for (size_t i = 0; i < sizeof(e.key.b); i++)
		e.key.b[i] = (uint8_t)(i * 37 + 1);
	e.lim = (struct addrcount_auth_limits){.limit = 20, .window_ms = 600000, .block_ms = 60000};
	ok(roundtrip(&e, &b) && b.kind == LRE_AUTHFAIL &&
		   memcmp(b.key.b, e.key.b, sizeof(e.key.b)) == 0 && b.lim.limit == 20 &&
		   b.lim.window_ms == 600000 && b.lim.block_ms == 60000,
	   "authfail survives");
	ok(limits_redis_event_format(&e, line, sizeof(line)), "authfail formats");
	size_t last = strrchr(line, '\t') - line;
	bool all = true;
	for (size_t n = 0; n <= last; n++)
		all = all && !limits_redis_event_parse(line, n, &b);
	ok(all, "every truncation before the last field is refused");
	ok(!limits_redis_event_format(&e, line, 20), "a line that does not fit is not formatted");

	const char *o = "0123456789abcdef\t";
	char buf[2000];
#define LINE(s) (snprintf(buf, sizeof(buf), "%s%s", o, s), buf)
	ok(!refused(LINE("kick\talice")), "a good kick line parses");
	ok(refused(LINE("kick\talice\textra")), "a field too many");
	ok(refused(LINE("kick")), "a field too few");
	ok(refused(LINE("kick\t")), "an empty login");
	ok(refused(LINE("Kick\talice")), "an unknown kind");
	ok(refused("0123456789abcde\tkick\talice"), "a short origin");
	ok(refused(LINE("kick\tal\x01ice")), "a control byte");
	ok(refused(LINE("block\t192.0.2.1\twhy\t99999999999999999999")), "a number that overflows");
	ok(refused(LINE("block\t192.0.2.1\twhy\t-1")), "a negative number");
	ok(refused(LINE("authfail\t0123456789abcdef0123456789abcdef0g\t20\t600000\t60000")),
	   "bad hex");
	ok(refused(LINE("authfail\t0123456789abcdef0123456789abcdef01\t2000000\t600000\t60000")),
	   "an AUTH limit out of range");
	ok(!refused(LINE("authfail\t0123456789abcdef0123456789abcdef01\t20\t600000\t60000")),
	   "a good authfail line parses");
	char big[1500];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	ok(refused(LINE(big)), "an over-long line");
	char lf[300];
	memset(lf, 'l', sizeof(lf) - 1);
	lf[sizeof(lf) - 1] = '\0';
	snprintf(buf, sizeof(buf), "%skick\t%s", o, lf);
	ok(refused(buf), "a login longer than its field");
#undef LINE
}

/* The recipient rules' counts follow the nine fields, two per rule. */
static void test_decode_rcpt(void)
{
	struct limits_redis_verdict v;
	redisReply *r = reply(0, 0, 0, 0, "", "", "", 0, 0);
	r_int(9, 5);
	r_int(10, 3600000);
	r_int(11, 0);
	r_int(12, 0);
	r->elements = 13;
	ok(limits_redis_decode(r, 1, 2, &v) && v.rn == 2 && v.rused[0] == 5 &&
		   v.rwait[0] == 3600000 && v.rused[1] == 0 && v.rwait[1] == 0,
	   "two recipient rules: count and wait each");
	ok(!limits_redis_decode(r, 1, 1, &v), "more fields than the recipient rules asked");
	ok(!limits_redis_decode(r, 1, 3, &v), "fewer fields than the recipient rules asked");
	r_int(11, -1);
	ok(!limits_redis_decode(r, 1, 2, &v), "a negative recipient count");
	r_str(11, "1", 1);
	ok(!limits_redis_decode(r, 1, 2, &v), "a string where a recipient count goes");
	r_int(11, 0);
	ok(!limits_redis_decode(r, 1, LIMITS_REDIS_RULES_MAX + 1, &v), "too many recipient rules");
}

int main(void)
{
	test_parse();
	test_decode();
	test_decode_rcpt();
	test_events();
	return done_testing();
}
