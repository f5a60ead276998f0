/* listener: the listening sockets and the connections they let in
 * (docs/design.md §3). Each "listen" line gets sockets of its own, or the
 * ones systemd passed (socket activation, man sd_listen_fds); every worker
 * has its own descriptor of each and accepts on it with a back-off when the
 * process runs out of descriptors. Connections are counted here, in total and
 * per client address (net/addrcount.c), for all workers together. */
#ifndef SUBMITD_LISTENER_H
#define SUBMITD_LISTENER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "core/config.h"

struct worker;
struct listener;

/* ---- the process's plan, main thread, before the workers exist ---- */

/* Takes the sockets systemd passed (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES,
 * which it unsets); one that is not a listening TCP socket is closed. */
void listener_inherit(void);
/* Matches the inherited sockets to cfg's "listen" lines: a line with
 * name=NAME takes every socket whose FileDescriptorName= is NAME; any other
 * line takes the sockets bound to exactly its address or, for a wildcard
 * address, the wildcard sockets on its port whatever their family. A line
 * without a socket from systemd binds its own; an inherited socket no line
 * wants is closed with a warning. False, with err filled in, when a named
 * socket is missing. */
bool listener_plan(const struct config *cfg, char *err, size_t errlen);
/* Listening sockets per worker, once planned. */
size_t listener_count(void);
/* Raises the descriptor limit to what cfg->max_connections needs, or warns
 * with numbers when it cannot. */
void listener_nofile_check(const struct config *cfg);
/* Opens w's listeners (its own descriptor of each planned socket), not yet
 * polled. False, with err filled in and errno set, when one cannot be had. */
bool listener_open(struct worker *w, const struct config *cfg, struct listener **ls_r, char *err,
		   size_t errlen);
/* Every worker has opened its listeners: the inherited originals close. */
void listener_plan_done(void);
/* Reload: new listen lines cannot be bound after privileges are gone, so next
 * keeps cur's listen lines (same count, addresses and order) unless only
 * their flags and modes changed; other changes are ignored with a warning
 * until a restart. */
void listener_reload_keep(const struct config *cur, struct config *next);

/* ---- one worker's listeners, on its thread ---- */

/* Starts accepting on the n listeners ls; exits the process if one cannot be
 * polled. Accepted connections go to session_accept(). */
void listener_start(struct listener *ls, size_t n);
/* Stops accepting for good: the descriptors close with their handles. */
void listener_close(struct listener *ls, size_t n);

/* ---- connection accounting, any worker ---- */

/* Counts a new client against max_connections and, unless it is in
 * client_limit_exceptions, max_connections_per_ip. False, with why_r the
 * reason, when it must be turned away (nothing counted then). */
bool listener_conn_acquire(const struct sockaddr *peer, const struct config *cfg,
			   const char **why_r);
/* Undoes listener_conn_acquire(); cfg must be the same snapshot. */
void listener_conn_release(const struct sockaddr *peer, const struct config *cfg);
/* Connections open in the process. */
unsigned listener_conn_total(void);

#endif
