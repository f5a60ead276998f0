/* fuzz-addrlist: the From:/Sender: address-list codec (src/smtp/addrlist.c)
 * on arbitrary field bodies. Properties (abort() when broken):
 *   - whole, one octet at a time and split in three give the same verdict,
 *     error offset and addresses (a resumable codec);
 *   - an error leaves no address; the error offset is inside the input;
 *   - every address is a non-empty string without control characters,
 *     with an '@' that is neither first nor last, and it reads back as
 *     itself inside <> (what is checked is a whole, well-formed addr-spec). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "smtp/addrlist.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_addrlist_same(const struct addrlist *a, const struct addrlist *b)
{
	if (a->error != b->error || a->error_at != b->error_at || a->naddrs != b->naddrs ||
	    buf_len(&a->addrs) != buf_len(&b->addrs) ||
	    (buf_len(&a->addrs) > 0 && memcmp(buf_data(&a->addrs), buf_data(&b->addrs), buf_len(&a->addrs)) != 0))
		abort();
}

static void fuzz_addrlist_check_addr(const char *addr)
{
	size_t n = strlen(addr);
	if (n < 3)
		abort();
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)addr[i] < 0x20 && addr[i] != '\t')
			abort();
	if (strchr(addr, '@') == NULL || addr[0] == '@' || addr[n - 1] == '@')
		abort();
	/* reads back as itself */
	struct buf in = BUF_INIT;
	buf_append(&in, "<", 1);
	buf_append(&in, addr, n);
	buf_append(&in, ">", 1);
	struct addrlist again;
	addrlist_init(&again);
	if (!addrlist_parse(&again, buf_data(&in), buf_len(&in)) || again.naddrs != 1 ||
	    strcmp(addrlist_next(&again, NULL), addr) != 0)
		abort();
	addrlist_free(&again);
	buf_free(&in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct addrlist whole, bytes, parts;
	addrlist_init(&whole);
	bool good = addrlist_parse(&whole, data, size);
	if (good != (whole.error == ADDRLIST_OK))
		abort();
	if (!good && (whole.naddrs != 0 || whole.error_at > size))
		abort();
	size_t count = 0;
	for (const char *p = addrlist_next(&whole, NULL); p != NULL; p = addrlist_next(&whole, p)) {
		fuzz_addrlist_check_addr(p);
		count++;
	}
	if (count != whole.naddrs)
		abort();

	addrlist_init(&bytes);
	for (size_t i = 0; i < size; i++)
		addrlist_feed(&bytes, data + i, 1);
	addrlist_finish(&bytes);
	fuzz_addrlist_same(&whole, &bytes);

	size_t k1 = size / 3, k2 = size - size / 5;
	addrlist_init(&parts);
	addrlist_feed(&parts, data, k1);
	addrlist_feed(&parts, data + k1, k2 - k1);
	addrlist_feed(&parts, data + k2, size - k2);
	addrlist_finish(&parts);
	fuzz_addrlist_same(&whole, &parts);

	addrlist_free(&whole);
	addrlist_free(&bytes);
	addrlist_free(&parts);
	return 0;
}
