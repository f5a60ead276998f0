/* core/config_file: the configuration file's lines as Postfix's main.cf
 * has them, before any key is known: '#' comments and blank lines
 * skipped, a line that starts with white space continuing the one before,
 * $config_directory (also ${config_directory} and $(config_directory))
 * replaced by the directory of the file. core/config.c reads its
 * "key = value" lines from here. */
#ifndef SUBMITD_CORE_CONFIG_FILE_H
#define SUBMITD_CORE_CONFIG_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* The longest logical line, continuation lines joined with one space. */
#define CONFIG_LINE_MAX 8192

struct config_file_reader {
	FILE *f;
	const char *path;
	char logical[CONFIG_LINE_MAX]; /* the line being gathered */
	unsigned lineno;               /* of the last physical line read */
	unsigned first;                /* where logical began; 0: nothing held */
	bool eof;
};

void config_file_start(struct config_file_reader *rd, FILE *f, const char *path);
/* The next logical line into out (trimmed), *lineno_r where it began.
 * False at the end, or on an error: then *ok_r is false and err says
 * "path:line: why". */
bool config_file_next(struct config_file_reader *rd, char *out, size_t outsz, unsigned *lineno_r,
		      char *err, size_t errlen, bool *ok_r);
/* White space off both ends, in place. */
char *config_file_trim(char *s);

#endif
