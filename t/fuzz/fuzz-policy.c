/* fuzz-policy: the policy daemon's reply parser (policy_service_parse() in
 * src/policy/policy_service.c). Properties checked on every input: nothing
 * read past the given length (an exact-size copy); bytes after the first
 * empty line change nothing; a refusal carries a 4xx/5xx code whose
 * enhanced code has the same class, and printable text; the action handed
 * back is printable and terminated; "go on" carries no reply. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "policy/policy_service.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_policy_printable(const char *s, size_t max)
{
	size_t n = strnlen(s, max);
	if (n == max)
		abort();
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f)
			abort();
}

static bool fuzz_policy_run(const char *in, size_t n, struct smtp_reply *r, char *act, size_t actsz)
{
	char *copy = malloc(n ? n : 1);
	if (n)
		memcpy(copy, in, n);
	bool ok = policy_service_parse(copy, n, r, act, actsz);
	free(copy);
	if (!ok)
		return false;
	fuzz_policy_printable(act, actsz);
	if (act[0] == '\0')
		abort();
	if (r->code == 0)
		return true;
	if (r->code < 400 || r->code > 599 || r->enh[0] != (char)('0' + r->code / 100) ||
	    r->enh[1] != '.' || r->text[0] == '\0')
		abort();
	fuzz_policy_printable(r->enh, sizeof(r->enh));
	fuzz_policy_printable(r->text, sizeof(r->text));
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	struct smtp_reply a, b;
	char act_a[POLICY_SERVICE_REPLY_MAX], act_b[POLICY_SERVICE_REPLY_MAX];
	bool ok_a = fuzz_policy_run(in, size, &a, act_a, sizeof(act_a));
	/* The block ends at the first empty line: what follows is not read. */
	size_t end = 0;
	for (size_t i = 0; i + 1 < size; i++)
		if (in[i] == '\n' && in[i + 1] == '\n') {
			end = i + 2;
			break;
		}
	if (end == 0) {
		if (ok_a)
			abort(); /* no complete block, no verdict */
		return 0;
	}
	bool ok_b = fuzz_policy_run(in, end, &b, act_b, sizeof(act_b));
	if (ok_a != ok_b)
		abort();
	if (ok_a && (a.code != b.code || strcmp(a.enh, b.enh) != 0 || strcmp(a.text, b.text) != 0 ||
		     strcmp(act_a, act_b) != 0))
		abort();
	/* A small action buffer refuses, never truncates. */
	char small[8];
	struct smtp_reply c;
	if (fuzz_policy_run(in, size, &c, small, sizeof(small)) && strlen(act_a) >= sizeof(small))
		abort();
	return 0;
}
