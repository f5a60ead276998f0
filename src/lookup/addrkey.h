/* lookup/addrkey: the keys under which one mail address is looked up in a
 * table, in Postfix mail_addr_find() order (MA_FIND_DEFAULT):
 *   1. the full address user+ext@domain — RFC 5321-quoted ("external") form
 *      first, then the unquoted ("internal") form if it differs;
 *   2. user@domain without the extension — only when `delimiters`
 *      (Postfix recipient_delimiter) is set and the localpart contains one of
 *      its characters: cut at the first one; never for postmaster,
 *      mailer-daemon, double-bounce, nor (when '-' is a delimiter) owner-*
 *      and *-request, nor when the cut would leave an empty localpart;
 *   3. (Postfix's bare "user" step applies to local domains only; an MSA has
 *      none, so it is skipped);
 *   4. @domain.
 * Users: the sender ownership check (policy/sender_login.h) and the relay's
 * sender_relay_maps and relay_password_maps (relay/relay.h). Pure. */
#ifndef SUBMITD_ADDRKEY_H
#define SUBMITD_ADDRKEY_H

#include <stddef.h>

/* Writes the lookup keys for addr (as written, without <>), in order,
 * NUL-separated into keys (capacity keyssz) and returns how many, or -1 if
 * they do not fit. A key equal to an earlier one is listed once. */
int addrkey_keys(const char *addr, const char *delimiters, char *keys, size_t keyssz);

/* addr (as written, without <>) in Postfix's internal form: the localpart
 * unquoted ("a b"@x and "a\ b"@x are both a b@x), then @domain if it has
 * one, into out (capacity outsz, NUL-terminated). *local_r gets the
 * localpart's length, *cut_r where step 2 above cuts it (0 = not cut;
 * delimiters NULL = ""). Returns 0, or -1 if it does not fit or would hold
 * a NUL. Postfix's access tables (check_sender_access) take this form. */
int addrkey_internal(const char *addr, const char *delimiters, char *out, size_t outsz,
		     size_t *local_r, size_t *cut_r);

#endif
