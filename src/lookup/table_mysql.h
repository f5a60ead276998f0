/* lookup/table_mysql: what the mysql: table's two halves share — the parsed
 * .cf file (table_mysql_cf.c) and the per-worker connections
 * (table_mysql.c). Not for use outside src/lookup/. */
#ifndef SUBMITD_TABLE_MYSQL_H
#define SUBMITD_TABLE_MYSQL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum tm_host_kind { TM_HOST_UNIX, TM_HOST_INET };

struct tm_host {
	enum tm_host_kind kind;
	char *name;    /* socket path or host name */
	unsigned port; /* inet; 0 = Connector/C default */
	bool numeric;  /* name is a literal address: no resolution needed */
};

/* Whether a host is down, shared by every worker's instance of the table (the
 * only mutable part of a parsed table): the outage is logged once when the
 * first instance sees it and once when the last one sees the host again. */
struct tm_health {
	atomic_uint ndown;      /* instances that consider the host down */
	atomic_ullong since_ms; /* when the first of them saw it fail */
	atomic_ulong refused;   /* lookups answered TEMPFAIL meanwhile */
};

struct table_mysql {
	char *origin;
	struct tm_host *hosts;
	size_t nhosts;
	struct tm_health *health; /* per host */
	char *user, *password, *dbname, *charset;
	char *query, *result_format;
	char **domains;
	size_t ndomains;
	unsigned expansion_limit;
	char *option_file, *option_group;
	char *tls_cert_file, *tls_key_file, *tls_CAfile, *tls_CApath, *tls_ciphers;
	bool tls, tls_verify_cert, require_result_set;
	uint64_t idle_interval_ms, retry_interval_ms, query_timeout_ms, connect_timeout_ms;
	unsigned max_connections;
};

/* Parses the text of a .cf file; NULL with "origin:line: what" in err. */
struct table_mysql *table_mysql_parse(const char *text, size_t len, const char *origin, char *err,
				      size_t errlen);
void table_mysql_free(struct table_mysql **mp);

#endif
