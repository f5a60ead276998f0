/* dovecot_auth_proto: the wire codec of Dovecot's auth client protocol
 * (docs/dovecot-auth.md), without a connection: splitting a line into
 * unescaped fields, reading the fields of a reply, escaping what we send.
 * Pure functions over caller memory; no libuv, no logging, no state, so
 * the fuzz targets can drive them directly. The client that owns the
 * connection and the requests is dovecot_auth.c. */
#ifndef SUBMITD_DOVECOT_AUTH_PROTO_H
#define SUBMITD_DOVECOT_AUTH_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define DOVECOT_AUTH_MAX_MECH_NAME 20 /* RFC 4422 §3.1 */
#define DOVECOT_AUTH_MAX_FIELDS 128
#define DOVECOT_AUTH_MAX_USER 512

/* One TAB-separated field of a line, unescaped in place and NUL-terminated. */
struct dovecot_auth_field {
	char *s;
	size_t len;
};

/* Mechanism names per RFC 4422 §3.1; lower case is accepted from our
 * caller (SMTP verbs are case-insensitive) and folded, never from Dovecot. */
bool dovecot_auth_mech_name_valid(const char *s, size_t len, bool allow_lower);
/* Whether mech (case-insensitive) is in the space-separated list. */
bool dovecot_auth_mech_in(const char *list, const char *mech);

/* Appends "\tname=value" with value tab-escaped (Dovecot
 * str_append_tabescaped()): TAB, LF and CR never reach the wire raw, so a
 * client-controlled value cannot add parameters or commands. */
void dovecot_auth_append_param(struct buf *b, const char *name, const char *value);

/* Unescapes a field in place and NUL-terminates it. Fails on a dangling
 * escape or an escaped NUL: no value we use may hide a NUL. */
bool dovecot_auth_unescape(char *s, size_t *len_r);
/* Decimal, as Dovecot's str_to_uint() reads it (leading zeros allowed);
 * false when empty, not digits or above UINT32_MAX. */
bool dovecot_auth_parse_uint(const char *s, size_t len, uint32_t *r);
bool dovecot_auth_all_digits(const char *s, size_t len);
bool dovecot_auth_field_is(const struct dovecot_auth_field *f, const char *s);
/* A user name we accept on OK: 1..DOVECOT_AUTH_MAX_USER bytes, no control
 * characters. */
bool dovecot_auth_user_valid(const char *s, size_t len);

enum dovecot_auth_split_status {
	DOVECOT_AUTH_SPLIT_OK,
	DOVECOT_AUTH_SPLIT_NUL,        /* "NUL byte in line" */
	DOVECOT_AUTH_SPLIT_TOO_MANY,   /* "too many fields" */
	DOVECOT_AUTH_SPLIT_BAD_ESCAPE, /* "bad escape" */
	DOVECOT_AUTH_SPLIT_EMPTY,      /* "empty command" */
};

/* Splits one line (without its LF, NUL-terminated at line[len]) into at most
 * DOVECOT_AUTH_MAX_FIELDS fields f[0..*nf_r), unescaping each in place.
 * A raw NUL refuses the line: it would cut a C string short. A broken
 * escape refuses it too, except (lenient: after the handshake) in a field
 * after the command and id, which is then judged per request:
 * *fields_whole_r is false. */
enum dovecot_auth_split_status dovecot_auth_split(char *line, size_t len, bool lenient,
						  struct dovecot_auth_field *f, size_t *nf_r,
						  bool *fields_whole_r);
/* The text that names a split status in logs. */
const char *dovecot_auth_split_error(enum dovecot_auth_split_status st);

/* The fields of an OK or FAIL after the id (f[2..nf)), read as Dovecot's own
 * client reads them: "name" or "name=value", empty fields and unknown
 * names ignored. Pointers point into the fields. */
struct dovecot_auth_final {
	const char *user, *reason; /* NULL: absent */
	size_t user_len, reason_len;
	bool user_conflict; /* two user= with different values */
	bool refused;       /* nologin or proxy: "OK does not mean access granted" */
	bool temp;          /* code=temp_fail (or <= 2.2's "temp") */
};
void dovecot_auth_final_parse(const struct dovecot_auth_field *f, size_t nf,
			      struct dovecot_auth_final *r);

/* The start of an over-long line, NUL-terminated: "OK|FAIL|CONT <TAB> id
 * <TAB>...". *cmd_r always gets the command (for logs); false when the
 * start is not such a reply. */
bool dovecot_auth_long_prefix_parse(char *p, uint32_t *id_r, struct dovecot_auth_field *cmd_r);

#endif
