#include "config.h"
#include "policy/policy.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "dkim/dkim_conf.h"
#include "lookup/saslauthd.h"
#include "lookup/table.h"
#include "policy/restrictions.h"
#include "policy/limits.h"
#include "policy/policy_service.h"
#include "policy/sender_login.h"

static void policy_free(struct config *cfg)
{
	sender_login_conf_free(&cfg->sender_login);
	table_free(&cfg->header_from_exempt);
	restrictions_free(&cfg->sender_restr);
	restrictions_free(&cfg->recipient_restr);
	limits_conf_free(cfg);
	policy_service_conf_free(cfg);
	dkim_conf_free(&cfg->dkim);
}

/* DKIM: both tables or neither; every key is read here, so at start as root
 * and on SIGHUP as the user (docs/dkim.md). */
static bool policy_load_dkim(struct config *cfg, char *err, size_t errlen)
{
	bool kt = cfg->dkim_key_table != NULL && cfg->dkim_key_table[0] != '\0';
	bool st = cfg->dkim_signing_table != NULL && cfg->dkim_signing_table[0] != '\0';
	if (!kt && !st)
		return true;
	if (kt != st) {
		snprintf(err, errlen, "dkim_key_table and dkim_signing_table go together");
		return false;
	}
	struct dkim_settings ds = {
		.key_table = cfg->dkim_key_table,
		.signing_table = cfg->dkim_signing_table,
		.headers = cfg->dkim_headers,
		.canon = cfg->dkim_canonicalization,
		.expire_s = (cfg->dkim_signature_expiry_ms + 999) / 1000,
		.never_sign = cfg->relay_auth_header,
	};
	struct stat sb;
	if (stat(cfg->dkim_temp_directory, &sb) < 0 || !S_ISDIR(sb.st_mode)) {
		snprintf(err, errlen, "dkim_temp_directory: %s is not a directory",
			 cfg->dkim_temp_directory);
		return false;
	}
	cfg->dkim = dkim_conf_new(&ds, err, errlen);
	return cfg->dkim != NULL;
}

bool policy_load(struct config *cfg, char *err, size_t errlen)
{
	cfg->free_hook = policy_free;
	if (!policy_load_dkim(cfg, err, errlen))
		return false;
	/* saslauthd refuses a field over its limit (lookup/saslauthd.h) */
	const char *sasl_long =
		strlen(cfg->saslauthd_service) > SASLAUTHD_MAX_FIELD ? "saslauthd_service"
		: strlen(cfg->saslauthd_realm) > SASLAUTHD_MAX_FIELD ? "saslauthd_realm"
								     : NULL;
	if (sasl_long != NULL) {
		snprintf(err, errlen, "%s: longer than %d bytes (saslauthd refuses it)", sasl_long,
			 SASLAUTHD_MAX_FIELD);
		return false;
	}
	if (strcmp(cfg->header_from_policy, "reject") == 0)
		cfg->header_from_mode = POLICY_HEADER_REJECT;
	else if (strcmp(cfg->header_from_policy, "warn") == 0)
		cfg->header_from_mode = POLICY_HEADER_WARN;
	else if (strcmp(cfg->header_from_policy, "off") == 0)
		cfg->header_from_mode = POLICY_HEADER_OFF;
	else {
		snprintf(err, errlen, "header_from_policy: want reject, warn or off");
		return false;
	}
	enum sender_login_policy pol;
	if (sender_login_policy_parse(cfg->sender_login_policy, &pol) < 0) {
		snprintf(err, errlen,
			 "sender_login_policy: \"%s\" is not one of reject_sender_login_mismatch, "
			 "reject_authenticated_sender_login_mismatch, "
			 "reject_known_sender_login_mismatch, "
			 "reject_unauthenticated_sender_login_mismatch, none",
			 cfg->sender_login_policy);
		return false;
	}
	if (cfg->sender_login_maps != NULL && cfg->sender_login_maps[0] != '\0') {
		struct sender_login_settings s = {
			.maps = cfg->sender_login_maps,
			.policy = cfg->sender_login_policy,
			.delimiters = cfg->recipient_delimiter,
			.cache = {.positive_ttl_ms = cfg->sender_login_cache_ttl_ms,
				  .negative_ttl_ms = cfg->sender_login_negative_cache_ttl_ms,
				  .max_entries = 10000},
		};
		char why[512];
		cfg->sender_login = sender_login_conf_new(&s, why, sizeof(why));
		if (cfg->sender_login == NULL) {
			snprintf(err, errlen, "sender_login_maps: %s", why);
			return false;
		}
	}
	/* Unset, both lists ask for fully qualified addresses (RFC 6409 §4.2) on
	   the submission listeners; a plain listener (local programs) is left
	   as Postfix's port 25 leaves it. */
	cfg->sender_restr_default = cfg->sender_restrictions == NULL;
	cfg->recipient_restr_default = cfg->recipient_restrictions == NULL;
	cfg->sender_restr = restrictions_parse("sender_restrictions",
					       cfg->sender_restrictions ? cfg->sender_restrictions
									: "reject_non_fqdn_sender",
					       RESTRICTIONS_SENDER, err, errlen);
	if (cfg->sender_restr == NULL)
		return false;
	cfg->recipient_restr =
		restrictions_parse("recipient_restrictions",
				   cfg->recipient_restrictions ? cfg->recipient_restrictions
							       : "reject_non_fqdn_recipient",
				   RESTRICTIONS_RECIPIENT, err, errlen);
	if (cfg->recipient_restr == NULL)
		return false;
	if (cfg->sender_login == NULL && (restrictions_has_login_check(cfg->sender_restr) ||
					  restrictions_has_login_check(cfg->recipient_restr))) {
		snprintf(err, errlen,
			 "sender_restrictions/recipient_restrictions: the "
			 "*_sender_login_mismatch restrictions need sender_login_maps");
		return false;
	}
	if (cfg->header_from_exempt_maps != NULL && cfg->header_from_exempt_maps[0] != '\0') {
		char why[512];
		cfg->header_from_exempt =
			table_open(cfg->header_from_exempt_maps, why, sizeof(why));
		if (cfg->header_from_exempt == NULL) {
			snprintf(err, errlen, "header_from_exempt_maps: %s", why);
			return false;
		}
		/* Looked up at end of header, inline: it must not need I/O. */
		if (!table_is_memory(cfg->header_from_exempt)) {
			snprintf(err, errlen,
				 "header_from_exempt_maps: use a texthash: or inline: table");
			return false;
		}
	}
	return limits_conf_load(cfg, err, errlen) && policy_service_conf_load(cfg, err, errlen);
}

bool policy_header_exempt(const struct config *cfg, const char *login)
{
	if (cfg->header_from_exempt == NULL || login == NULL)
		return false;
	char key[256];
	size_t n = strlen(login);
	if (n >= sizeof(key))
		return false;
	for (size_t i = 0; i <= n; i++)
		key[i] = (char)tolower((unsigned char)login[i]);
	const char *value;
	return table_lookup_sync(cfg->header_from_exempt, key, &value) == TABLE_OK;
}
