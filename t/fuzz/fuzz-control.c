/* fuzz-control: the control socket's request parser (src/control_parse.c).
 * Properties checked on every input: an accepted request is printable
 * ASCII throughout, its argument a lowered word of 1..255 bytes, a reason
 * only for hold and block and shorter than CONTROL_REASON_MAX, nothing
 * read past the given length (an exact-size copy); a refusal always says
 * why; parsing is deterministic. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "control_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_control_text(const char *s, size_t max, bool spaces)
{
	size_t n = strnlen(s, max);
	if (n == max)
		abort(); /* unterminated */
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f ||
		    (!spaces && s[i] == ' '))
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy = malloc(size ? size : 1);
	if (size)
		memcpy(copy, data, size);
	struct control_req r, again;
	char err[160] = "", err2[160] = "";
	bool ok = control_parse(copy, size, &r, err, sizeof(err));
	bool ok2 = control_parse(copy, size, &again, err2, sizeof(err2));
	if (ok != ok2 || (!ok && strcmp(err, err2) != 0))
		abort();
	if (!ok) {
		if (err[0] == '\0')
			abort();
		free(copy);
		return 0;
	}
	if (size > CONTROL_LINE_MAX || memchr(copy, '\n', size) != NULL)
		abort();
	if (r.name == NULL)
		abort();
	fuzz_control_text(r.arg, sizeof(r.arg), false);
	fuzz_control_text(r.rest, sizeof(r.rest), true);
	if (r.has_arg != (r.arg[0] != '\0') || r.has_rest != (r.rest[0] != '\0'))
		abort();
	if (r.has_rest && !r.has_arg)
		abort();
	if (r.has_rest && r.verb != CONTROL_HOLD && r.verb != CONTROL_BLOCK)
		abort();
	bool wants_arg = r.verb != CONTROL_STATUS && r.verb != CONTROL_SESSIONS &&
			 r.verb != CONTROL_HELD && r.verb != CONTROL_STATS;
	if (wants_arg != r.has_arg)
		abort();
	for (const char *p = r.arg; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			abort();
	if (memcmp(&r.arg, &again.arg, sizeof(r.arg)) != 0 || r.verb != again.verb ||
	    r.json != again.json || strcmp(r.rest, again.rest) != 0)
		abort();
	free(copy);
	return 0;
}
