/* control_parse: the control socket's request line, parsed without any
 * state (control.h; fuzzed by t/fuzz/fuzz-control.c).
 *
 *   "[json ]VERB [ARG [REASON...]]"
 *
 * At most CONTROL_LINE_MAX bytes of printable ASCII; VERB one of the
 * verbs below; ARG a word of printable ASCII (1..255 bytes), lowered;
 * REASON (hold, block only) the rest of the line, spaces kept, shorter
 * than CONTROL_REASON_MAX. Anything else is refused whole. */
#ifndef SUBMITD_CONTROL_PARSE_H
#define SUBMITD_CONTROL_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#define CONTROL_LINE_MAX 1024
#define CONTROL_REASON_MAX 160 /* = LIMITS_REASON_MAX (policy/limits_store.h) */

enum control_verb {
	CONTROL_STATUS,
	CONTROL_SESSIONS,
	CONTROL_HELD,
	CONTROL_LIMITS,
	CONTROL_HOLD,
	CONTROL_RELEASE,
	CONTROL_BLOCK,
	CONTROL_UNBLOCK,
	CONTROL_KICK,
	CONTROL_STATS,
};

struct control_req {
	enum control_verb verb;
	const char *name; /* the verb as written */
	bool json;
	bool has_arg, has_rest;
	char arg[256];                 /* lowered; "" without one */
	char rest[CONTROL_REASON_MAX]; /* "" without one */
};

/* Parses one line (no newline). False with why in err ("empty request",
 * "hold: wrong number of arguments", ...). */
bool control_parse(const char *line, size_t len, struct control_req *r, char *err, size_t errlen);

#endif
