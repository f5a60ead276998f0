/* dkim-tool: src/dkim on its own, for t/proto/61-dkim-lib.py and bench/.
 *
 *   dkim-tool sign KEYTABLE SIGNINGTABLE CANON FROM < message > signed
 *       signs a message (CRLF lines) as submitd would, with the signatures
 *       dkim_conf_choose() picks for FROM; exit 3 when none applies.
 *   dkim-tool bench KEYFILE N
 *       prints the microseconds one signature (5 KB-message header) costs,
 *       averaged over N, and the body-hash cost of 1 MB. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dkim/dkim.h"
#include "dkim/dkim_conf.h"
#include "smtp/header.h"

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int tool_sign(char **argv)
{
	struct dkim_settings s = {.key_table = argv[0], .signing_table = argv[1], .canon = argv[2]};
	char err[1024];
	struct dkim_conf *c = dkim_conf_new(&s, err, sizeof(err));
	if (c == NULL) {
		fprintf(stderr, "dkim-tool: %s\n", err);
		return 2;
	}
	struct buf m = BUF_INIT;
	for (;;) {
		uint8_t *w = buf_reserve(&m, 65536);
		ssize_t r = read(0, w, 65536);
		if (r <= 0)
			break;
		buf_commit(&m, (size_t)r);
	}
	struct header_info hi;
	header_scan(buf_data(&m), buf_len(&m), true, &hi);
	struct dkim_choice ch[DKIM_SIGS_MAX];
	size_t n = dkim_conf_choose(c, argv[3], ch, DKIM_SIGS_MAX);
	if (n == 0) {
		dkim_conf_free(&c);
		buf_free(&m);
		return 3;
	}
	struct dkim_body b;
	dkim_body_init(&b, c->bcanon);
	dkim_body_update(&b, buf_data(&m) + hi.header_len, buf_len(&m) - hi.header_len);
	uint8_t bh[DKIM_HASH_LEN];
	dkim_body_final(&b, bh);
	struct buf out = BUF_INIT;
	if (!dkim_conf_sign(c, ch, n, buf_data(&m), hi.header_len, bh, time(NULL), &out, err,
			    sizeof(err))) {
		fprintf(stderr, "dkim-tool: %s\n", err);
		return 2;
	}
	fwrite(buf_data(&out), 1, buf_len(&out), stdout);
	fwrite(buf_data(&m), 1, buf_len(&m), stdout);
	buf_free(&out);
	buf_free(&m);
	dkim_conf_free(&c);
	return 0;
}

static int tool_bench(char **argv)
{
	struct dkim_key k = {.path = argv[0], .selector = (char *)"bench"};
	char err[512];
	if (!dkim_key_load(&k, err, sizeof(err))) {
		fprintf(stderr, "dkim-tool: %s\n", err);
		return 2;
	}
	int n = atoi(argv[1]);
	const char *hdr = "Received: from client.example ([192.0.2.1])\r\n\tby mail.example.org "
			  "(submitd) with ESMTPSA id 4F2A; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
			  "From: Alice <alice@example.org>\r\nTo: bob@example.net\r\n"
			  "Subject: a 5 KB message\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
			  "Message-ID: <20240101000000.4F2A@mail.example.org>\r\nMIME-Version: 1.0\r\n"
			  "Content-Type: text/plain; charset=utf-8\r\n\r\n";
	static char body[5000];
	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (i % 72 == 70) ? '\r' : (i % 72 == 71) ? '\n' : (char)('a' + i % 26);
	const char *hl[] = {"from", "from", "to", "cc", "subject", "date", "message-id",
			    "mime-version", "content-*"};
	double t0 = now_us();
	for (int i = 0; i < n; i++) {
		struct dkim_body b;
		dkim_body_init(&b, DKIM_RELAXED);
		dkim_body_update(&b, (const uint8_t *)body, sizeof(body));
		uint8_t bh[32];
		dkim_body_final(&b, bh);
		struct dkim_sign_args a = {.key = &k, .domain = "example.org", .hcanon = DKIM_RELAXED,
					   .bcanon = DKIM_RELAXED, .headers = hl, .nheaders = 9,
					   .now = time(NULL), .bh = bh};
		struct buf out = BUF_INIT;
		if (!dkim_sign(&a, (const uint8_t *)hdr, strlen(hdr), &out, err, sizeof(err))) {
			fprintf(stderr, "dkim-tool: %s\n", err);
			return 2;
		}
		buf_free(&out);
	}
	double per = (now_us() - t0) / n;
	static uint8_t mb[1 << 20];
	for (size_t i = 0; i < sizeof(mb); i++)
		mb[i] = (i % 78 == 76) ? '\r' : (i % 78 == 77) ? '\n' : (uint8_t)('A' + i % 50);
	t0 = now_us();
	for (int r = 0; r < 20; r++) {
		struct dkim_body b;
		dkim_body_init(&b, DKIM_RELAXED);
		dkim_body_update(&b, mb, sizeof(mb));
		uint8_t bh[32];
		dkim_body_final(&b, bh);
	}
	double mbus = (now_us() - t0) / 20;
	printf("%s-sha256 %u bits: %.1f us per 5 KB message signed (body hash + header + "
	       "signature); relaxed body hash %.0f us per MB (%.0f MB/s)\n",
	       dkim_alg_name(k.alg), k.bits, per, mbus, 1e6 / mbus);
	k.path = NULL;
	k.selector = NULL;
	dkim_key_clear(&k);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 6 && strcmp(argv[1], "sign") == 0)
		return tool_sign(argv + 2);
	if (argc == 4 && strcmp(argv[1], "bench") == 0)
		return tool_bench(argv + 2);
	fprintf(stderr, "usage: dkim-tool sign KEYTABLE SIGNINGTABLE CANON FROM < msg\n"
			"       dkim-tool bench KEYFILE N\n");
	return 2;
}
