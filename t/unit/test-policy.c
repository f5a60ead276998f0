/* Unit tests for src/policy/policy.c: the From:/Sender: address walker
 * that feeds the header ownership check (RFC 5322 §3.4, RFC 6409 §8). */
#include "config.h"

#include <string.h>

#include "policy/policy.h"
#include "tap.h"

struct collect {
	char out[1024];
	int stop_after;
	int seen;
};

static bool collect_addr(void *arg, const char *addr)
{
	struct collect *c = arg;
	size_t n = strlen(c->out);
	snprintf(c->out + n, sizeof(c->out) - n, "%s%s", n ? "|" : "", addr);
	c->seen++;
	return c->stop_after == 0 || c->seen < c->stop_after;
}

static void check(const char *body, const char *want, int want_count, const char *name)
{
	struct collect c = {.out = "", .stop_after = 0, .seen = 0};
	int n = policy_header_addresses(body, collect_addr, &c);
	is_str(c.out, want, "%s: addresses", name);
	is_int(n, want_count, "%s: count", name);
}

int main(void)
{
	check("alice@example.com", "alice@example.com", 1, "bare addr-spec");
	check(" Alice <alice@example.com>", "alice@example.com", 1, "display name and angle address");
	check("\"Boss, The\" <bob@example.com>", "bob@example.com", 1,
	      "a comma inside a quoted display name does not split");
	check("\"alice@example.com\" <mallory@evil.example>", "mallory@evil.example", 1,
	      "a display name that looks like an address is not the address");
	check("alice@example.com (Alice, the real one)", "alice@example.com", 1,
	      "comments are dropped, commas inside them do not split");
	check("a@x.example, B <b@y.example>", "a@x.example|b@y.example", 2, "two mailboxes");
	check("team: a@x.example, b@y.example;", "a@x.example|b@y.example", 2, "a group");
	check("undisclosed-recipients:;", "", 0, "an empty group");
	check("<a@x.example>", "a@x.example", 1, "angle address alone");
	check("Alice < alice@example.com >", "alice@example.com", 1, "spaces inside angle brackets");
	check("", "", 0, "empty body");
	check("\"a\\\"b\"@example.com", "\"a\\\"b\"@example.com", 1, "quoted local part with an escape");

	struct collect c = {.out = "", .stop_after = 1, .seen = 0};
	int n = policy_header_addresses("a@x.example, b@y.example", collect_addr, &c);
	is_str(c.out, "a@x.example", "the callback can stop the walk");
	is_int(n, 1, "stopped after the first");
	return done_testing();
}
