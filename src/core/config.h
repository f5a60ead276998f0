/* config: the configuration file, parsed into an immutable snapshot.
 *
 * Format (docs/design.md §8): "key = value" lines, '#' comments, keys that take
 * lists may repeat. Every key is a row in one table (name, type, default,
 * bounds); unknown keys and bad values are errors naming file and line.
 *
 * A snapshot is shared read-only by all workers and reference counted:
 * reload builds a new one; sessions keep the one they started with. */
#ifndef SUBMITD_CONFIG_H
#define SUBMITD_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <gnutls/gnutls.h>

struct sender_login_conf;
struct limits_conf;
struct policy_service_conf;
struct table;
struct dkim_conf;

enum listen_mode { LISTEN_PLAIN, LISTEN_STARTTLS, LISTEN_TLS };

struct listen_cfg {
	char *text; /* as written, for logs: "127.0.0.1:587" */
	struct sockaddr_storage addr;
	socklen_t addr_len;
	enum listen_mode mode;
	bool trusted; /* mynetworks clients may send without AUTH */
	bool proxy;   /* a PROXY v1/v2 header comes first (proxy_networks) */
	char *fdname; /* name=X: take the systemd socket named X, or NULL */
	/* KEY=VALUE settings on the listen line (Postfix's master.cf "-o"),
	 * as written; they apply to sessions on this listener only. */
	char **overrides;
	size_t noverrides;
	bool sender_policy_set; /* one of them is sender_login_policy */
	/* The snapshot with the overrides applied (config_listeners_load()),
	 * owned by the parent; NULL: sessions use the parent itself. Its
	 * listens[] mirror the parent's, without children. */
	struct config *cfg;
};

struct cidr {
	int family; /* AF_INET or AF_INET6 */
	uint8_t addr[16];
	unsigned prefix;
};

/* tls_sni = NAME[,NAME...] CERTFILE KEYFILE: a certificate for clients
 * asking for one of the names (exact, case-insensitive, lowercased here). */
struct tls_sni {
	char **names;
	size_t nnames;
	char *cert_file;
	char *key_file;
};

enum relay_proto { RELAY_SMTP, RELAY_LMTP };

/* One downstream destination in Postfix syntax (docs/design.md §7). */
struct relay_dest {
	char *text; /* exactly as written: "[127.0.0.1]:10025" */
	enum relay_proto proto;
	char *unix_path; /* lmtp:unix:/path, else NULL */
	char *host;      /* host name or address literal, no brackets */
	uint16_t port;
	bool implicit_tls; /* :submissions / :465 */
	/* Written without brackets: host is a mail domain whose MX hosts (or,
	   without MX, its own address) are the next hops (docs/dns.md). */
	bool mx;
};

enum bare_newline_mode { BARE_NEWLINE_REJECT, BARE_NEWLINE_NORMALIZE };
/* Postfix smtp_tls_security_level (docs/design.md §7), weakest first:
 * the code compares levels with >=. */
enum relay_tls_level {
	RELAY_TLS_NONE,
	RELAY_TLS_MAY,     /* STARTTLS when offered, certificate not checked */
	RELAY_TLS_ENCRYPT, /* TLS mandatory, certificate not checked */
	RELAY_TLS_VERIFY,  /* TLS mandatory, chain and relay name verified */
	RELAY_TLS_SECURE,  /* as verify: with [host] the name is the next hop */
};

struct config {
	atomic_int refs;
	char *path;
	char *text; /* the file as read, to build per-listener snapshots */

	char *myhostname;
	struct listen_cfg *listens;
	size_t nlistens;
	/* tls_cert_file/tls_key_file may repeat: pair i is (tls_cert_files[i],
	 * tls_key_files[i]); the two below are the first of each (not owned). */
	char *tls_cert_file;
	char *tls_key_file;
	char **tls_cert_files, **tls_key_files;
	size_t ntls_cert_files, ntls_key_files;
	char *tls_priority;
	struct cidr *mynetworks;
	size_t nmynetworks;
	struct relay_dest *relay;
	size_t nrelay;
	enum relay_tls_level relay_tls;

	/* AUTH (policy/auth.h) */
	char *dovecot_auth_socket;
	char *saslauthd_socket; /* instead of dovecot_auth_socket */
	char *saslauthd_service;
	char *saslauthd_realm;
	uint64_t auth_timeout_ms;
	uint64_t auth_failure_delay_ms;
	uint64_t auth_failure_delay_max_ms;
	unsigned auth_max_failures;
	unsigned auth_ip_failure_limit;
	uint64_t auth_ip_failure_window_ms;
	uint64_t auth_ip_block_time_ms;

	/* Postfix restriction lists (policy/restrictions.h), parsed by policy_load() */
	char *sender_restrictions;
	char *recipient_restrictions;
	struct restrictions *sender_restr;
	struct restrictions *recipient_restr;
	bool sender_restr_default; /* not set: the plain listeners skip it */
	bool recipient_restr_default;
	bool disable_vrfy;

	/* sender ownership (policy/policy.h) */
	char *sender_login_maps;
	char *sender_login_policy;
	char *recipient_delimiter;
	uint64_t sender_login_cache_ttl_ms;
	uint64_t sender_login_negative_cache_ttl_ms;
	char *header_from_policy;
	char *header_from_exempt_maps;
	/* Built from the above by policy_load(); freed through free_hook. */
	struct sender_login_conf *sender_login;
	struct table *header_from_exempt;
	int header_from_mode; /* enum policy_header_mode */
	void (*free_hook)(struct config *cfg);
	/* More of them, for other loaders (config_on_free()), run last first. */
#define CONFIG_MAX_FREE_HOOKS 8
	void (*free_hooks[CONFIG_MAX_FREE_HOOKS])(struct config *cfg);
	size_t nfree_hooks;
	unsigned *key_lines; /* per key: the line that set it, 0: none */

	uint64_t message_size_limit;
	uint64_t header_size_limit;
	unsigned line_length_limit;
	unsigned recipient_limit;
	unsigned error_limit;
	unsigned workers;
	unsigned max_connections;
	unsigned max_connections_per_ip;
	/* Exempt from the per-address limits (config_limit_exempt()). */
	struct cidr *client_limit_exceptions;
	size_t nclient_limit_exceptions;
	bool client_limit_exceptions_mynetworks; /* "$mynetworks" was listed */
	unsigned ipv6_client_prefix;
	enum bare_newline_mode bare_newline;

	uint64_t command_timeout_ms;
	uint64_t data_timeout_ms;
	uint64_t session_timeout_ms;
	uint64_t relay_connect_timeout_ms;
	uint64_t relay_timeout_ms;
	uint64_t relay_idle_timeout_ms;
	uint64_t relay_data_timeout_ms; /* from the 354 to the reply to the dot */
	unsigned relay_reuse_limit;
	/* smarthost: TLS policy, client SASL, per-sender routes (relay/relay.h) */
	char *relay_tls_ca_file;                             /* NULL: the system trust store */
	gnutls_certificate_credentials_t relay_tls_ca_creds; /* from relay_tls_ca_file */
	char *relay_password_maps;                           /* NULL: never AUTH to the relay */
	char *sender_relay_maps;                             /* NULL: relayhost for everyone */
	char *transport_maps; /* NULL: every recipient takes the sender's route */
	/* Opened from the maps above by relay_load() (relay/relay.h). */
	struct table *relay_password_table;
	struct table *sender_relay_table;
	struct table *transport_table;
	char *generic_maps;          /* NULL: addresses leave as they came (docs/generic.md) */
	struct table *generic_table; /* opened by relay_generic_load() */
	char *relay_auth_header;     /* e.g. "X-AuthUser", NULL: none */
	bool sender_dependent_authentication;
	bool relay_sasl_allow_plaintext;
	bool relay_pipelining; /* docs/pipelining.md */

	/* Loaded by tls_server_load(), freed with the snapshot. */
	gnutls_certificate_credentials_t tls_creds;
	gnutls_priority_t tls_prio;
	gnutls_datum_t tls_ticket_key; /* session tickets; new with every snapshot */

	/* DKIM signing (src/dkim/, docs/dkim.md) */
	char *dkim_key_table;     /* [file:]PATH, OpenDKIM's KeyTable */
	char *dkim_signing_table; /* [file:|refile:]PATH, its SigningTable */
	char *dkim_headers;       /* NULL: dkim_conf_default_headers */
	char *dkim_canonicalization;
	uint64_t dkim_signature_expiry_ms; /* 0: no x= */
	uint64_t dkim_hold_memory;         /* per message held, beyond: a temporary file */
	char *dkim_temp_directory;
	struct dkim_conf *dkim; /* built by policy_load(); NULL: no signing */

	int syslog_facility; /* -1: log to stderr */
	int log_level;       /* LOG_INFO, LOG_DEBUG, ... */

	/* docs/observability.md */
	bool log_json;        /* log_format = json (core/log.h) */
	char *metrics_listen; /* NULL: no metrics endpoint (metrics_http.h) */

	/* Limits, holds and the control socket (policy/limits.h, docs/limits.md) */
	char *login_message_limit;
	char *login_recipient_limit;
	char *domain_message_limit;
	char *domain_recipient_limit;
	char *client_message_limit;
	char *client_recipient_limit;
	char *login_limit_maps;
	char *limit_store;
	char *limit_store_prefix;        /* redis: every key starts with it */
	uint64_t limit_store_timeout_ms; /* redis: per call */
	char *hold_limit_hits;
	char *hold_client_addresses;
	char *hold_refused_recipients;
	char *hold_burst;
	uint64_t hold_time_ms; /* 0: until released */
	char *notify_command;
	uint64_t notify_timeout_ms;
	char *hold_notify_recipient; /* policy/hold_notice.h */
	char *hold_notify_sender;
	char *control_socket;
	struct limits_conf *limits; /* parsed by limits_conf_load() */
	/* Postfix's policy delegation (policy/policy_service.h) */
	char *check_policy_service;
	uint64_t policy_service_timeout_ms;
	char *policy_service_default_action;
	struct policy_service_conf *policy_service; /* policy_service_conf_load() */
	/* DNS (lookup/dns.h) */
	char *dns_servers; /* "HOST[:PORT] ...", NULL: /etc/resolv.conf */
	uint64_t dns_timeout_ms;
	unsigned dns_tries;
	unsigned dns_cache_size;
	unsigned unknown_address_reject_code;  /* reject_unknown_*_domain */
	bool unknown_address_tempfail_defer;   /* "defer": else defer_if_permit */
	unsigned unknown_hostname_reject_code; /* accepted, unused (config.c) */
	unsigned unknown_client_reject_code;   /* accepted, unused (config.c) */

	/* Running it (core/privileges.c, net/proxy.h, net/tls.c) */
	char *user;                  /* drop to this user after binding; NULL: keep */
	struct cidr *proxy_networks; /* who may send a PROXY header */
	size_t nproxy_networks;
	uint64_t proxy_timeout_ms; /* to receive the whole PROXY header */
	struct tls_sni *tls_sni;   /* extra certificates chosen by SNI */
	size_t ntls_sni;
};

/* Parses path. On error returns NULL and writes "FILE:LINE: what" to err.
 * Per-listener snapshots are not built yet: see config_listeners_load(). */
struct config *config_load(const char *path, char *err, size_t errlen);
/* Builds the snapshot of every listener that has KEY=VALUE overrides: the
 * same file with the overrides applied last. Call it once the parent's
 * listens[] are final (a reload may keep the running ones). On error
 * returns false with "listen ADDR: what" in err. */
bool config_listeners_load(struct config *cfg, char *err, size_t errlen);
/* The snapshot a session on listener idx uses. */
struct config *config_for_listener(struct config *cfg, size_t idx);
/* True when c is snap or one of snap's per-listener snapshots: what a
 * worker must keep open while snap is its current configuration. */
bool config_is_part_of(const struct config *snap, const struct config *c);
/* dst's listen lines become deep copies of src's (overrides included, no
 * child snapshot); the ones dst had are freed. */
void config_listens_copy(struct config *dst, const struct config *src);
void config_listen_clear(struct listen_cfg *l);
struct config *config_ref(struct config *cfg);
/* Loaders (policy_load(), relay_load()) build objects from a snapshot's
 * values after parsing; fn frees them with the snapshot. Once per fn. */
void config_on_free(struct config *cfg, void (*fn)(struct config *cfg));
/* "FILE:LINE" of the line that set key (just "FILE" for a default), for a
 * loader's error messages to read like the parser's. Returns buf. */
const char *config_key_origin(const struct config *cfg, const char *key, char *buf, size_t len);
void config_unref(struct config **cfg);

/* True when addr (AF_INET/AF_INET6 sockaddr) is inside one of the networks.
 * An IPv4-mapped IPv6 address is matched as IPv4. */
bool config_cidr_match(const struct cidr *nets, size_t n, const struct sockaddr *addr);
/* True when the client at addr is exempt from the per-address limits
 * (max_connections_per_ip, the AUTH failure budget): client_limit_exceptions. */
bool config_limit_exempt(const struct config *cfg, const struct sockaddr *addr);
/* Parses "a.b.c.d/n" or "x::y/n" (no prefix: a host). Returns false on error. */
bool config_cidr_parse(const char *s, struct cidr *r);
/* Parses a destination list in Postfix syntax. On error returns false and
 * writes the reason. */
bool config_relay_parse(const char *s, struct relay_dest **dests_r, size_t *n_r, char *err,
			size_t errlen);
void config_relay_free(struct relay_dest *dests, size_t n);

#endif
