/* certwatch: the files a configuration snapshot's TLS credentials come from,
 * polled for changes (docs/design.md §3: a watched certificate that changed
 * starts a reload). Main thread only. */
#ifndef SUBMITD_CERTWATCH_H
#define SUBMITD_CERTWATCH_H

#include <stdbool.h>

#include "core/config.h"

struct certwatch;

/* The certificate and key files cfg names (its SNI ones too), with their
 * state now: called before the files are read, so a change that races with
 * loading is seen at the next poll rather than missed. */
struct certwatch *certwatch_new(const struct config *cfg);
void certwatch_free(struct certwatch **cw);
/* True when there is no file to watch. */
bool certwatch_empty(const struct certwatch *cw);
/* One poll. Returns the first file that differs from its state when the
 * snapshot was built, once every file has stayed the same since the previous
 * poll (a renewal caught half-way is not acted on); NULL otherwise. */
const char *certwatch_poll(struct certwatch *cw);
/* A reload built from attempt (NULL: the file could not even be parsed) was
 * refused: cw's files count as loaded in their state then (or now), so the
 * reload is not retried until one of them changes again. */
void certwatch_refused(struct certwatch *cw, const struct certwatch *attempt);
/* The first file that this process cannot open for reading now, with the
 * errno in *err_r; NULL when it can read them all. Asked after the privilege
 * drop: reloads read them as the unprivileged user. */
const char *certwatch_unreadable(const struct certwatch *cw, int *err_r);

#endif
