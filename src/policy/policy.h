/* policy: what the configuration asks of sender ownership, built once per
 * configuration snapshot (shared, read-only) and kept in it. */
#ifndef SUBMITD_POLICY_H
#define SUBMITD_POLICY_H

#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"

/* header_from_policy: what to do when From:/Sender: is not the login's. */
enum policy_header_mode { POLICY_HEADER_REJECT = 0, POLICY_HEADER_WARN, POLICY_HEADER_OFF };

/* Opens sender_login_maps and header_from_exempt_maps and checks the policy
 * names. On error returns false with "what: why" in err. */
bool policy_load(struct config *cfg, char *err, size_t errlen);

/* True when login may put any address in From:/Sender:
 * (header_from_exempt_maps, an in-memory table keyed by login). */
bool policy_header_exempt(const struct config *cfg, const char *login);

#endif
