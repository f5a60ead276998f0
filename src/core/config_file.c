/* core/config_file: logical lines of a configuration file (config_file.h). */
#include "config.h"
#include "core/config_file.h"

#include <ctype.h>
#include <string.h>

char *config_file_trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
	return s;
}

/* $config_directory and its two spellings become the file's directory; any
 * other $name stays as written. False when the line would not fit. */
static bool config_file_expand(char *s, size_t size, const char *path)
{
	static const char *const forms[] = {"${config_directory}", "$(config_directory)",
					    "$config_directory"};
	const char *slash = strrchr(path, '/');
	const char *dir = slash == NULL ? "." : path;
	size_t dlen = slash == NULL || slash == path ? 1 : (size_t)(slash - path);
	for (size_t f = 0; f < sizeof(forms) / sizeof(forms[0]); f++) {
		size_t flen = strlen(forms[f]);
		char *from = s, *p;
		while ((p = strstr(from, forms[f])) != NULL) {
			size_t len = strlen(s);
			if (len - flen + dlen >= size)
				return false;
			memmove(p + dlen, p + flen, len - (size_t)(p - s) - flen + 1);
			memcpy(p, dir, dlen);
			from = p + dlen; /* never looks into what it put in */
		}
	}
	return true;
}

void config_file_start(struct config_file_reader *rd, FILE *f, const char *path)
{
	memset(rd, 0, sizeof(*rd));
	rd->f = f;
	rd->path = path;
}

static bool config_file_fail(bool *ok_r, char *err, size_t errlen, const char *path,
			     unsigned lineno, const char *why)
{
	snprintf(err, errlen, "%s:%u: %s", path, lineno, why);
	*ok_r = false;
	return false;
}

bool config_file_next(struct config_file_reader *rd, char *out, size_t outsz, unsigned *lineno_r,
		      char *err, size_t errlen, bool *ok_r)
{
	char line[CONFIG_LINE_MAX];
	/* A logical line is complete once the next one begins or the file ends. */
	while (!rd->eof) {
		if (fgets(line, sizeof(line), rd->f) == NULL) {
			rd->eof = true;
			break;
		}
		rd->lineno++;
		if (strchr(line, '\n') == NULL && !feof(rd->f))
			return config_file_fail(ok_r, err, errlen, rd->path, rd->lineno,
						"line too long");
		char *hash = strchr(line, '#');
		if (hash != NULL)
			*hash = '\0';
		bool cont = line[0] == ' ' || line[0] == '\t';
		char *t = config_file_trim(line);
		if (*t == '\0')
			continue;
		if (cont) {
			if (rd->first == 0)
				return config_file_fail(
					ok_r, err, errlen, rd->path, rd->lineno,
					"a line that starts with white space continues the "
					"\"key = value\" line before it, and there is none");
			size_t have = strlen(rd->logical), add = strlen(t);
			if (have + 1 + add >= sizeof(rd->logical))
				return config_file_fail(ok_r, err, errlen, rd->path, rd->first,
							"line too long");
			rd->logical[have] = ' ';
			memcpy(rd->logical + have + 1, t, add + 1);
			continue;
		}
		unsigned began = rd->first;
		if (began != 0 && snprintf(out, outsz, "%s", rd->logical) >= (int)outsz)
			return config_file_fail(ok_r, err, errlen, rd->path, began,
						"line too long");
		snprintf(rd->logical, sizeof(rd->logical), "%s", t);
		rd->first = rd->lineno;
		if (began != 0) {
			*lineno_r = began;
			goto done;
		}
	}
	if (rd->first == 0)
		return false; /* the end */
	*lineno_r = rd->first;
	rd->first = 0;
	if (snprintf(out, outsz, "%s", rd->logical) >= (int)outsz)
		return config_file_fail(ok_r, err, errlen, rd->path, *lineno_r, "line too long");
done:
	if (!config_file_expand(out, outsz, rd->path))
		return config_file_fail(ok_r, err, errlen, rd->path, *lineno_r, "line too long");
	return true;
}
