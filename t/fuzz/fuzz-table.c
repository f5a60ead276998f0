/* fuzz-table: the table file parsers (texthash(5) files, mysql_table(5)
 * .cf files, inline:{...} specs) and the sender key builder, on arbitrary
 * bytes. The first byte picks the parser. Properties: no crash or leak; a
 * refusal always says where ("fuzz:LINE: ..." for files); parsing is
 * deterministic; a sender address always yields at least one key and
 * never more than five, and fit the
 * request's key buffer for any path within RFC 5321's length limit. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lookup/addrkey.h"
#include "lookup/table.h"
#include "policy/sender_login.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	const char *text = (const char *)data + 1;
	size_t len = size - 1;
	char err[512] = "", err2[512] = "";
	struct table *t = NULL, *t2 = NULL;

	switch (data[0] % 4) {
	case 0:
	case 1: {
		const char *type = data[0] % 4 == 0 ? "texthash" : "mysql";
		t = table_open_text(type, text, len, "fuzz", err, sizeof(err));
		t2 = table_open_text(type, text, len, "fuzz", err2, sizeof(err2));
		if ((t == NULL) != (t2 == NULL) || (t == NULL && strcmp(err, err2) != 0))
			abort();
		if (t == NULL && strncmp(err, "fuzz", 4) != 0)
			abort();
		if (t != NULL && data[0] % 4 == 0) {
			const char *v;
			/* lookups never crash and agree with themselves */
			enum table_status a = table_lookup_sync(t, "alice@example.com", &v);
			enum table_status b = table_lookup_sync(t, "ALICE@example.com", &v);
			if (a != b)
				abort();
		}
		break;
	}
	case 2: {
		char *spec = malloc(len + 8);
		memcpy(spec, "inline:", 7);
		memcpy(spec + 7, text, len);
		spec[len + 7] = 0;
		if (memchr(text, 0, len) == NULL) {
			t = table_open(spec, err, sizeof(err));
			if (t == NULL && err[0] == 0)
				abort();
		}
		free(spec);
		break;
	}
	case 3: {
		char *addr = malloc(len + 1);
		memcpy(addr, text, len);
		addr[len] = 0;
		/* the buffer sender_login_check() uses: every address up to the
		 * RFC 5321 path limit must fit (longer ones may be refused) */
		char keys[2048];
		int n = addrkey_keys(addr, "+-", keys, sizeof(keys));
		if (n > 5 || n == 0 || (n < 0 && strlen(addr) <= 256))
			abort();
		(void)sender_login_owner_match(addr, "alice@example.com");
		free(addr);
		break;
	}
	}
	table_free(&t);
	table_free(&t2);
	return 0;
}
