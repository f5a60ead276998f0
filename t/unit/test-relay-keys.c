/* test-relay-keys: the pure parts of the relay (src/relay/relay_route.c).
 *
 * - sender_relay_maps keys: Postfix sender_dependent_relayhost_maps order
 *   (full address, without extension, @domain; "<>" for the null sender,
 *   empty_address_relayhost_maps_lookup_key) (Postfix postconf(5));
 * - relay_password_maps keys: smtp_sasl_passwd_lookup() order (sender keys
 *   only with sender_dependent_authentication and a non-null sender, then
 *   the host name, then the destination as written without a transport
 *   prefix) (Postfix postconf(5));
 * - "user:password" split at the first ':';
 * - transport_maps keys in Postfix transport(5) order (full address, without
 *   the extension, domain, ".parent" domains, "*") and the values
 *   "transport:nexthop" (docs/routing.md).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/config.h"
#include "relay/relay.h"
#include "tap.h"

/* Joins NUL-separated keys with '|' for comparison. */
static const char *joined(const char *keys, int n)
{
	static char out[2048];
	size_t o = 0;
	out[0] = '\0';
	for (int i = 0; i < n; i++) {
		size_t l = strlen(keys);
		if (o + l + 2 >= sizeof(out))
			break;
		if (i > 0)
			out[o++] = '|';
		memcpy(out + o, keys, l);
		o += l;
		out[o] = '\0';
		keys += l + 1;
	}
	return out;
}

static void route_keys(const char *sender, const char *delim, const char *want)
{
	char keys[2048];
	int n = relay_route_keys(sender, delim, keys, sizeof(keys));
	is_str(n > 0 ? joined(keys, n) : "(none)", want, "route keys for <%s>", sender);
}

static void cred_keys(const char *dest, const char *sender, bool dep, const char *want)
{
	struct relay_dest *d;
	size_t nd;
	char err[200];
	if (!config_relay_parse(dest, &d, &nd, err, sizeof(err))) {
		ok(false, "parse %s: %s", dest, err);
		return;
	}
	char keys[2048];
	int n = relay_cred_keys(&d[0], sender, dep, "+", keys, sizeof(keys));
	is_str(n > 0 ? joined(keys, n) : "(none)", want, "credential keys for %s, sender <%s>%s", dest,
	       sender, dep ? ", sender dependent" : "");
	config_relay_free(d, nd);
}

static void cred(const char *value, const char *user, const char *pass)
{
	struct relay_cred *c = relay_cred_parse(value, "k");
	is_str(c->user, user, "\"%s\": user", value);
	is_str(c->pass, pass, "\"%s\": password", value);
	is_str(c->key, "k", "\"%s\": key kept for logs", value);
	relay_cred_free(&c);
	ok(c == NULL, "relay_cred_free clears the pointer");
}

static void transport_keys(const char *rcpt, const char *delim, const char *want)
{
	char keys[2048];
	int n = relay_transport_keys(rcpt, delim, keys, sizeof(keys));
	is_str(n > 0 ? joined(keys, n) : "(none)", want, "transport keys for <%s>", rcpt);
}

static void transport(const char *value, enum relay_transport want, const char *want_out)
{
	char out[64] = "(unset)", shown[128];
	enum relay_transport got = relay_transport_parse(value, out, sizeof(out));
	size_t i = 0;
	for (; value[i] != '\0' && i + 1 < sizeof(shown); i++)
		shown[i] = (unsigned char)value[i] < 0x20 ? '?' : value[i];
	shown[i] = '\0';
	ok(got == want, "transport \"%s\": kind %d (got %d)", shown, (int)want, (int)got);
	if (want_out != NULL)
		is_str(out, want_out, "transport \"%s\": %s", shown, want_out);
}

int main(void)
{
	/* transport_maps keys */
	transport_keys("alice@example.com", "+", "alice@example.com|example.com|.com|*");
	transport_keys("Alice+Tag@Mail.Sub.Example.COM", "+",
		       "alice+tag@mail.sub.example.com|alice@mail.sub.example.com|"
		       "mail.sub.example.com|.sub.example.com|.example.com|.com|*");
	transport_keys("alice+tag@example.com", "", "alice+tag@example.com|example.com|.com|*");
	transport_keys("\"a b\"@example.com", "+", "a b@example.com|example.com|.com|*");
	transport_keys("postmaster", "+", "postmaster|*");
	transport_keys("x@[192.0.2.1]", "+", "x@[192.0.2.1]|[192.0.2.1]|*");
	transport_keys("x@localhost", "+", "x@localhost|localhost|*");
	char deep[300] = "x@", big[2048];
	for (int i = 0; i < 100; i++)
		strcat(deep, "a.");
	strcat(deep, "example");
	ok(relay_transport_keys(deep, "+", big, sizeof(big)) == -1,
	   "100 labels: the parent keys do not fit, -1");
	char small[20];
	ok(relay_transport_keys("alice@example.com", "+", small, sizeof(small)) == -1,
	   "transport keys that do not fit: -1");

	/* transport_maps values */
	transport("smtp:[relay.example]:587", RELAY_TRANSPORT_DEST, "smtp:[relay.example]:587");
	transport("relay:[relay.example]", RELAY_TRANSPORT_DEST, "smtp:[relay.example]");
	transport(" SMTP:[relay.example] ", RELAY_TRANSPORT_DEST, "smtp:[relay.example]");
	transport(":[relay.example]", RELAY_TRANSPORT_DEST, "smtp:[relay.example]");
	transport("smtp:relay.example", RELAY_TRANSPORT_DEST, "smtp:relay.example");
	transport("lmtp:unix:/run/lmtp", RELAY_TRANSPORT_DEST, "lmtp:unix:/run/lmtp");
	transport("lmtp:[127.0.0.1]:24", RELAY_TRANSPORT_DEST, "lmtp:[127.0.0.1]:24");
	transport("smtps:[relay.example]:465", RELAY_TRANSPORT_DEST, "smtps:[relay.example]:465");
	transport("smtp:", RELAY_TRANSPORT_DEFAULT, NULL);
	transport("relay:", RELAY_TRANSPORT_DEFAULT, NULL);
	transport("smtp", RELAY_TRANSPORT_DEFAULT, NULL);
	transport(":", RELAY_TRANSPORT_DEFAULT, NULL);
	transport("", RELAY_TRANSPORT_DEFAULT, NULL);
	transport("lmtp:", RELAY_TRANSPORT_BAD, NULL);
	transport("error:5.1.1 no such domain", RELAY_TRANSPORT_ERROR, "5.1.1 no such domain");
	transport("retry:try later", RELAY_TRANSPORT_RETRY, "try later");
	transport("discard:", RELAY_TRANSPORT_UNSUPPORTED, "discard");
	transport("local", RELAY_TRANSPORT_UNSUPPORTED, "local");
	transport("error:bad\r\n250 ok", RELAY_TRANSPORT_BAD, NULL);
	transport("smtp:[h\x01]", RELAY_TRANSPORT_BAD, NULL);
	transport("smtp:[\xc3\xa9.example]", RELAY_TRANSPORT_BAD, NULL);
	transport("smtp:[a-very-long-relay-name.example.com]:25, [another-one.example]",
		  RELAY_TRANSPORT_BAD, NULL);

	/* sender_relay_maps */
	route_keys("alice@example.com", "+", "alice@example.com|@example.com");
	route_keys("alice+tag@example.com", "+", "alice+tag@example.com|alice@example.com|@example.com");
	route_keys("Alice@Example.COM", "+", "Alice@Example.COM|@Example.COM");
	route_keys("", "+", "<>");

	/* relay_password_maps: host, then the destination as written */
	cred_keys("[mail.isp.example]:submission", "alice@example.com", false,
		  "mail.isp.example|[mail.isp.example]:submission");
	cred_keys("[mail.isp.example]", "alice@example.com", false,
		  "mail.isp.example|[mail.isp.example]");
	cred_keys("smtps:[mail.isp.example]:465", "", false,
		  "mail.isp.example|[mail.isp.example]:465");
	cred_keys("[192.0.2.25]:2525", "alice@example.com", false, "192.0.2.25|[192.0.2.25]:2525");
	/* sender first, when asked to; never for the null sender */
	cred_keys("[mail.isp.example]:587", "alice+x@example.com", true,
		  "alice+x@example.com|alice@example.com|@example.com|mail.isp.example|"
		  "[mail.isp.example]:587");
	cred_keys("[mail.isp.example]:587", "", true, "mail.isp.example|[mail.isp.example]:587");
	cred_keys("lmtp:unix:/run/dovecot/lmtp", "", false, "unix:/run/dovecot/lmtp");

	/* user:password */
	cred("user:secret", "user", "secret");
	cred("user@isp.example:pa:ss:word", "user@isp.example", "pa:ss:word");
	cred("useronly", "useronly", "");
	cred(":", "", "");

	return done_testing();
}
