/* check: what `submitd -t` verifies beyond the file's syntax (docs/design.md §8):
 * Dovecot's auth socket answers the handshake, every lookup table answers a
 * query, every relay accepts our TLS and login. */
#ifndef SUBMITD_CHECK_H
#define SUBMITD_CHECK_H

#include <stdio.h>

#include "core/config.h"

/* Prints one line per neighbour to out; returns the number of failures. */
int check_neighbours(struct config *cfg, FILE *out);

/* Proves a login end to end: AUTH PLAIN with login and password through
 * Dovecot, then sender ownership of sender (NULL: Dovecot's user name, when
 * it is an address) for that login in sender_login_maps. Prints what
 * failed in words an admin can act on; returns the number of failures. */
int check_login(struct config *cfg, const char *login, const char *password, const char *sender,
		FILE *out);

#endif
