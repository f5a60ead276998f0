#include "config.h"
#include "core/config.h"
#include "core/config_file.h"
#include "core/duration.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "core/buf.h"

/* TLS 1.2 only with ECDHE key exchange: forward secrecy for every session
 * (static RSA has none, RFC 7525 §4.2). */
#define DEFAULT_TLS_PRIORITY                                                                \
	"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL:+AES-256-GCM:+AES-128-GCM:" \
	"+CHACHA20-POLY1305:-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA:%SERVER_PRECEDENCE"

enum config_type {
	CFG_STR,     /* char *, last one wins */
	CFG_UINT,    /* unsigned, bounded */
	CFG_SIZE,    /* uint64_t bytes, optional k/m/g suffix */
	CFG_TIME,    /* uint64_t milliseconds; core/duration.h */
	CFG_SPECIAL, /* parsed by a hook, may repeat */
};

struct config_key;
typedef bool config_hook(struct config *cfg, const char *value, char *err, size_t errlen);

struct config_key {
	const char *name;
	enum config_type type;
	size_t offset;
	const char *def;   /* default, in file syntax; NULL: none */
	uint64_t min, max; /* bounds for numbers */
	config_hook *hook; /* CFG_SPECIAL */
	bool per_listener; /* may be set on a listen line (KEY=VALUE) */
};
#define LISTENER true /* per_listener */
#define GLOBAL false

static config_hook config_proxy_networks, config_tls_sni, config_client_limit_exceptions;
static config_hook config_disable_vrfy, config_tls_cert_file, config_tls_key_file;
static config_hook config_unknown_tempfail, config_always_on;
static config_hook config_listen, config_mynetworks, config_relayhost, config_bare_newline,
	config_relay_tls, config_syslog, config_log_level, config_log_format;
static config_hook config_relay_ca_file, config_relay_auth_header, config_sender_dependent_auth,
	config_relay_sasl_plaintext;
static config_hook config_relay_pipelining;

#define OFF(f) offsetof(struct config, f)
static const struct config_key config_keys[] = {
	{"myhostname", CFG_STR, OFF(myhostname), NULL, 0, 0, NULL, GLOBAL},
	{"listen", CFG_SPECIAL, 0, NULL, 0, 0, config_listen, GLOBAL},
	/* repeatable: the Nth of each make the Nth pair (net/tls.c) */
	{"tls_cert_file", CFG_SPECIAL, 0, NULL, 0, 0, config_tls_cert_file, GLOBAL},
	{"tls_key_file", CFG_SPECIAL, 0, NULL, 0, 0, config_tls_key_file, GLOBAL},
	{"tls_priority", CFG_STR, OFF(tls_priority), DEFAULT_TLS_PRIORITY, 0, 0, NULL, LISTENER},
	{"mynetworks", CFG_SPECIAL, 0, "127.0.0.0/8, ::1/128", 0, 0, config_mynetworks, LISTENER},
	{"relayhost", CFG_SPECIAL, 0, "[127.0.0.1]:25", 0, 0, config_relayhost, GLOBAL},
	{"relay_tls_security_level", CFG_SPECIAL, 0, "may", 0, 0, config_relay_tls, GLOBAL},
	{"dovecot_auth_socket", CFG_STR, OFF(dovecot_auth_socket), NULL, 0, 0, NULL, GLOBAL},
	/* Cyrus saslauthd instead of Dovecot (lookup/saslauthd.h); Postfix's
	   smtpd_sasl_local_domain is the realm */
	{"saslauthd_socket", CFG_STR, OFF(saslauthd_socket), NULL, 0, 0, NULL, GLOBAL},
	{"saslauthd_service", CFG_STR, OFF(saslauthd_service), "smtp", 0, 0, NULL, GLOBAL},
	{"saslauthd_realm", CFG_STR, OFF(saslauthd_realm), "", 0, 0, NULL, GLOBAL},
	/* process-wide: each worker's one Dovecot client uses it */
	{"auth_timeout", CFG_TIME, OFF(auth_timeout_ms), "30s", 100, 600000, NULL, GLOBAL},
	{"auth_failure_delay", CFG_TIME, OFF(auth_failure_delay_ms), "1s", 0, 600000, NULL,
	 LISTENER},
	{"auth_failure_delay_max", CFG_TIME, OFF(auth_failure_delay_max_ms), "8s", 0, 600000, NULL,
	 LISTENER},
	{"auth_max_failures", CFG_UINT, OFF(auth_max_failures), "3", 1, 1000, NULL, LISTENER},
	{"auth_ip_failure_limit", CFG_UINT, OFF(auth_ip_failure_limit), "20", 0, 1000000, NULL,
	 LISTENER},
	{"auth_ip_failure_window", CFG_TIME, OFF(auth_ip_failure_window_ms), "10m", 1000, 86400000,
	 NULL, LISTENER},
	{"auth_ip_block_time", CFG_TIME, OFF(auth_ip_block_time_ms), "10m", 1000, 86400000, NULL,
	 LISTENER},
	/* sender ownership (policy/policy.c) */
	{"sender_login_maps", CFG_STR, OFF(sender_login_maps), NULL, 0, 0, NULL, LISTENER},
	{"sender_login_policy", CFG_STR, OFF(sender_login_policy), "reject_sender_login_mismatch",
	 0, 0, NULL, LISTENER},
	{"recipient_delimiter", CFG_STR, OFF(recipient_delimiter), "+", 0, 0, NULL, LISTENER},
	{"sender_login_cache_ttl", CFG_TIME, OFF(sender_login_cache_ttl_ms), "60s", 0, 86400000,
	 NULL, LISTENER},
	{"sender_login_negative_cache_ttl", CFG_TIME, OFF(sender_login_negative_cache_ttl_ms),
	 "10s", 0, 86400000, NULL, LISTENER},
	/* Postfix restriction lists (policy/restrictions.c); unset: RFC 6409
	   §4.2's fully qualified addresses on submission (starttls/tls) listeners */
	{"sender_restrictions", CFG_STR, OFF(sender_restrictions), NULL, 0, 0, NULL, LISTENER},
	{"recipient_restrictions", CFG_STR, OFF(recipient_restrictions), NULL, 0, 0, NULL,
	 LISTENER},
	{"disable_vrfy_command", CFG_SPECIAL, 0, "no", 0, 0, config_disable_vrfy, LISTENER},
	/* Postfix's smtpd_helo_required and strict_rfc821_envelopes: always on
	   here; "yes" is taken so a copied block loads, "no" is refused */
	{"helo_required", CFG_SPECIAL, 0, NULL, 0, 0, config_always_on, LISTENER},
	{"strict_rfc821_envelopes", CFG_SPECIAL, 0, NULL, 0, 0, config_always_on, LISTENER},
	{"header_from_policy", CFG_STR, OFF(header_from_policy), "reject", 0, 0, NULL, LISTENER},
	{"header_from_exempt_maps", CFG_STR, OFF(header_from_exempt_maps), NULL, 0, 0, NULL,
	 LISTENER},
	{"message_size_limit", CFG_SIZE, OFF(message_size_limit), "10240000", 1024,
	 (uint64_t)1 << 40, NULL, LISTENER},
	{"header_size_limit", CFG_SIZE, OFF(header_size_limit), "102400", 1024, 16 << 20, NULL,
	 LISTENER},
	{"line_length_limit", CFG_UINT, OFF(line_length_limit), "2048", 512, 65536, NULL, LISTENER},
	{"recipient_limit", CFG_UINT, OFF(recipient_limit), "1000", 100, 100000, NULL, LISTENER},
	{"error_limit", CFG_UINT, OFF(error_limit), "20", 3, 1000, NULL, LISTENER},
	{"workers", CFG_UINT, OFF(workers), "0", 0, 256, NULL, GLOBAL},
	{"max_connections", CFG_UINT, OFF(max_connections), "20000", 1, 1000000, NULL, GLOBAL},
	{"max_connections_per_ip", CFG_UINT, OFF(max_connections_per_ip), "50", 1, 1000000, NULL,
	 LISTENER},
	/* clients exempt from max_connections_per_ip and the AUTH failure budget
	   (Postfix smtpd_client_event_limit_exceptions): networks, "$mynetworks" */
	{"client_limit_exceptions", CFG_SPECIAL, 0, "$mynetworks", 0, 0,
	 config_client_limit_exceptions, LISTENER},
	/* IPv6 clients are counted per network of this prefix length (per-address limits) */
	{"ipv6_client_prefix", CFG_UINT, OFF(ipv6_client_prefix), "64", 16, 128, NULL, GLOBAL},
	{"bare_newline", CFG_SPECIAL, 0, "reject", 0, 0, config_bare_newline, LISTENER},
	{"command_timeout", CFG_TIME, OFF(command_timeout_ms), "300s", 1000, 3600000, NULL,
	 LISTENER},
	{"data_timeout", CFG_TIME, OFF(data_timeout_ms), "300s", 1000, 3600000, NULL, LISTENER},
	{"session_timeout", CFG_TIME, OFF(session_timeout_ms), "3600s", 1000, 86400000, NULL,
	 LISTENER},
	{"relay_connect_timeout", CFG_TIME, OFF(relay_connect_timeout_ms), "10s", 100, 600000, NULL,
	 GLOBAL},
	{"relay_timeout", CFG_TIME, OFF(relay_timeout_ms), "100s", 100, 600000, NULL, GLOBAL},
	{"relay_idle_timeout", CFG_TIME, OFF(relay_idle_timeout_ms), "10s", 0, 3600000, NULL,
	 GLOBAL},
	/* a total for the downstream DATA phase, from the 354 to the reply to the dot */
	{"relay_data_timeout", CFG_TIME, OFF(relay_data_timeout_ms), "10m", 1000, 86400000, NULL,
	 GLOBAL},
	{"relay_reuse_limit", CFG_UINT, OFF(relay_reuse_limit), "100", 1, 100000, NULL, GLOBAL},
	/* MAIL, RCPT and DATA sent without waiting when the downstream offers PIPELINING */
	{"relay_pipelining", CFG_SPECIAL, 0, "yes", 0, 0, config_relay_pipelining, GLOBAL},
	/* smarthost: TLS policy, client SASL, per-sender routes (src/relay/) */
	/* CAs trusted for the relay at verify/secure (Postfix smtp_tls_CAfile); default: the system store */
	{"relay_tls_ca_file", CFG_SPECIAL, 0, NULL, 0, 0, config_relay_ca_file, GLOBAL},
	/* TABLE of user:password for AUTH to the relay (Postfix smtp_sasl_password_maps) */
	{"relay_password_maps", CFG_STR, OFF(relay_password_maps), NULL, 0, 0, NULL, GLOBAL},
	/* TABLE sender or @domain -> destinations (Postfix sender_dependent_relayhost_maps) */
	{"sender_relay_maps", CFG_STR, OFF(sender_relay_maps), NULL, 0, 0, NULL, GLOBAL},
	/* TABLE recipient, domain or .domain -> transport:nexthop (Postfix transport_maps) */
	{"transport_maps", CFG_STR, OFF(transport_maps), NULL, 0, 0, NULL, GLOBAL},
	/* TABLE address or @domain -> address rewritten as mail leaves (Postfix smtp_generic_maps) */
	{"generic_maps", CFG_STR, OFF(generic_maps), NULL, 0, 0, NULL, GLOBAL},
	/* look relay credentials up by sender first (Postfix smtp_sender_dependent_authentication) */
	{"sender_dependent_authentication", CFG_SPECIAL, 0, "no", 0, 0,
	 config_sender_dependent_auth, GLOBAL},
	/* allow sending relay credentials without TLS */
	{"relay_sasl_allow_plaintext", CFG_SPECIAL, 0, "no", 0, 0, config_relay_sasl_plaintext,
	 GLOBAL},
	/* header field naming the submitter's login, added for the relay (client copies removed) */
	{"relay_auth_header", CFG_SPECIAL, 0, NULL, 0, 0, config_relay_auth_header, GLOBAL},
	/* DKIM signing (src/dkim/, docs/dkim.md): OpenDKIM's KeyTable and SigningTable */
	{"dkim_key_table", CFG_STR, OFF(dkim_key_table), NULL, 0, 0, NULL, GLOBAL},
	{"dkim_signing_table", CFG_STR, OFF(dkim_signing_table), NULL, 0, 0, NULL, GLOBAL},
	{"dkim_headers", CFG_STR, OFF(dkim_headers), NULL, 0, 0, NULL, GLOBAL},
	{"dkim_canonicalization", CFG_STR, OFF(dkim_canonicalization), "relaxed/relaxed", 0, 0,
	 NULL, GLOBAL},
	{"dkim_signature_expiry", CFG_TIME, OFF(dkim_signature_expiry_ms), "0", 0,
	 (uint64_t)3650 * 86400000, NULL, GLOBAL},
	{"dkim_hold_memory", CFG_SIZE, OFF(dkim_hold_memory), "256k", 4096, (uint64_t)1 << 30, NULL,
	 LISTENER},
	{"dkim_temp_directory", CFG_STR, OFF(dkim_temp_directory), "/var/tmp", 0, 0, NULL, GLOBAL},
	{"syslog_facility", CFG_SPECIAL, 0, "none", 0, 0, config_syslog, GLOBAL},
	{"log_level", CFG_SPECIAL, 0, "info", 0, 0, config_log_level, GLOBAL},
	/* running it: privileges, PROXY protocol, SNI (core/privileges.c, net/proxy.c, net/tls.c) */
	{"user", CFG_STR, OFF(user), NULL, 0, 0, NULL, GLOBAL},
	{"proxy_networks", CFG_SPECIAL, 0, NULL, 0, 0, config_proxy_networks, GLOBAL},
	{"proxy_timeout", CFG_TIME, OFF(proxy_timeout_ms), "5s", 100, 600000, NULL, LISTENER},
	{"tls_sni", CFG_SPECIAL, 0, NULL, 0, 0, config_tls_sni, GLOBAL},
	/* limits and holds (policy/limits.h; README "When an account is compromised") */
	{"login_message_limit", CFG_STR, OFF(login_message_limit), "200/1h, 1000/1d", 0, 0, NULL,
	 GLOBAL},
	{"login_recipient_limit", CFG_STR, OFF(login_recipient_limit), "1000/1h, 5000/1d", 0, 0,
	 NULL, GLOBAL},
	{"domain_message_limit", CFG_STR, OFF(domain_message_limit), "5000/1h, 20000/1d", 0, 0,
	 NULL, GLOBAL},
	{"domain_recipient_limit", CFG_STR, OFF(domain_recipient_limit), "20000/1h, 100000/1d", 0,
	 0, NULL, GLOBAL},
	{"client_message_limit", CFG_STR, OFF(client_message_limit), "5000/1h, 20000/1d", 0, 0,
	 NULL, GLOBAL},
	{"client_recipient_limit", CFG_STR, OFF(client_recipient_limit), "20000/1h, 100000/1d", 0,
	 0, NULL, GLOBAL},
	{"login_limit_maps", CFG_STR, OFF(login_limit_maps), NULL, 0, 0, NULL, GLOBAL},
	{"limit_store", CFG_STR, OFF(limit_store), "memory", 0, 0, NULL, GLOBAL},
	{"limit_store_prefix", CFG_STR, OFF(limit_store_prefix), "submitd:", 0, 0, NULL, GLOBAL},
	{"limit_store_timeout", CFG_TIME, OFF(limit_store_timeout_ms), "250ms", 10, 10000, NULL,
	 GLOBAL},
	{"hold_limit_hits", CFG_STR, OFF(hold_limit_hits), "10/1h", 0, 0, NULL, GLOBAL},
	{"hold_client_addresses", CFG_STR, OFF(hold_client_addresses), "10/1h", 0, 0, NULL, GLOBAL},
	{"hold_refused_recipients", CFG_STR, OFF(hold_refused_recipients), "50%/50/1h", 0, 0, NULL,
	 GLOBAL},
	{"hold_burst", CFG_STR, OFF(hold_burst), "10x/100/10m/1d", 0, 0, NULL, GLOBAL},
	{"hold_time", CFG_TIME, OFF(hold_time_ms), "0", 0, 31536000000ULL, NULL, GLOBAL},
	{"notify_command", CFG_STR, OFF(notify_command), NULL, 0, 0, NULL, GLOBAL},
	{"notify_timeout", CFG_TIME, OFF(notify_timeout_ms), "10s", 100, 600000, NULL, GLOBAL},
	/* the message sent when a login is held (policy/hold_notice.h) */
	{"hold_notify_recipient", CFG_STR, OFF(hold_notify_recipient), NULL, 0, 0, NULL, GLOBAL},
	{"hold_notify_sender", CFG_STR, OFF(hold_notify_sender), NULL, 0, 0, NULL, GLOBAL},
	{"control_socket", CFG_STR, OFF(control_socket), NULL, 0, 0, NULL, GLOBAL},
	/* a Postfix policy daemon asked at RCPT and at the end of data (policy/policy_service.h) */
	{"check_policy_service", CFG_STR, OFF(check_policy_service), NULL, 0, 0, NULL, GLOBAL},
	{"policy_service_timeout", CFG_TIME, OFF(policy_service_timeout_ms), "10s", 100, 600000,
	 NULL, GLOBAL},
	{"policy_service_default_action", CFG_STR, OFF(policy_service_default_action), "DEFER", 0,
	 0, NULL, GLOBAL},
	/* DNS (lookup/dns.h, docs/dns.md): MX lookups for relays without
	   brackets, reject_unknown_*_domain; checked by relay_load() */
	{"dns_servers", CFG_STR, OFF(dns_servers), NULL, 0, 0, NULL, GLOBAL},
	{"dns_timeout", CFG_TIME, OFF(dns_timeout_ms), "5s", 100, 60000, NULL, GLOBAL},
	{"dns_tries", CFG_UINT, OFF(dns_tries), "2", 1, 10, NULL, GLOBAL},
	{"dns_cache_size", CFG_UINT, OFF(dns_cache_size), "1000", 0, 10000, NULL, GLOBAL},
	{"unknown_address_reject_code", CFG_UINT, OFF(unknown_address_reject_code), "450", 400, 599,
	 NULL, LISTENER},
	{"unknown_address_tempfail_action", CFG_SPECIAL, 0, "defer_if_permit", 0, 0,
	 config_unknown_tempfail, LISTENER},
	/* Postfix's codes for reject_unknown_helo_hostname and
	   reject_unknown_client_hostname, which submitd refuses by name: taken
	   so that a copied "basic spam reduction" block loads, used by nothing */
	{"unknown_hostname_reject_code", CFG_UINT, OFF(unknown_hostname_reject_code), "450", 400,
	 599, NULL, GLOBAL},
	{"unknown_client_reject_code", CFG_UINT, OFF(unknown_client_reject_code), "450", 400, 599,
	 NULL, GLOBAL},
	/* observability (docs/observability.md) */
	{"metrics_listen", CFG_STR, OFF(metrics_listen), NULL, 0, 0, NULL, GLOBAL},
	{"log_format", CFG_SPECIAL, 0, "text", 0, 0, config_log_format, GLOBAL},
};
#define CONFIG_NKEYS (sizeof(config_keys) / sizeof(config_keys[0]))

static const struct config_key *config_key_find(const char *name)
{
	for (size_t i = 0; i < CONFIG_NKEYS; i++)
		if (strcmp(config_keys[i].name, name) == 0)
			return &config_keys[i];
	return NULL;
}

static void config_free(struct config *cfg)
{
	free(cfg->relay_tls_ca_file);
	free(cfg->relay_auth_header);
	if (cfg->relay_tls_ca_creds != NULL)
		gnutls_certificate_free_credentials(cfg->relay_tls_ca_creds);
	for (size_t i = 0; i < CONFIG_NKEYS; i++)
		if (config_keys[i].type == CFG_STR)
			free(*(char **)((char *)cfg + config_keys[i].offset));
	for (size_t i = 0; i < cfg->nlistens; i++)
		config_listen_clear(&cfg->listens[i]);
	free(cfg->proxy_networks);
	free(cfg->client_limit_exceptions);
	for (size_t i = 0; i < cfg->ntls_sni; i++) {
		for (size_t j = 0; j < cfg->tls_sni[i].nnames; j++)
			free(cfg->tls_sni[i].names[j]);
		free(cfg->tls_sni[i].names);
		free(cfg->tls_sni[i].cert_file);
		free(cfg->tls_sni[i].key_file);
	}
	free(cfg->tls_sni);
	for (size_t i = 0; i < cfg->ntls_cert_files; i++)
		free(cfg->tls_cert_files[i]);
	for (size_t i = 0; i < cfg->ntls_key_files; i++)
		free(cfg->tls_key_files[i]);
	free(cfg->tls_cert_files);
	free(cfg->tls_key_files);
	free(cfg->listens);
	free(cfg->mynetworks);
	config_relay_free(cfg->relay, cfg->nrelay);
	if (cfg->tls_creds != NULL)
		gnutls_certificate_free_credentials(cfg->tls_creds);
	if (cfg->tls_prio != NULL)
		gnutls_priority_deinit(cfg->tls_prio);
	if (cfg->tls_ticket_key.data != NULL) {
		gnutls_memset(cfg->tls_ticket_key.data, 0, cfg->tls_ticket_key.size);
		gnutls_free(cfg->tls_ticket_key.data);
	}
	if (cfg->free_hook != NULL)
		cfg->free_hook(cfg);
	/* what loaders built (their per-worker instances are gone) */
	for (size_t i = cfg->nfree_hooks; i-- > 0;)
		cfg->free_hooks[i](cfg);
	free(cfg->key_lines);
	free(cfg->path);
	free(cfg->text);
	free(cfg);
}

void config_listen_clear(struct listen_cfg *l)
{
	free(l->text);
	free(l->fdname);
	for (size_t i = 0; i < l->noverrides; i++)
		free(l->overrides[i]);
	free(l->overrides);
	config_unref(&l->cfg);
	memset(l, 0, sizeof(*l));
}

static void config_listen_copy(struct listen_cfg *dst, const struct listen_cfg *src)
{
	*dst = *src;
	dst->text = xstrdup(src->text);
	dst->fdname = src->fdname ? xstrdup(src->fdname) : NULL;
	dst->overrides = src->noverrides ? xcalloc(src->noverrides, sizeof(char *)) : NULL;
	for (size_t i = 0; i < src->noverrides; i++)
		dst->overrides[i] = xstrdup(src->overrides[i]);
	dst->cfg = NULL;
}

void config_listens_copy(struct config *dst, const struct config *src)
{
	for (size_t i = 0; i < dst->nlistens; i++)
		config_listen_clear(&dst->listens[i]);
	free(dst->listens);
	dst->listens = xcalloc(src->nlistens, sizeof(*dst->listens));
	for (size_t i = 0; i < src->nlistens; i++)
		config_listen_copy(&dst->listens[i], &src->listens[i]);
	dst->nlistens = src->nlistens;
}

struct config *config_ref(struct config *cfg)
{
	atomic_fetch_add(&cfg->refs, 1);
	return cfg;
}

void config_unref(struct config **cfgp)
{
	struct config *cfg = *cfgp;
	*cfgp = NULL;
	if (cfg != NULL && atomic_fetch_sub(&cfg->refs, 1) == 1)
		config_free(cfg);
}

/* ---- value parsers ---- */

static bool config_parse_u64(const char *s, uint64_t *r)
{
	if (!isdigit((unsigned char)*s))
		return false;
	errno = 0;
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno != 0)
		return false;
	*r = v;
	return *end == '\0';
}

/* Number with a unit suffix; mult_r gets the suffix's multiplier. */
static bool config_parse_scaled(const char *s, const char *const *suffixes, const uint64_t *mults,
				uint64_t *r)
{
	char num[32];
	size_t i = 0;
	while (isdigit((unsigned char)s[i]) && i < sizeof(num) - 1) {
		num[i] = s[i];
		i++;
	}
	num[i] = '\0';
	uint64_t v;
	if (i == 0 || !config_parse_u64(num, &v))
		return false;
	for (size_t k = 0; suffixes[k] != NULL; k++) {
		if (strcasecmp(s + i, suffixes[k]) == 0) {
			if (mults[k] != 0 && v > UINT64_MAX / mults[k])
				return false;
			*r = v * mults[k];
			return true;
		}
	}
	return false;
}

static bool config_parse_size(const char *s, uint64_t *r)
{
	static const char *const sfx[] = {"", "k", "m", "g", NULL};
	static const uint64_t mult[] = {1, 1024, 1024 * 1024, 1024 * 1024 * 1024};
	return config_parse_scaled(s, sfx, mult, r);
}

bool config_cidr_parse(const char *s, struct cidr *r)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *slash = strchr(s, '/');
	size_t hl = slash ? (size_t)(slash - s) : strlen(s);
	if (hl == 0 || hl >= sizeof(host))
		return false;
	memcpy(host, s, hl);
	host[hl] = '\0';
	memset(r, 0, sizeof(*r));
	unsigned maxbits;
	if (inet_pton(AF_INET, host, r->addr) == 1) {
		r->family = AF_INET;
		maxbits = 32;
	} else if (inet_pton(AF_INET6, host, r->addr) == 1) {
		r->family = AF_INET6;
		maxbits = 128;
	} else {
		return false;
	}
	r->prefix = maxbits;
	if (slash != NULL) {
		uint64_t p;
		if (!config_parse_u64(slash + 1, &p) || p > maxbits)
			return false;
		r->prefix = (unsigned)p;
	}
	/* Host bits must be zero, as in Postfix: "10.0.0.1/8" is a mistake. */
	for (unsigned bit = r->prefix; bit < maxbits; bit++)
		if (r->addr[bit / 8] & (0x80 >> (bit % 8)))
			return false;
	return true;
}

bool config_cidr_match(const struct cidr *nets, size_t n, const struct sockaddr *sa)
{
	uint8_t a[16];
	int family;
	if (sa->sa_family == AF_INET) {
		memcpy(a, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		family = AF_INET;
	} else if (sa->sa_family == AF_INET6) {
		const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
		static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		if (memcmp(b, mapped, 12) == 0) {
			memcpy(a, b + 12, 4);
			family = AF_INET;
		} else {
			memcpy(a, b, 16);
			family = AF_INET6;
		}
	} else {
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		if (nets[i].family != family)
			continue;
		unsigned full = nets[i].prefix / 8, rest = nets[i].prefix % 8;
		if (memcmp(a, nets[i].addr, full) != 0)
			continue;
		if (rest == 0 || ((a[full] ^ nets[i].addr[full]) & (0xff00 >> rest) & 0xff) == 0)
			return true;
	}
	return false;
}

static bool config_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static bool config_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return false;
}

/* Splits a list value at commas and white space, calling fn per item. */
static bool config_each_item(const char *value, bool (*fn)(void *, const char *, char *, size_t),
			     void *arg, char *err, size_t errlen)
{
	char *copy = xstrdup(value), *save = NULL;
	bool ok = true;
	for (char *tok = strtok_r(copy, ", \t", &save); tok != NULL && ok;
	     tok = strtok_r(NULL, ", \t", &save))
		ok = fn(arg, tok, err, errlen);
	free(copy);
	return ok;
}

/* Appends one ADDRESS/PREFIX to a list of networks. */
static bool config_add_cidr(struct cidr **list, size_t *n, const char *item, char *err,
			    size_t errlen)
{
	struct cidr c;
	if (!config_cidr_parse(item, &c))
		return config_err(err, errlen, "bad network \"%s\" (want ADDRESS/PREFIX)", item);
	*list = xrealloc(*list, (*n + 1) * sizeof(c));
	(*list)[(*n)++] = c;
	return true;
}

static bool config_add_network(void *arg, const char *item, char *err, size_t errlen)
{
	struct config *cfg = arg;
	return config_add_cidr(&cfg->mynetworks, &cfg->nmynetworks, item, err, errlen);
}

static bool config_mynetworks(struct config *cfg, const char *value, char *err, size_t errlen)
{
	return config_each_item(value, config_add_network, cfg, err, errlen);
}

/* "[host]:port", "host:port", "[host]", "host", with symbolic ports. */
static bool config_parse_hostport(const char *s, char **host_r, uint16_t *port_r,
				  bool *implicit_tls_r, uint16_t default_port, char *err,
				  size_t errlen)
{
	const char *port = NULL;
	size_t hl;
	const char *h = s;
	if (*s == '[') {
		const char *close = strchr(s, ']');
		if (close == NULL)
			return config_err(err, errlen, "missing ']' in \"%s\"", s);
		h = s + 1;
		hl = (size_t)(close - h);
		if (close[1] == ':')
			port = close + 2;
		else if (close[1] != '\0')
			return config_err(err, errlen, "junk after ']' in \"%s\"", s);
	} else {
		const char *colon = strrchr(s, ':');
		/* An unbracketed IPv6 address has several colons: refuse it, as
		   Postfix wants brackets around addresses. */
		if (colon != NULL && strchr(s, ':') != colon)
			return config_err(err, errlen, "IPv6 address needs brackets: \"%s\"", s);
		hl = colon ? (size_t)(colon - s) : strlen(s);
		if (colon != NULL)
			port = colon + 1;
	}
	if (hl == 0)
		return config_err(err, errlen, "empty host in \"%s\"", s);
	uint16_t p = default_port;
	*implicit_tls_r = false;
	if (port != NULL) {
		uint64_t v;
		if (strcmp(port, "submission") == 0)
			p = 587;
		else if (strcmp(port, "submissions") == 0 || strcmp(port, "smtps") == 0)
			p = 465;
		else if (strcmp(port, "smtp") == 0)
			p = 25;
		else if (strcmp(port, "lmtp") == 0)
			p = 24;
		else if (config_parse_u64(port, &v) && v > 0 && v < 65536)
			p = (uint16_t)v;
		else
			return config_err(err, errlen, "bad port in \"%s\"", s);
	}
	*implicit_tls_r = (p == 465);
	*host_r = xstrndup(h, hl);
	*port_r = p;
	return true;
}

void config_relay_free(struct relay_dest *dests, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(dests[i].text);
		free(dests[i].unix_path);
		free(dests[i].host);
	}
	free(dests);
}

struct relay_parse {
	struct relay_dest *dests;
	size_t n;
};

static bool config_add_dest(void *arg, const char *item, char *err, size_t errlen)
{
	struct relay_parse *rp = arg;
	struct relay_dest d = {0};
	const char *rest = item;
	uint16_t default_port = 25;
	bool wrapper = false;
	if (strncmp(rest, "lmtp:", 5) == 0) {
		d.proto = RELAY_LMTP;
		rest += 5;
		default_port = 24;
		if (strncmp(rest, "unix:", 5) == 0) {
			if (rest[5] != '/')
				return config_err(err, errlen,
						  "lmtp:unix: needs an absolute path: \"%s\"",
						  item);
			d.unix_path = xstrdup(rest + 5);
		} else if (strncmp(rest, "inet:", 5) == 0) {
			rest += 5;
		}
	} else if (strncmp(rest, "smtp:", 5) == 0) {
		rest += 5;
	} else if (strncmp(rest, "smtps:", 6) == 0) {
		/* Per-destination wrapper mode (Postfix smtp_tls_wrappermode in
		   a master.cf transport): implicit TLS on any port (RFC 8314). */
		rest += 6;
		wrapper = true;
	} else if (strncmp(rest, "unix:", 5) == 0 || strncmp(rest, "inet:", 5) == 0) {
		return config_err(err, errlen, "\"%s\": say lmtp:%s or smtp:...", item, rest);
	}
	if (d.unix_path == NULL) {
		/* Without brackets an SMTP next hop is a domain: its MX hosts
		   (Postfix; docs/dns.md). LMTP and address literals connect
		   as written. */
		d.mx = rest[0] != '[' && d.proto != RELAY_LMTP;
		if (!config_parse_hostport(rest, &d.host, &d.port, &d.implicit_tls, default_port,
					   err, errlen)) {
			free(d.unix_path);
			return false;
		}
		d.implicit_tls |= wrapper;
		struct in6_addr a;
		if (d.mx &&
		    (inet_pton(AF_INET, d.host, &a) == 1 || inet_pton(AF_INET6, d.host, &a) == 1))
			d.mx = false;
	}
	d.text = xstrdup(item);
	rp->dests = xrealloc(rp->dests, (rp->n + 1) * sizeof(d));
	rp->dests[rp->n++] = d;
	return true;
}

bool config_relay_parse(const char *s, struct relay_dest **dests_r, size_t *n_r, char *err,
			size_t errlen)
{
	struct relay_parse rp = {NULL, 0};
	if (!config_each_item(s, config_add_dest, &rp, err, errlen)) {
		config_relay_free(rp.dests, rp.n);
		return false;
	}
	if (rp.n == 0)
		return config_err(err, errlen, "no destination");
	*dests_r = rp.dests;
	*n_r = rp.n;
	return true;
}

static bool config_relayhost(struct config *cfg, const char *value, char *err, size_t errlen)
{
	struct relay_dest *d = NULL;
	size_t n = 0;
	if (!config_relay_parse(value, &d, &n, err, errlen))
		return false;
	config_relay_free(cfg->relay, cfg->nrelay);
	cfg->relay = d;
	cfg->nrelay = n;
	return true;
}

static bool config_listen(struct config *cfg, const char *value, char *err, size_t errlen)
{
	char *copy = xstrdup(value), *save = NULL;
	char *addr = strtok_r(copy, " \t", &save);
	char *mode = strtok_r(NULL, " \t", &save);
	struct listen_cfg l = {0};
	bool ok = false;
	if (addr == NULL || mode == NULL) {
		config_err(
			err, errlen,
			"want \"ADDRESS:PORT MODE [trusted] [proxy] [name=NAME] [KEY=VALUE...]\"");
		goto out;
	}
	if (strcmp(mode, "starttls") == 0)
		l.mode = LISTEN_STARTTLS;
	else if (strcmp(mode, "tls") == 0)
		l.mode = LISTEN_TLS;
	else if (strcmp(mode, "plain") == 0)
		l.mode = LISTEN_PLAIN;
	else {
		config_err(err, errlen, "unknown listener mode \"%s\" (starttls, tls or plain)",
			   mode);
		goto out;
	}
	for (char *flag; (flag = strtok_r(NULL, " \t", &save)) != NULL;) {
		if (strcmp(flag, "trusted") == 0)
			l.trusted = true;
		else if (strcmp(flag, "proxy") == 0)
			l.proxy = true;
		else if (strncmp(flag, "name=", 5) == 0 && flag[5] != '\0' && l.fdname == NULL)
			l.fdname = xstrdup(flag + 5);
		else if (strchr(flag, '=') != NULL) {
			/* A setting for this listener only; its value is checked
			   when the listener's snapshot is built. */
			char *eq = strchr(flag, '=');
			*eq = '\0';
			const struct config_key *k = config_key_find(flag);
			bool usable = k != NULL && k->per_listener;
			if (!usable)
				config_err(err, errlen, "%s \"%s\" cannot be set for one listener",
					   k ? "the setting" : "unknown setting", flag);
			*eq = '=';
			if (!usable)
				goto out;
			l.sender_policy_set |= strcmp(k->name, "sender_login_policy") == 0;
			l.overrides = xrealloc(l.overrides, (l.noverrides + 1) * sizeof(char *));
			l.overrides[l.noverrides++] = xstrdup(flag);
		} else {
			config_err(err, errlen, "unknown listener flag \"%s\"", flag);
			goto out;
		}
	}
	char *host;
	uint16_t port;
	bool implicit;
	if (!config_parse_hostport(addr, &host, &port, &implicit, 0, err, errlen))
		goto out;
	if (port == 0) {
		free(host);
		config_err(err, errlen, "listener \"%s\" needs a port", addr);
		goto out;
	}
	struct sockaddr_in *sin = (struct sockaddr_in *)&l.addr;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&l.addr;
	if (strcmp(host, "*") == 0 || inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		if (strcmp(host, "*") == 0)
			sin->sin_addr.s_addr = htonl(INADDR_ANY);
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		l.addr_len = sizeof(*sin);
	} else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		l.addr_len = sizeof(*sin6);
	} else {
		config_err(err, errlen, "listener address \"%s\" is not an IP address", host);
		free(host);
		goto out;
	}
	free(host);
	l.text = xstrdup(addr);
	cfg->listens = xrealloc(cfg->listens, (cfg->nlistens + 1) * sizeof(l));
	cfg->listens[cfg->nlistens++] = l;
	ok = true;
out:
	if (!ok)
		config_listen_clear(&l);
	free(copy);
	return ok;
}

static bool config_bare_newline(struct config *cfg, const char *value, char *err, size_t errlen)
{
	if (strcmp(value, "reject") == 0)
		cfg->bare_newline = BARE_NEWLINE_REJECT;
	else if (strcmp(value, "normalize") == 0)
		cfg->bare_newline = BARE_NEWLINE_NORMALIZE;
	else
		return config_err(err, errlen, "want reject or normalize");
	return true;
}

static bool config_relay_tls(struct config *cfg, const char *value, char *err, size_t errlen)
{
	/* Postfix smtp_tls_security_level names (docs/design.md §7). */
	static const struct {
		const char *name;
		enum relay_tls_level level;
	} levels[] = {{"none", RELAY_TLS_NONE},
		      {"may", RELAY_TLS_MAY},
		      {"encrypt", RELAY_TLS_ENCRYPT},
		      {"verify", RELAY_TLS_VERIFY},
		      {"secure", RELAY_TLS_SECURE}};
	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
		if (strcmp(value, levels[i].name) == 0) {
			cfg->relay_tls = levels[i].level;
			return true;
		}
	}
	return config_err(err, errlen, "want none, may, encrypt, verify or secure%s",
			  strncmp(value, "dane", 4) == 0 || strcmp(value, "fingerprint") == 0
				  ? " (DANE and fingerprint are not supported)"
				  : "");
}

/* ---- smarthost (src/relay/relay_route.c, relay_conn.c) ---- */

static bool config_yesno(const char *value, bool *r, char *err, size_t errlen)
{
	if (strcmp(value, "yes") == 0)
		*r = true;
	else if (strcmp(value, "no") == 0)
		*r = false;
	else
		return config_err(err, errlen, "want yes or no");
	return true;
}

/* Postfix's disable_vrfy_command: VRFY gets 502 5.5.1 */
static bool config_disable_vrfy(struct config *cfg, const char *value, char *err, size_t errlen)
{
	return config_yesno(value, &cfg->disable_vrfy, err, errlen);
}

static bool config_always_on(struct config *cfg, const char *value, char *err, size_t errlen)
{
	(void)cfg;
	bool on;
	if (!config_yesno(value, &on, err, errlen))
		return false;
	if (!on)
		return config_err(err, errlen,
				  "always on in submitd: a client must send HELO/EHLO first, and "
				  "MAIL FROM/RCPT TO need <> (RFC 5321 §4.1.1, RFC 6409 §4.2)");
	return true;
}

/* Postfix's two values; a DNS failure in reject_unknown_*_domain answers
 * 450 at once (defer) or only when the rest of the list permits. */
static bool config_unknown_tempfail(struct config *cfg, const char *value, char *err, size_t errlen)
{
	if (strcmp(value, "defer_if_permit") == 0 || strcmp(value, "defer") == 0) {
		cfg->unknown_address_tempfail_defer = strcmp(value, "defer") == 0;
		return true;
	}
	return config_err(err, errlen,
			  "unknown_address_tempfail_action: \"%s\" (defer_if_permit or defer)",
			  value);
}

static bool config_sender_dependent_auth(struct config *cfg, const char *value, char *err,
					 size_t errlen)
{
	return config_yesno(value, &cfg->sender_dependent_authentication, err, errlen);
}

static bool config_relay_sasl_plaintext(struct config *cfg, const char *value, char *err,
					size_t errlen)
{
	return config_yesno(value, &cfg->relay_sasl_allow_plaintext, err, errlen);
}

static bool config_relay_pipelining(struct config *cfg, const char *value, char *err, size_t errlen)
{
	return config_yesno(value, &cfg->relay_pipelining, err, errlen);
}

/* Postfix smtp_tls_CAfile without tls_append_default_CA: when set, only
 * these CAs are trusted for the relay. */
static bool config_relay_ca_file(struct config *cfg, const char *value, char *err, size_t errlen)
{
	gnutls_certificate_credentials_t c;
	if (gnutls_certificate_allocate_credentials(&c) < 0)
		return config_err(err, errlen, "out of memory");
	int n = gnutls_certificate_set_x509_trust_file(c, value, GNUTLS_X509_FMT_PEM);
	if (n <= 0) {
		gnutls_certificate_free_credentials(c);
		return config_err(err, errlen, "no CA certificate loaded from %s%s%s", value,
				  n < 0 ? ": " : "", n < 0 ? gnutls_strerror(n) : "");
	}
	if (cfg->relay_tls_ca_creds != NULL)
		gnutls_certificate_free_credentials(cfg->relay_tls_ca_creds);
	cfg->relay_tls_ca_creds = c;
	free(cfg->relay_tls_ca_file);
	cfg->relay_tls_ca_file = xstrdup(value);
	return true;
}

/* A field name (RFC 5322 §3.6.8 ftext), short enough to match in a stream. */
static bool config_relay_auth_header(struct config *cfg, const char *value, char *err,
				     size_t errlen)
{
	size_t n = strlen(value);
	if (n == 0 || n > 64)
		return config_err(err, errlen, "want a header field name of 1 to 64 characters");
	for (size_t i = 0; i < n; i++)
		if (value[i] < 33 || value[i] > 126 || value[i] == ':')
			return config_err(err, errlen, "\"%s\" is not a header field name", value);
	free(cfg->relay_auth_header);
	cfg->relay_auth_header = xstrdup(value);
	return true;
}

static bool config_syslog(struct config *cfg, const char *value, char *err, size_t errlen)
{
	static const struct {
		const char *name;
		int facility;
	} f[] = {{"none", -1},           {"mail", LOG_MAIL},     {"daemon", LOG_DAEMON},
		 {"local0", LOG_LOCAL0}, {"local1", LOG_LOCAL1}, {"local2", LOG_LOCAL2},
		 {"local3", LOG_LOCAL3}, {"local4", LOG_LOCAL4}, {"local5", LOG_LOCAL5},
		 {"local6", LOG_LOCAL6}, {"local7", LOG_LOCAL7}};
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		if (strcmp(value, f[i].name) == 0) {
			cfg->syslog_facility = f[i].facility;
			return true;
		}
	}
	return config_err(err, errlen,
			  "unknown syslog facility \"%s\" (none, mail, daemon, local0-7)", value);
}

static bool config_log_format(struct config *cfg, const char *value, char *err, size_t errlen)
{
	if (strcmp(value, "text") != 0 && strcmp(value, "json") != 0)
		return config_err(err, errlen, "want text or json");
	cfg->log_json = strcmp(value, "json") == 0;
	return true;
}

static bool config_log_level(struct config *cfg, const char *value, char *err, size_t errlen)
{
	if (strcmp(value, "debug") == 0)
		cfg->log_level = LOG_DEBUG;
	else if (strcmp(value, "info") == 0)
		cfg->log_level = LOG_INFO;
	else if (strcmp(value, "warning") == 0)
		cfg->log_level = LOG_WARNING;
	else if (strcmp(value, "error") == 0)
		cfg->log_level = LOG_ERR;
	else
		return config_err(err, errlen, "want debug, info, warning or error");
	return true;
}

static bool config_add_proxy_network(void *arg, const char *item, char *err, size_t errlen)
{
	struct config *cfg = arg;
	return config_add_cidr(&cfg->proxy_networks, &cfg->nproxy_networks, item, err, errlen);
}

static bool config_proxy_networks(struct config *cfg, const char *value, char *err, size_t errlen)
{
	return config_each_item(value, config_add_proxy_network, cfg, err, errlen);
}

static bool config_add_limit_exception(void *arg, const char *item, char *err, size_t errlen)
{
	struct config *cfg = arg;
	struct cidr c;
	if (strcmp(item, "$mynetworks") == 0) {
		cfg->client_limit_exceptions_mynetworks = true;
		return true;
	}
	if (!config_cidr_parse(item, &c))
		return config_err(err, errlen,
				  "bad network \"%s\" (want ADDRESS/PREFIX or $mynetworks)", item);
	cfg->client_limit_exceptions = xrealloc(cfg->client_limit_exceptions,
						(cfg->nclient_limit_exceptions + 1) * sizeof(c));
	cfg->client_limit_exceptions[cfg->nclient_limit_exceptions++] = c;
	return true;
}

static bool config_client_limit_exceptions(struct config *cfg, const char *value, char *err,
					   size_t errlen)
{
	return config_each_item(value, config_add_limit_exception, cfg, err, errlen);
}

bool config_limit_exempt(const struct config *cfg, const struct sockaddr *sa)
{
	if (cfg->client_limit_exceptions_mynetworks &&
	    config_cidr_match(cfg->mynetworks, cfg->nmynetworks, sa))
		return true;
	return config_cidr_match(cfg->client_limit_exceptions, cfg->nclient_limit_exceptions, sa);
}

/* tls_sni = NAME[,NAME...] CERTFILE KEYFILE (repeatable). Names are host
 * names as clients send them in SNI; matched exactly, case-insensitively. */
static bool config_tls_sni(struct config *cfg, const char *value, char *err, size_t errlen)
{
	char *copy = xstrdup(value), *save = NULL;
	char *names = strtok_r(copy, " \t", &save);
	char *cert = strtok_r(NULL, " \t", &save);
	char *key = strtok_r(NULL, " \t", &save);
	struct tls_sni e = {0};
	bool ok = false;
	if (names == NULL || cert == NULL || key == NULL || strtok_r(NULL, " \t", &save) != NULL) {
		config_err(err, errlen, "want \"NAME[,NAME...] CERTFILE KEYFILE\"");
		goto out;
	}
	char *nsave = NULL;
	for (char *n = strtok_r(names, ",", &nsave); n != NULL; n = strtok_r(NULL, ",", &nsave)) {
		size_t len = strlen(n);
		bool good = len > 0 && len <= 253 && n[0] != '.' && n[len - 1] != '.';
		for (size_t i = 0; good && i < len; i++)
			good = isalnum((unsigned char)n[i]) || n[i] == '-' || n[i] == '.';
		if (!good) {
			config_err(err, errlen, "\"%s\" is not a host name", n);
			goto out;
		}
		e.names = xrealloc(e.names, (e.nnames + 1) * sizeof(*e.names));
		e.names[e.nnames] = xstrdup(n);
		for (char *p = e.names[e.nnames]; *p != '\0'; p++)
			*p = (char)tolower((unsigned char)*p);
		e.nnames++;
	}
	if (e.nnames == 0) {
		config_err(err, errlen, "no name");
		goto out;
	}
	e.cert_file = xstrdup(cert);
	e.key_file = xstrdup(key);
	cfg->tls_sni = xrealloc(cfg->tls_sni, (cfg->ntls_sni + 1) * sizeof(e));
	cfg->tls_sni[cfg->ntls_sni++] = e;
	ok = true;
out:
	if (!ok) {
		for (size_t i = 0; i < e.nnames; i++)
			free(e.names[i]);
		free(e.names);
	}
	free(copy);
	return ok;
}

/* tls_cert_file and tls_key_file repeat (one pair per key type); the
 * first of each also stays in tls_cert_file/tls_key_file. */
static bool config_tls_file_add(char ***list, size_t *n, char **first, const char *value, char *err,
				size_t errlen)
{
	if (*value == '\0')
		return config_err(err, errlen, "empty file name");
	*list = xrealloc(*list, (*n + 1) * sizeof(**list));
	(*list)[(*n)++] = xstrdup(value);
	*first = (*list)[0];
	return true;
}

static bool config_tls_cert_file(struct config *cfg, const char *value, char *err, size_t errlen)
{
	return config_tls_file_add(&cfg->tls_cert_files, &cfg->ntls_cert_files, &cfg->tls_cert_file,
				   value, err, errlen);
}

static bool config_tls_key_file(struct config *cfg, const char *value, char *err, size_t errlen)
{
	return config_tls_file_add(&cfg->tls_key_files, &cfg->ntls_key_files, &cfg->tls_key_file,
				   value, err, errlen);
}

static bool config_set(struct config *cfg, const struct config_key *k, const char *value, char *err,
		       size_t errlen)
{
	void *field = (char *)cfg + k->offset;
	uint64_t v = 0;
	switch (k->type) {
	case CFG_STR:
		free(*(char **)field);
		*(char **)field = xstrdup(value);
		return true;
	case CFG_UINT:
		if (!config_parse_u64(value, &v))
			return config_err(err, errlen, "%s: \"%s\" is not a number", k->name,
					  value);
		break;
	case CFG_SIZE:
		if (!config_parse_size(value, &v))
			return config_err(err, errlen,
					  "%s: \"%s\" is not a size (e.g. 10240000, 10m)", k->name,
					  value);
		break;
	case CFG_TIME:
		if (!duration_parse(value, &v))
			return config_err(err, errlen,
					  "%s: \"%s\" is not a time (e.g. 300s, 5m, 500ms)",
					  k->name, value);
		break;
	case CFG_SPECIAL:
		if (!k->hook(cfg, value, err, errlen)) {
			char tmp[512];
			snprintf(tmp, sizeof(tmp), "%s: %s", k->name, err);
			snprintf(err, errlen, "%s", tmp);
			return false;
		}
		return true;
	}
	if (v < k->min || v > k->max)
		return config_err(err, errlen, "%s: %s is out of range (%llu..%llu)", k->name,
				  value, (unsigned long long)k->min, (unsigned long long)k->max);
	if (k->type == CFG_UINT)
		*(unsigned *)field = (unsigned)v;
	else
		*(uint64_t *)field = v;
	return true;
}

/* The file is read once: per-listener snapshots parse the same text. */
#define CONFIG_MAX_FILE (4 << 20)

static char *config_read_file(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	struct buf b = BUF_INIT;
	char chunk[8192];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0 && buf_len(&b) <= CONFIG_MAX_FILE)
		buf_append(&b, chunk, n);
	bool nul = memchr(buf_data(&b), '\0', buf_len(&b)) != NULL;
	bool bad = ferror(f) != 0 || buf_len(&b) > CONFIG_MAX_FILE || nul;
	fclose(f);
	if (bad) {
		/* A NUL would end the text early: the lines after it would
		   silently not apply. */
		snprintf(err, errlen, "%s: %s", path,
			 nul                             ? "NUL byte in the file"
			 : buf_len(&b) > CONFIG_MAX_FILE ? "file too large"
							 : "read error");
		buf_free(&b);
		return NULL;
	}
	buf_append(&b, "", 1);
	char *text = xstrdup((const char *)buf_data(&b));
	buf_free(&b);
	return text;
}

/* Applies one "KEY=VALUE" listener setting. A list key (mynetworks,
 * client_limit_exceptions) is replaced, not extended, as Postfix's -o
 * replaces a main.cf value. */
static bool config_apply_override(struct config *cfg, const char *kv, bool *seen, char *err,
				  size_t errlen)
{
	char *copy = xstrdup(kv);
	char *eq = strchr(copy, '=');
	*eq = '\0';
	const struct config_key *k = config_key_find(copy);
	if (k == NULL) {
		free(copy);
		return config_err(err, errlen, "unknown setting \"%s\"", kv);
	}
	seen[k - config_keys] = true;
	if (strcmp(k->name, "mynetworks") == 0) {
		free(cfg->mynetworks);
		cfg->mynetworks = NULL;
		cfg->nmynetworks = 0;
	} else if (strcmp(k->name, "client_limit_exceptions") == 0) {
		free(cfg->client_limit_exceptions);
		cfg->client_limit_exceptions = NULL;
		cfg->nclient_limit_exceptions = 0;
		cfg->client_limit_exceptions_mynetworks = false;
	}
	bool ok = config_set(cfg, k, eq + 1, err, errlen);
	free(copy);
	return ok;
}

static struct config *config_parse(const char *path, const char *text, char *const *overrides,
				   size_t noverrides, char *err, size_t errlen);

struct config *config_load(const char *path, char *err, size_t errlen)
{
	char *text = config_read_file(path, err, errlen);
	if (text == NULL)
		return NULL;
	struct config *cfg = config_parse(path, text, NULL, 0, err, errlen);
	if (cfg != NULL)
		cfg->text = text;
	else
		free(text);
	return cfg;
}

bool config_listeners_load(struct config *cfg, char *err, size_t errlen)
{
	for (size_t i = 0; i < cfg->nlistens; i++) {
		struct listen_cfg *l = &cfg->listens[i];
		config_unref(&l->cfg);
		if (l->noverrides == 0)
			continue;
		char why[768];
		struct config *child = config_parse(cfg->path, cfg->text, l->overrides,
						    l->noverrides, why, sizeof(why));
		if (child == NULL) {
			snprintf(err, errlen, "listen %s: %s", l->text, why);
			return false;
		}
		/* The parent's listeners are the ones that run. */
		config_listens_copy(child, cfg);
		l->cfg = child;
	}
	return true;
}

struct config *config_for_listener(struct config *cfg, size_t idx)
{
	return cfg->listens[idx].cfg != NULL ? cfg->listens[idx].cfg : cfg;
}

bool config_is_part_of(const struct config *snap, const struct config *c)
{
	if (c == snap)
		return true;
	for (size_t i = 0; snap != NULL && i < snap->nlistens; i++)
		if (snap->listens[i].cfg == c)
			return true;
	return false;
}

static struct config *config_parse(const char *path, const char *text, char *const *overrides,
				   size_t noverrides, char *err, size_t errlen)
{
	FILE *f = fmemopen((void *)text, strlen(text), "r");
	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	struct config *cfg = xcalloc(1, sizeof(*cfg));
	atomic_init(&cfg->refs, 1);
	cfg->path = xstrdup(path);
	cfg->key_lines = xcalloc(CONFIG_NKEYS, sizeof(*cfg->key_lines));
	bool seen[CONFIG_NKEYS] = {false};
	struct config_file_reader rd;
	config_file_start(&rd, f, path);
	char held[CONFIG_LINE_MAX], why[512];
	unsigned at;
	bool ok = true;

	while (ok && config_file_next(&rd, held, sizeof(held), &at, err, errlen, &ok)) {
		char *s = held;
		char *eq = strchr(s, '=');
		if (eq == NULL) {
			snprintf(err, errlen, "%s:%u: expected \"key = value\"", path, at);
			ok = false;
			break;
		}
		*eq = '\0';
		char *key = config_file_trim(s), *value = config_file_trim(eq + 1);
		size_t i;
		for (i = 0; i < CONFIG_NKEYS; i++)
			if (strcmp(config_keys[i].name, key) == 0)
				break;
		if (i == CONFIG_NKEYS) {
			snprintf(err, errlen, "%s:%u: unknown key \"%s\"", path, at, key);
			ok = false;
			break;
		}
		seen[i] = true;
		cfg->key_lines[i] = at;
		if (!config_set(cfg, &config_keys[i], value, why, sizeof(why))) {
			snprintf(err, errlen, "%s:%u: %s", path, at, why);
			ok = false;
		}
	}
	fclose(f);

	for (size_t i = 0; ok && i < noverrides; i++) {
		ok = config_apply_override(cfg, overrides[i], seen, why, sizeof(why));
		if (!ok)
			snprintf(err, errlen, "%s", why);
	}
	for (size_t i = 0; ok && i < CONFIG_NKEYS; i++) {
		if (seen[i] || config_keys[i].def == NULL)
			continue;
		if (!config_set(cfg, &config_keys[i], config_keys[i].def, why, sizeof(why))) {
			snprintf(err, errlen, "%s: default of %s: %s", path, config_keys[i].name,
				 why);
			ok = false;
		}
	}
	if (ok && cfg->myhostname == NULL) {
		char host[256];
		if (gethostname(host, sizeof(host)) != 0)
			snprintf(host, sizeof(host), "localhost");
		host[sizeof(host) - 1] = '\0';
		cfg->myhostname = xstrdup(host);
	}
	if (ok && cfg->dovecot_auth_socket != NULL && cfg->saslauthd_socket != NULL) {
		snprintf(err, errlen,
			 "%s: dovecot_auth_socket and saslauthd_socket: set one of them", path);
		ok = false;
	}
	if (ok && cfg->nlistens == 0) {
		snprintf(err, errlen, "%s: no \"listen\" line", path);
		ok = false;
	}
	bool need_tls = false;
	for (size_t i = 0; ok && i < cfg->nlistens; i++)
		need_tls |= cfg->listens[i].mode != LISTEN_PLAIN;
	if (ok && need_tls && (cfg->tls_cert_file == NULL || cfg->tls_key_file == NULL)) {
		snprintf(err, errlen,
			 "%s: tls_cert_file and tls_key_file are needed by the "
			 "starttls/tls listeners",
			 path);
		ok = false;
	}
	if (ok && cfg->workers == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		cfg->workers = n > 0 ? (unsigned)n : 1;
	}
	if (!ok) {
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

void config_on_free(struct config *cfg, void (*fn)(struct config *cfg))
{
	for (size_t i = 0; i < cfg->nfree_hooks; i++)
		if (cfg->free_hooks[i] == fn)
			return;
	if (cfg->nfree_hooks == CONFIG_MAX_FREE_HOOKS)
		abort(); /* a programming error: raise CONFIG_MAX_FREE_HOOKS */
	cfg->free_hooks[cfg->nfree_hooks++] = fn;
}

const char *config_key_origin(const struct config *cfg, const char *key, char *buf, size_t len)
{
	unsigned line = 0;
	for (size_t i = 0; i < CONFIG_NKEYS; i++)
		if (strcmp(config_keys[i].name, key) == 0 && cfg->key_lines != NULL)
			line = cfg->key_lines[i];
	if (line != 0)
		snprintf(buf, len, "%s:%u", cfg->path, line);
	else
		snprintf(buf, len, "%s", cfg->path);
	return buf;
}
