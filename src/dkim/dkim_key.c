/* dkim_key: private keys for DKIM (RSA, Ed25519) and the DNS record that
 * publishes their public half (RFC 6376 §3.6.1, RFC 8463 §4). Contracts in
 * dkim.h. */
#include "config.h"
#include "dkim/dkim.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/base64.h"

#define DKIM_KEY_FILE_MAX (64 * 1024)

const char *dkim_alg_name(enum dkim_alg a)
{
	return a == DKIM_ED25519_SHA256 ? "ed25519" : "rsa";
}

static bool dkim_key_err(char *err, size_t errlen, const char *path, const char *what,
			 const char *detail)
{
	snprintf(err, errlen, "%s: %s%s%s", path, what, detail ? ": " : "", detail ? detail : "");
	return false;
}

/* Reads a small file whole; the buffer is wiped by the caller. */
static bool dkim_key_read(const char *path, struct buf *b, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return dkim_key_err(err, errlen, path, "cannot open the key", strerror(errno));
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > DKIM_KEY_FILE_MAX) {
		close(fd);
		return dkim_key_err(err, errlen, path, "not a regular file of at most 64 KiB",
				    NULL);
	}
	for (;;) {
		uint8_t *w = buf_reserve(b, 4096);
		ssize_t r = read(fd, w, 4096);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			close(fd);
			return dkim_key_err(err, errlen, path, "cannot read the key", strerror(e));
		}
		if (r == 0)
			break;
		buf_commit(b, (size_t)r);
		if (buf_len(b) > DKIM_KEY_FILE_MAX) {
			close(fd);
			return dkim_key_err(err, errlen, path, "larger than 64 KiB", NULL);
		}
	}
	close(fd);
	return true;
}

static void dkim_key_b64(const uint8_t *p, size_t n, char **out)
{
	struct buf b = BUF_INIT;
	base64_encode(&b, p, n);
	*out = xstrndup((const char *)buf_data(&b), buf_len(&b));
	buf_free(&b);
}

bool dkim_key_load(struct dkim_key *k, char *err, size_t errlen)
{
	struct buf b = BUF_INIT;
	if (!dkim_key_read(k->path, &b, err, errlen)) {
		buf_wipe(&b);
		return false;
	}
	gnutls_privkey_t priv = NULL;
	gnutls_pubkey_t pub = NULL;
	bool ok = false;
	gnutls_datum_t d = {.data = buf_data(&b), .size = (unsigned)buf_len(&b)};
	int r = gnutls_privkey_init(&priv);
	if (r == 0)
		r = gnutls_privkey_import_x509_raw(priv, &d, GNUTLS_X509_FMT_PEM, NULL, 0);
	if (r < 0) {
		dkim_key_err(err, errlen, k->path, "not a PEM private key (PKCS#1 or PKCS#8)",
			     gnutls_strerror(r));
		goto out;
	}
	unsigned bits = 0;
	int pk = gnutls_privkey_get_pk_algorithm(priv, &bits);
	if (pk == GNUTLS_PK_RSA) {
		if (bits < DKIM_RSA_MIN_BITS || bits > DKIM_RSA_MAX_BITS) {
			char why[64];
			snprintf(why, sizeof(why), "%u bits", bits);
			dkim_key_err(err, errlen, k->path,
				     "an RSA key for DKIM has 1024 to 4096 bits (RFC 8301 §3.2)",
				     why);
			goto out;
		}
		k->alg = DKIM_RSA_SHA256;
	} else if (pk == GNUTLS_PK_EDDSA_ED25519) {
		k->alg = DKIM_ED25519_SHA256;
		bits = 256;
	} else {
		dkim_key_err(err, errlen, k->path, "neither an RSA nor an Ed25519 key",
			     gnutls_pk_get_name((gnutls_pk_algorithm_t)pk));
		goto out;
	}
	if ((r = gnutls_pubkey_init(&pub)) < 0 ||
	    (r = gnutls_pubkey_import_privkey(pub, priv, 0, 0)) < 0) {
		dkim_key_err(err, errlen, k->path, "no public key", gnutls_strerror(r));
		goto out;
	}
	gnutls_datum_t p = {NULL, 0};
	if (k->alg == DKIM_RSA_SHA256) {
		/* p= holds the SubjectPublicKeyInfo, as opendkim-genkey writes it. */
		r = gnutls_pubkey_export2(pub, GNUTLS_X509_FMT_DER, &p);
		if (r == 0)
			dkim_key_b64(p.data, p.size, &k->pub);
	} else {
		/* RFC 8463 §4: the bare 32-octet public key. */
		gnutls_ecc_curve_t curve;
		r = gnutls_pubkey_export_ecc_raw2(pub, &curve, &p, NULL, 0);
		if (r == 0 && p.size != 32)
			r = GNUTLS_E_INVALID_REQUEST;
		if (r == 0)
			dkim_key_b64(p.data, p.size, &k->pub);
	}
	gnutls_free(p.data);
	if (r < 0) {
		dkim_key_err(err, errlen, k->path, "cannot export the public key",
			     gnutls_strerror(r));
		goto out;
	}
	k->bits = bits;
	k->priv = priv;
	priv = NULL;
	ok = true;
out:
	if (pub != NULL)
		gnutls_pubkey_deinit(pub);
	if (priv != NULL)
		gnutls_privkey_deinit(priv);
	buf_wipe(&b);
	return ok;
}

void dkim_key_clear(struct dkim_key *k)
{
	free(k->name);
	free(k->domain);
	free(k->selector);
	free(k->path);
	free(k->pub);
	if (k->priv != NULL)
		gnutls_privkey_deinit(k->priv);
	memset(k, 0, sizeof(*k));
}

void dkim_key_txt(const struct dkim_key *k, const char *domain, struct buf *out)
{
	struct buf v = BUF_INIT;
	buf_printf(&v, "v=DKIM1; k=%s; p=%s", dkim_alg_name(k->alg), k->pub);
	buf_printf(out, "%s._domainkey.%s. IN TXT ", k->selector, domain);
	/* One character-string holds at most 255 octets (RFC 1035 §3.3). */
	const char *s = (const char *)buf_data(&v);
	size_t n = buf_len(&v);
	for (size_t i = 0; i < n; i += 255)
		buf_printf(out, "%s\"%.*s\"", i ? " " : "", (int)(n - i > 255 ? 255 : n - i),
			   s + i);
	buf_free(&v);
}
