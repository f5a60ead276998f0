/* net/addrcount: exact per-client-address accounting, shared by all workers
 * — the connection count per address (max_connections_per_ip) and the AUTH
 * failure budget per address (auth_ip_failure_limit).
 *
 * Exact: every address has its own entry, found by comparing the whole
 * address, so what one address does never counts against another. The hash
 * that picks a chain is SipHash-2-4 keyed with 128 random bits drawn when the
 * table is made, so nobody can compute offline which addresses share a
 * chain (long chains would only cost time, never mix counts).
 *
 * IPv6 clients are counted per prefix (ipv6_client_prefix, /64 by default):
 * one host usually owns a whole /64 and could otherwise rotate addresses to
 * dodge every limit. An IPv4-mapped IPv6 address counts as the IPv4 one.
 *
 * Bounded: at most `capacity` entries. See addrcount.c for what is dropped
 * when the table is full, and why that never lets a blocked address
 * unblock itself cheaply.
 *
 * Thread safety: every call takes the table's mutex; calls are O(1) apart
 * from the hash chain walk. Times are CLOCK_MONOTONIC milliseconds passed in
 * by the caller (addrcount_now()), so unit tests can drive the clock. */
#ifndef SUBMITD_NET_ADDRCOUNT_H
#define SUBMITD_NET_ADDRCOUNT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Default capacity of the process-wide table: about 20 MiB at worst. */
#define ADDRCOUNT_CAPACITY 262144

/* An address as counted: family byte (4 or 6), then the address bytes (IPv6
 * masked to the prefix), zero-padded. Compared whole. */
struct addrcount_key {
	uint8_t b[17];
};

struct addrcount;

struct addrcount_auth_limits {
	unsigned limit; /* failures within window_ms before a block; 0 = no budget */
	uint64_t window_ms;
	uint64_t block_ms;
};

/* What a unit test may look at. */
struct addrcount_info {
	unsigned conns;
	unsigned pending;  /* AUTH attempts sent to the backend, not yet answered */
	unsigned failures; /* in the current window */
	bool blocked;
};

void addrcount_key(const struct sockaddr *sa, unsigned ipv6_prefix, struct addrcount_key *key_r);
uint64_t addrcount_now(void);

struct addrcount *addrcount_new(size_t capacity);
void addrcount_free(struct addrcount **ac);
/* The process-wide table (ADDRCOUNT_CAPACITY), made on first use. */
struct addrcount *addrcount_global(void);

/* One more connection from key, unless it already has limit. False also
 * when the table is full of live entries (then the caller refuses). */
bool addrcount_conn_acquire(struct addrcount *ac, const struct addrcount_key *key, unsigned limit,
			    uint64_t now);
void addrcount_conn_release(struct addrcount *ac, const struct addrcount_key *key, uint64_t now);

/* An AUTH attempt is about to be sent to the backend. True: it is counted
 * as pending from now on and the caller must end it with
 * addrcount_auth_end() exactly once. False: the address is blocked, or its
 * failures plus its attempts still in flight have reached the limit (every
 * attempt counts from the moment it is sent, not when it is answered). */
bool addrcount_auth_begin(struct addrcount *ac, const struct addrcount_key *key,
			  const struct addrcount_auth_limits *lim, uint64_t now);
/* The attempt is over: failed (counted; may start a block) or not (the
 * backend said OK, or it was the backend's own trouble: refunded). */
void addrcount_auth_end(struct addrcount *ac, const struct addrcount_key *key,
			const struct addrcount_auth_limits *lim, bool failed, uint64_t now);

/* For tests: what the table holds for key (false: no entry). */
bool addrcount_peek(struct addrcount *ac, const struct addrcount_key *key, uint64_t now,
		    struct addrcount_info *r);
size_t addrcount_size(struct addrcount *ac);
/* SipHash-2-4 of data under the key (k0, k1); exported for its test vectors. */
uint64_t addrcount_siphash(uint64_t k0, uint64_t k1, const void *data, size_t len);

#endif
