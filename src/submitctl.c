/* submitctl: asks a running submitd through its control socket
 * (control_socket; src/control.h has the protocol, man/submitctl.8 the
 * usage). One request, one answer: the answer's first line says ok or
 * error, the rest is printed as it comes. */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define SUBMITCTL_DEFAULT_SOCKET "/run/submitd/control"
#define SUBMITCTL_REQ_MAX 1024
#define SUBMITCTL_ANSWER_MAX (16 << 20)
#define SUBMITCTL_TIMEOUT_MS 10000

static void submitctl_usage(FILE *f)
{
	fprintf(f,
		"usage: submitctl [-s SOCKET] [--json] COMMAND [ARG...]\n"
		"  status              what submitd is doing: sessions, holds, blocks\n"
		"  sessions            the open sessions\n"
		"  held                the held logins\n"
		"  limits LOGIN        the limits of LOGIN and how much of them is used\n"
		"  hold LOGIN [REASON] hold LOGIN: its open sessions end, MAIL gets 554 5.7.1\n"
		"  release LOGIN       end the hold of LOGIN\n"
		"  block ADDRESS       end and refuse sessions from ADDRESS\n"
		"  unblock ADDRESS     end the block of ADDRESS\n"
		"  kick LOGIN          end the open sessions of LOGIN at their next command\n"
		"  stats               the /metrics figures and the top logins of the last hour\n"
		"  -s SOCKET           the control_socket (default %s)\n"
		"  --json              answer in JSON\n",
		SUBMITCTL_DEFAULT_SOCKET);
}

int main(int argc, char **argv)
{
	const char *path = SUBMITCTL_DEFAULT_SOCKET;
	bool json = false;
	int i = 1;
	for (; i < argc; i++) {
		if (strcmp(argv[i], "-s") == 0 && i + 1 < argc)
			path = argv[++i];
		else if (strcmp(argv[i], "--json") == 0 || strcmp(argv[i], "-j") == 0)
			json = true;
		else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			submitctl_usage(stdout);
			return 0;
		} else if (argv[i][0] == '-') {
			submitctl_usage(stderr);
			return 2;
		} else
			break;
	}
	if (i == argc) {
		submitctl_usage(stderr);
		return 2;
	}
	char req[SUBMITCTL_REQ_MAX + 2];
	size_t n = 0;
	int k = snprintf(req, sizeof(req), "%s", json ? "json" : "");
	n = (size_t)k;
	for (; i < argc; i++) {
		size_t len = strlen(argv[i]);
		if (strchr(argv[i], '\n') != NULL || n + len + 2 > SUBMITCTL_REQ_MAX) {
			fprintf(stderr, "submitctl: request too long or holds a newline\n");
			return 2;
		}
		if (n > 0)
			req[n++] = ' ';
		memcpy(req + n, argv[i], len);
		n += len;
	}
	req[n++] = '\n';

	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "submitctl: %s: path too long\n", path);
		return 1;
	}
	strcpy(sa.sun_path, path);
	signal(SIGPIPE, SIG_IGN); /* a refused client reads why instead of dying */
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		int e = errno;
		fprintf(stderr, "submitctl: %s: %s%s\n", path, strerror(e),
			e == EACCES || e == EPERM ? " (the control socket is for root only)" : "");
		return 1;
	}
	for (size_t off = 0; off < n;) {
		ssize_t w = write(fd, req + off, n - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			fprintf(stderr, "submitctl: %s: %s\n", path, strerror(errno));
			return 1;
		}
		off += (size_t)w;
	}
	char *ans = malloc(SUBMITCTL_ANSWER_MAX + 1);
	if (ans == NULL)
		return 1;
	size_t got = 0;
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int r = poll(&p, 1, SUBMITCTL_TIMEOUT_MS);
		if (r == 0) {
			fprintf(stderr, "submitctl: %s: no answer within %d s\n", path,
				SUBMITCTL_TIMEOUT_MS / 1000);
			free(ans);
			return 1;
		}
		if (r < 0 && errno == EINTR)
			continue;
		ssize_t rd = read(fd, ans + got, SUBMITCTL_ANSWER_MAX - got);
		if (rd < 0 && errno == EINTR)
			continue;
		if (rd < 0) {
			fprintf(stderr, "submitctl: %s: %s\n", path, strerror(errno));
			free(ans);
			return 1;
		}
		if (rd == 0 || got + (size_t)rd == SUBMITCTL_ANSWER_MAX) {
			got += (size_t)(rd > 0 ? rd : 0);
			break;
		}
		got += (size_t)rd;
	}
	close(fd);
	ans[got] = '\0';
	if (got == 0) {
		fprintf(stderr,
			"submitctl: %s: connection closed without an answer "
			"(not root?)\n",
			path);
		free(ans);
		return 1;
	}
	char *body = strchr(ans, '\n');
	body = body != NULL ? body + 1 : ans + got;
	if (strncmp(ans, "ok\n", 3) != 0) {
		fprintf(stderr, "submitctl: %.*s\n", (int)(body - ans - 1 > 0 ? body - ans - 1 : 0),
			ans);
		free(ans);
		return 1;
	}
	fwrite(body, 1, got - (size_t)(body - ans), stdout);
	free(ans);
	return 0;
}
