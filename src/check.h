/* check: what `submitd -t` verifies beyond the file's syntax (DESIGN.md §5):
 * Dovecot's auth socket answers the handshake, every lookup table answers a
 * query, every relay accepts our TLS and login. */
#ifndef SUBMITD_CHECK_H
#define SUBMITD_CHECK_H

#include <stdio.h>

#include "core/config.h"

/* Prints one line per neighbour to out; returns the number of failures. */
int check_neighbours(struct config *cfg, FILE *out);

#endif
