#include "config.h"
#include "net/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <gnutls/abstract.h>
#include <gnutls/x509.h>

#include "core/buf.h"
#include "core/log.h"

#define TLS_MAX_CHAIN 16
/* Before several pairs, a repeated tls_cert_file replaced the earlier one. */
#define TLS_REPEAT_HINT                                                                   \
	" (a repeated tls_cert_file or tls_key_file no longer replaces the earlier one: " \
	"delete the lines of the pair you no longer mean)"
#define TLS_FILE_MAX (1 << 20) /* a chain of 16 with its key is far below */

/* One certificate/key pair before it is handed to the credentials. */
struct tls_pair {
	const char *what; /* "tls_cert_file" or "tls_sni NAME", for errors */
	const char *cert_file, *key_file;
	const struct tls_sni *sni; /* NULL: a default pair */
	bool several;              /* more than one default pair: order matters */
	gnutls_pcert_st pcerts[TLS_MAX_CHAIN];
	unsigned npcerts;
	gnutls_privkey_t key;
	int pk;        /* gnutls_pk_algorithm_t of the certificate */
	unsigned rank; /* the order GnuTLS tries them in: cheapest signature first */
	size_t line;   /* position in the file, to keep the order of equals */
};

/* GnuTLS serves the first pair of the credentials that the client can
 * verify (among those whose names match its SNI), in the order they were
 * added: ECDSA and EdDSA sign in a fraction of RSA's time (docs/benchmarks.md),
 * so they go first and RSA serves the clients that offer nothing else. */
static unsigned tls_pk_rank(int pk)
{
	switch (pk) {
	case GNUTLS_PK_ECDSA:
		return 0;
	case GNUTLS_PK_EDDSA_ED25519:
	case GNUTLS_PK_EDDSA_ED448:
		return 1;
	case GNUTLS_PK_RSA_PSS:
		return 2;
	case GNUTLS_PK_RSA:
		return 3;
	default:
		return 99; /* refused by tls_pair_read() */
	}
}

/* "ECDSA P-256", "RSA-2048", "Ed25519". */
static void tls_key_type(gnutls_pubkey_t pub, char *out, size_t outsz)
{
	unsigned bits = 0;
	int pk = gnutls_pubkey_get_pk_algorithm(pub, &bits);
	switch (pk) {
	case GNUTLS_PK_ECDSA:
		snprintf(out, outsz, "ECDSA P-%u", bits);
		break;
	case GNUTLS_PK_RSA:
	case GNUTLS_PK_RSA_PSS:
		snprintf(out, outsz, "%s-%u", pk == GNUTLS_PK_RSA ? "RSA" : "RSA-PSS", bits);
		break;
	case GNUTLS_PK_EDDSA_ED25519:
		snprintf(out, outsz, "Ed25519");
		break;
	case GNUTLS_PK_EDDSA_ED448:
		snprintf(out, outsz, "Ed448");
		break;
	default:
		snprintf(out, outsz, "%s",
			 pk < 0 ? "?" : gnutls_pk_get_name((gnutls_pk_algorithm_t)pk));
	}
}

static void tls_pair_free(struct tls_pair *p)
{
	if (p->key != NULL)
		gnutls_privkey_deinit(p->key);
	p->key = NULL;
	for (unsigned i = 0; i < p->npcerts; i++)
		gnutls_pcert_deinit(&p->pcerts[i]);
	p->npcerts = 0;
}

/* Reads a certificate or key file whole. Refuses what is not a regular file
 * before reading (a named pipe would block the open until a writer came, and
 * with it the main thread; /dev/zero never ends) and anything past
 * TLS_FILE_MAX. The caller wipes and frees b. */
static bool tls_file_read(const char *what, const char *path, struct buf *b, char *err,
			  size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return false;
	}
	const char *bad = !S_ISREG(st.st_mode)        ? "not a regular file"
			  : st.st_size > TLS_FILE_MAX ? "larger than 1 MiB"
						      : NULL;
	while (bad == NULL) {
		uint8_t *w = buf_reserve(b, 16384);
		ssize_t r = read(fd, w, 16384);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			bad = strerror(errno);
		else if (r == 0)
			break;
		else if (buf_len(b) + (size_t)r > TLS_FILE_MAX)
			bad = "larger than 1 MiB"; /* grew while read */
		else
			buf_commit(b, (size_t)r);
	}
	close(fd);
	if (bad != NULL)
		snprintf(err, errlen, "%s %s: %s", what, path, bad);
	return bad == NULL;
}

/* Reads the chain and the key of p (the key file may be the certificate
 * file itself, holding both) and checks that they belong together. */
static bool tls_pair_read(struct tls_pair *p, char *err, size_t errlen)
{
	struct buf b = BUF_INIT;
	if (!tls_file_read(p->what, p->cert_file, &b, err, errlen)) {
		buf_wipe(&b);
		return false;
	}
	unsigned n = TLS_MAX_CHAIN;
	gnutls_datum_t d = {buf_data(&b), (unsigned)buf_len(&b)};
	int r = gnutls_pcert_list_import_x509_raw(p->pcerts, &n, &d, GNUTLS_X509_FMT_PEM,
						  GNUTLS_X509_CRT_LIST_IMPORT_FAIL_IF_EXCEED);
	buf_wipe(&b); /* the key may be in the same file */
	if (r < 0) {
		/* GnuTLS 3.7 says "unimplemented feature" past the array's end */
		bool many =
			r == GNUTLS_E_SHORT_MEMORY_BUFFER || r == GNUTLS_E_UNIMPLEMENTED_FEATURE;
		snprintf(err, errlen, "%s %s: %s%s", p->what, p->cert_file, gnutls_strerror(r),
			 many ? " (at most 16 certificates in a chain)" : "");
		return false;
	}
	p->npcerts = n;
	char what[320];
	snprintf(what, sizeof(what), "%s: key", p->what);
	if (!tls_file_read(what, p->key_file, &b, err, errlen)) {
		buf_wipe(&b);
		return false;
	}
	d = (gnutls_datum_t){buf_data(&b), (unsigned)buf_len(&b)};
	r = gnutls_privkey_init(&p->key);
	if (r >= 0)
		r = gnutls_privkey_import_x509_raw(p->key, &d, GNUTLS_X509_FMT_PEM, NULL, 0);
	/* Without a password GnuTLS says only "decryption has failed". */
	bool encrypted = r < 0 && buf_len(&b) > 0 &&
			 memmem(buf_data(&b), buf_len(&b), "ENCRYPTED", 9) != NULL;
	buf_wipe(&b);
	if (r < 0) {
		snprintf(err, errlen, "%s: key %s: %s", p->what, p->key_file,
			 encrypted ? "an encrypted key: submitd reads keys without a password "
				     "(openssl pkey -in KEY -out KEY.new writes it unencrypted)"
				   : gnutls_strerror(r));
		return false;
	}
	char type[32];
	tls_key_type(p->pcerts[0].pubkey, type, sizeof(type));
	p->pk = gnutls_pubkey_get_pk_algorithm(p->pcerts[0].pubkey, NULL);
	p->rank = tls_pk_rank(p->pk);
	if (p->rank == 99) {
		snprintf(err, errlen, "%s %s: a %s key cannot sign a TLS handshake here", p->what,
			 p->cert_file, type);
		return false;
	}
	/* Compare public keys: GnuTLS would say only "mismatch". */
	gnutls_pubkey_t kpub = NULL;
	gnutls_datum_t kder = {NULL, 0};
	bool have = gnutls_pubkey_init(&kpub) >= 0 &&
		    gnutls_pubkey_import_privkey(kpub, p->key, 0, 0) >= 0 &&
		    gnutls_pubkey_export2(kpub, GNUTLS_X509_FMT_DER, &kder) >= 0;
	unsigned match = p->npcerts; /* the certificate of the key in the chain */
	for (unsigned i = 0; have && match == p->npcerts && i < p->npcerts; i++) {
		gnutls_datum_t c = {NULL, 0};
		if (gnutls_pubkey_export2(p->pcerts[i].pubkey, GNUTLS_X509_FMT_DER, &c) >= 0 &&
		    c.size == kder.size && memcmp(c.data, kder.data, c.size) == 0)
			match = i;
		gnutls_free(c.data);
	}
	char ktype[32] = "?";
	if (match != 0 && kpub != NULL)
		tls_key_type(kpub, ktype, sizeof(ktype));
	gnutls_free(kder.data);
	if (kpub != NULL)
		gnutls_pubkey_deinit(kpub);
	if (match != 0 && match < p->npcerts) {
		snprintf(
			err, errlen,
			"%s %s: the certificate of the key in %s is number %u; it must come first, "
			"the chain after it",
			p->what, p->cert_file, p->key_file, match + 1);
		return false;
	}
	if (match != 0) {
		snprintf(err, errlen,
			 "%s %s: the key in %s (%s) does not match the certificate (%s)%s", p->what,
			 p->cert_file, p->key_file, ktype, type,
			 !p->several || p->sni != NULL
				 ? ""
				 : "; tls_cert_file and tls_key_file pair up in the order they "
				   "are written");
		return false;
	}
	return true;
}

/* Default pairs first (the fallback for clients without a known SNI name),
 * then by rank; the file's order among equals. */
static int tls_pair_cmp(const void *x, const void *y)
{
	const struct tls_pair *a = x, *b = y;
	if ((a->sni != NULL) != (b->sni != NULL))
		return a->sni != NULL ? 1 : -1;
	if (a->rank != b->rank)
		return a->rank < b->rank ? -1 : 1;
	return a->line < b->line ? -1 : a->line > b->line;
}

struct tls_name_pk {
	const char *name;
	int pk;
	const struct tls_pair *pair;
};

static int tls_name_pk_cmp(const void *x, const void *y)
{
	const struct tls_name_pk *a = x, *b = y;
	int c = strcmp(a->name, b->name);
	if (c != 0)
		return c;
	if (a->pk != b->pk)
		return a->pk < b->pk ? -1 : 1;
	return a->pair->line < b->pair->line ? -1 : a->pair->line > b->pair->line;
}

/* Two pairs of one key type for the same name (or two default ones): GnuTLS
 * would always serve the first, so the second is a mistake. Sorting keeps
 * this O(n log n) for a hosting panel's thousands of tls_sni lines. */
static bool tls_pairs_unique(const struct tls_pair *pairs, size_t n, char *err, size_t errlen)
{
	size_t nitems = 0;
	for (size_t i = 0; i < n; i++)
		nitems += pairs[i].sni != NULL ? pairs[i].sni->nnames : 1;
	struct tls_name_pk *items = xcalloc(nitems ? nitems : 1, sizeof(*items));
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (pairs[i].sni == NULL)
			items[k++] = (struct tls_name_pk){"", pairs[i].pk, &pairs[i]};
		else
			for (size_t j = 0; j < pairs[i].sni->nnames; j++)
				items[k++] = (struct tls_name_pk){pairs[i].sni->names[j],
								  pairs[i].pk, &pairs[i]};
	}
	qsort(items, nitems, sizeof(*items), tls_name_pk_cmp);
	bool ok = true;
	for (size_t i = 1; ok && i < nitems; i++) {
		if (strcmp(items[i].name, items[i - 1].name) != 0 || items[i].pk != items[i - 1].pk)
			continue;
		char type[32];
		tls_key_type(items[i].pair->pcerts[0].pubkey, type, sizeof(type));
		snprintf(err, errlen,
			 "%s %s and %s: two %s pairs%s%s; one pair per key type (e.g. ECDSA and "
			 "RSA)%s",
			 items[i].pair->what, items[i - 1].pair->cert_file,
			 items[i].pair->cert_file, type, *items[i].name ? " for " : "",
			 items[i].name, *items[i].name ? "" : TLS_REPEAT_HINT);
		ok = false;
	}
	free(items);
	return ok;
}

/* When no default pair suits a client (no SNI, or a name without pairs),
 * GnuTLS goes on to the tls_sni pairs and serves the first that suits it:
 * an RSA-only client would get some customer's RSA certificate. Said once
 * per key type (a hosting panel may have thousands of such lines). */
static void tls_pairs_warn_fallback(const struct tls_pair *pairs, size_t n)
{
	bool dflt[100] = {false}, said[100] = {false};
	for (size_t i = 0; i < n; i++)
		if (pairs[i].sni == NULL)
			dflt[pairs[i].rank] = true;
	for (size_t i = 0; i < n; i++) {
		const struct tls_pair *p = &pairs[i];
		if (p->sni == NULL || dflt[p->rank] || said[p->rank])
			continue;
		said[p->rank] = true;
		char type[32];
		tls_key_type(p->pcerts[0].pubkey, type, sizeof(type));
		log_warn("%s: an %s pair, but no tls_cert_file pair of that key type: a client "
			 "that can use no other and names no tls_sni name gets %s's certificate",
			 p->what, type, p->what + 8); /* past "tls_sni " */
	}
}

bool tls_server_load(struct config *cfg, char *err, size_t errlen)
{
	const char *errpos = NULL;
	int r = gnutls_priority_init(&cfg->tls_prio, cfg->tls_priority, &errpos);
	if (r < 0) {
		cfg->tls_prio = NULL;
		snprintf(err, errlen, "tls_priority: %s near \"%s\"", gnutls_strerror(r),
			 errpos ? errpos : "");
		return false;
	}
	if (cfg->ntls_cert_files != cfg->ntls_key_files) {
		snprintf(err, errlen,
			 "%zu tls_cert_file but %zu tls_key_file lines: they pair up in order, "
			 "one key for each certificate%s",
			 cfg->ntls_cert_files, cfg->ntls_key_files, TLS_REPEAT_HINT);
		return false;
	}
	if (cfg->ntls_cert_files == 0) {
		if (cfg->ntls_sni > 0) {
			snprintf(err, errlen,
				 "tls_sni needs tls_cert_file and tls_key_file (the "
				 "certificate for clients without SNI)");
			return false;
		}
		return true;
	}
	/* One ticket key per configuration snapshot, shared by the workers;
	   a reload starts a new one (old tickets then fall back to a full
	   handshake). */
	if ((r = gnutls_session_ticket_key_generate(&cfg->tls_ticket_key)) < 0) {
		snprintf(err, errlen, "session ticket key: %s", gnutls_strerror(r));
		return false;
	}
	if ((r = gnutls_certificate_allocate_credentials(&cfg->tls_creds)) < 0) {
		cfg->tls_creds = NULL;
		snprintf(err, errlen, "TLS credentials: %s", gnutls_strerror(r));
		return false;
	}
	size_t n = cfg->ntls_cert_files + cfg->ntls_sni;
	struct tls_pair *pairs = xcalloc(n, sizeof(*pairs));
	char *whats = xcalloc(cfg->ntls_sni + 1, 280);
	bool ok = true;
	for (size_t i = 0; ok && i < n; i++) {
		struct tls_pair *p = &pairs[i];
		p->line = i;
		p->several = cfg->ntls_cert_files > 1;
		if (i < cfg->ntls_cert_files) {
			p->what = "tls_cert_file";
			p->cert_file = cfg->tls_cert_files[i];
			p->key_file = cfg->tls_key_files[i];
		} else {
			p->sni = &cfg->tls_sni[i - cfg->ntls_cert_files];
			char *w = whats + 280 * (i - cfg->ntls_cert_files);
			snprintf(w, 280, "tls_sni %s", p->sni->names[0]);
			p->what = w;
			p->cert_file = p->sni->cert_file;
			p->key_file = p->sni->key_file;
		}
		ok = tls_pair_read(p, err, errlen);
	}
	ok = ok && tls_pairs_unique(pairs, n, err, errlen);
	if (ok) {
		qsort(pairs, n, sizeof(*pairs), tls_pair_cmp);
		tls_pairs_warn_fallback(pairs, n);
	}
	for (size_t i = 0; ok && i < n; i++) {
		struct tls_pair *p = &pairs[i];
		/* Without names GnuTLS takes them from the certificate. On
		   success the credentials own the key and the certificates (the
		   array itself is copied). */
		r = gnutls_certificate_set_key(
			cfg->tls_creds, p->sni ? (const char **)p->sni->names : NULL,
			p->sni ? (int)p->sni->nnames : 0, p->pcerts, (int)p->npcerts, p->key);
		if (r < 0) {
			snprintf(err, errlen, "%s %s / %s: %s", p->what, p->cert_file, p->key_file,
				 gnutls_strerror(r));
			ok = false;
			break;
		}
		p->key = NULL;
		p->npcerts = 0;
	}
	for (size_t i = 0; i < n; i++)
		tls_pair_free(&pairs[i]);
	free(pairs);
	free(whats);
	return ok;
}

size_t tls_server_npairs(const struct config *cfg)
{
	return cfg->tls_creds == NULL ? 0 : cfg->ntls_cert_files + cfg->ntls_sni;
}

void tls_server_describe_pair(const struct config *cfg, size_t i, char *out, size_t outsz)
{
	snprintf(out, outsz, "?");
	gnutls_datum_t der;
	gnutls_x509_crt_t crt;
	if (cfg->tls_creds == NULL ||
	    gnutls_certificate_get_crt_raw(cfg->tls_creds, (unsigned)i, 0, &der) < 0 ||
	    gnutls_x509_crt_init(&crt) < 0)
		return;
	gnutls_pubkey_t pub = NULL;
	if (gnutls_x509_crt_import(crt, &der, GNUTLS_X509_FMT_DER) == 0 &&
	    gnutls_pubkey_init(&pub) == 0) {
		char type[32] = "?", dn[256] = "", fp[100] = "", when[32] = "?";
		if (gnutls_pubkey_import_x509(pub, crt, 0) == 0)
			tls_key_type(pub, type, sizeof(type));
		gnutls_datum_t d = {NULL, 0};
		if (gnutls_x509_crt_get_dn3(crt, &d, 0) == 0) {
			/* the subject is whatever the certificate's maker wrote: it
			   reaches -t's output as well as the log */
			log_escape(dn, sizeof(dn), d.data, d.size);
			gnutls_free(d.data);
		}
		uint8_t md[32];
		size_t mdlen = sizeof(md);
		if (gnutls_x509_crt_get_fingerprint(crt, GNUTLS_DIG_SHA256, md, &mdlen) == 0) {
			for (size_t j = 0; j < mdlen && 3 * j + 3 < sizeof(fp); j++)
				snprintf(fp + 3 * j, 4, "%02X%s", md[j], j + 1 < mdlen ? ":" : "");
		}
		time_t t = gnutls_x509_crt_get_expiration_time(crt);
		struct tm tm;
		if (t != (time_t)-1 && gmtime_r(&t, &tm) != NULL)
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%SZ", &tm);
		snprintf(out, outsz, "%s \"%s\" valid until %s, SHA-256 %s", type, dn, when, fp);
		gnutls_pubkey_deinit(pub);
	}
	gnutls_x509_crt_deinit(crt);
}

void tls_server_describe(const struct config *cfg, char *out, size_t outsz)
{
	snprintf(out, outsz, "no TLS certificate");
	if (cfg->tls_creds == NULL || outsz == 0)
		return;
	size_t len = 0;
	out[0] = '\0';
	for (size_t i = 0; i < cfg->ntls_cert_files && len < outsz; i++) {
		char one[512];
		tls_server_describe_pair(cfg, i, one, sizeof(one));
		int w = snprintf(out + len, outsz - len, "%scertificate %s", i ? "; " : "", one);
		len += w > 0 ? (size_t)w : 0;
	}
	if (len < outsz)
		snprintf(out + len, outsz - len, ", %zu SNI pair%s", cfg->ntls_sni,
			 cfg->ntls_sni == 1 ? "" : "s");
}
