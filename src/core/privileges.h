/* privileges: giving up root and capabilities once the sockets are bound and
 * the keys read (docs/design.md §3). Main thread, before any other thread. */
#ifndef SUBMITD_PRIVILEGES_H
#define SUBMITD_PRIVILEGES_H

#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"

/* Becomes cfg->user for good (real, effective and saved IDs, supplementary
 * groups from the group database, e.g. ssl-cert), keeps no capability, and
 * checks that root cannot be regained. Without "user" a non-root process
 * only sheds capabilities it may have been given (AmbientCapabilities=); root
 * stays root, with a warning. False, with err filled in: the process must
 * not go on. */
bool privileges_drop(const struct config *cfg, char *err, size_t errlen);

#endif
