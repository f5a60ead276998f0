/* Durations in configuration values: the one parser.
 *
 * DIGITS[UNIT], UNIT one of ms, s, m, h, d, w (case does not matter); no
 * unit means seconds, as in Postfix's time values. Refuses empty numbers,
 * signs, spaces, unknown units and values that overflow. */
#ifndef SUBMITD_CORE_DURATION_H
#define SUBMITD_CORE_DURATION_H

#include <stdbool.h>
#include <stdint.h>

/* *ms_r gets the duration in milliseconds; false (and *ms_r untouched) when
 * s is not a duration. */
bool duration_parse(const char *s, uint64_t *ms_r);

#endif
