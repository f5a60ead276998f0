/* Durations in configuration values: see duration.h. */
#include "config.h"
#include "core/duration.h"

#include <ctype.h>
#include <strings.h>

bool duration_parse(const char *s, uint64_t *ms_r)
{
	static const struct {
		const char *unit;
		uint64_t ms;
	} units[] = {
		{"", 1000},     {"s", 1000},     {"ms", 1},        {"m", 60000},
		{"h", 3600000}, {"d", 86400000}, {"w", 604800000},
	};
	uint64_t v = 0;
	const char *p = s;
	if (!isdigit((unsigned char)*p))
		return false;
	for (; isdigit((unsigned char)*p); p++) {
		unsigned d = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcasecmp(p, units[i].unit) != 0)
			continue;
		if (v > UINT64_MAX / units[i].ms)
			return false;
		*ms_r = v * units[i].ms;
		return true;
	}
	return false;
}
