/* main: the process — arguments, configuration loading and reload, signals,
 * and the main thread's loop (docs/design.md §3). It starts the workers
 * (worker.c) on the listeners (net/listener.c) and drops privileges
 * (core/privileges.c) in between; nothing else calls into it.
 *
 * The main thread runs its own loop (signals, reload, certificate watch,
 * systemd notifications); each worker runs a loop with its listening sockets
 * and sessions. They talk only through each worker's uv_async (stop, new
 * configuration, watchdog ping) and the main loop's uv_async (a worker
 * started or finished), plus a few atomics. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>
#include <uv.h>

#include "check.h"
#include "control.h"
#include "metrics_http.h"
#include "core/certwatch.h"
#include "core/config.h"
#include "core/log.h"
#include "core/notify.h"
#include "core/privileges.h"
#include "net/listener.h"
#include "net/tls.h"
#include "policy/hold_notice.h"
#include "policy/limits.h"
#include "policy/limits_redis.h"
#include "policy/policy.h"
#include "relay/relay.h"
#include "worker.h"

#define DEFAULT_CONFIG SYSCONFDIR "/submitd/submitd.conf"
#define RELOAD_MIN_INTERVAL_MS 1000
/* The main thread's own deadline: the process ends even if a worker loop
   cannot (a loop that never returns, a callback stuck in a library). */
#define SHUTDOWN_HARD_MS (WORKER_SHUTDOWN_GRACE_MS + 3000)
#define STATUS_INTERVAL_MS 5000
/* Certificate files are polled (core/certwatch.c). A change is acted on once
   the files have stayed the same for one more poll, so a renewal caught
   half-way does not log a spurious mismatch. */
#define CERT_POLL_MS 2000

/* ---- configuration checks shared by start, -t and reload ---- */

static bool main_check_config(const struct config *cfg, char *err, size_t errlen)
{
	for (size_t i = 0; i < cfg->nlistens; i++) {
		if (cfg->listens[i].proxy && cfg->nproxy_networks == 0) {
			snprintf(err, errlen,
				 "%s: listen %s is marked proxy but proxy_networks is empty",
				 cfg->path, cfg->listens[i].text);
			return false;
		}
	}
	if (cfg->user != NULL && getpwnam(cfg->user) == NULL) {
		snprintf(err, errlen, "%s: user %s does not exist", cfg->path, cfg->user);
		return false;
	}
	return true;
}

/* ---- main loop: signals, reload, status, watchdog ---- */

static const char *main_config_path;
static struct config *main_cfg; /* the current snapshot */
static bool main_stopping, main_ready;
static uv_signal_t main_sigterm, main_sigint, main_sighup;
static uv_timer_t main_status_timer, main_watchdog_timer, main_cert_timer, main_stop_timer;
static uv_timer_t main_reload_timer;
static uv_async_t main_async;        /* a worker started or finished */
static struct certwatch *main_certs; /* the current snapshot's files */
static bool main_watchdog_warned;

static void main_status(void)
{
	notify_send(true, "STATUS=%s%u sessions, %lu messages sent, %lu deferred, %lu rejected",
		    main_stopping ? "stopping: " : "", listener_conn_total(),
		    worker_stat_total(WORKER_STAT_SENT), worker_stat_total(WORKER_STAT_DEFERRED),
		    worker_stat_total(WORKER_STAT_REJECTED));
}

static void main_status_cb(uv_timer_t *t)
{
	main_status();
}

static void main_watchdog_cb(uv_timer_t *t)
{
	/* WATCHDOG=1 only while every worker loop answers its pings: a wedged
	   worker stops the keep-alives and systemd restarts us. */
	int silent = main_stopping ? -1 : worker_first_silent();
	if (silent >= 0) {
		if (!main_watchdog_warned)
			log_err("worker %d does not answer: withholding the watchdog keep-alive",
				silent);
		main_watchdog_warned = true;
	} else {
		main_watchdog_warned = false;
		notify_send(true, "WATCHDOG=1");
	}
	if (!main_stopping)
		worker_ping_all();
}

/* The file, and the relay maps it names: their errors read "FILE:LINE: key:
 * why", as the parser's do (they were opened while parsing once). */
static struct config *main_config_load(const char *path, char *err, size_t errlen)
{
	struct config *cfg = config_load(path, err, errlen);
	if (cfg != NULL && !relay_load(cfg, err, errlen))
		config_unref(&cfg);
	return cfg;
}

/* Everything a snapshot needs besides its file: the per-listener snapshots
 * (once the listeners are final), TLS credentials and policy tables, for
 * the snapshot and each of its listeners' (whose relay maps too). */
static bool main_snapshot_load(struct config *cfg, char *err, size_t errlen)
{
	if (!config_listeners_load(cfg, err, errlen) || !tls_server_load(cfg, err, errlen) ||
	    !policy_load(cfg, err, errlen))
		return false;
	for (size_t i = 0; i < cfg->nlistens; i++) {
		struct config *l = cfg->listens[i].cfg;
		char why[768];
		if (l != NULL &&
		    (!tls_server_load(l, why, sizeof(why)) || !policy_load(l, why, sizeof(why)) ||
		     !relay_load(l, why, sizeof(why)))) {
			snprintf(err, errlen, "listen %s: %s", cfg->listens[i].text, why);
			return false;
		}
	}
	return true;
}

static uint64_t main_last_reload;     /* loop time of the last reload */
static unsigned main_reload_requests; /* SIGHUPs not yet acted on */

static void main_reload(const char *why)
{
	char err[1024], desc[1024];
	notify_send(false, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading (%s)",
		    (unsigned long long)notify_monotonic_usec(), why);
	log_info("reloading %s (%s)", main_config_path, why);
	main_last_reload = uv_now(uv_default_loop());
	struct certwatch *certs = NULL;
	struct config *next = main_config_load(main_config_path, err, sizeof(err));
	bool ok = next != NULL;
	if (ok) {
		certs = certwatch_new(next);
		listener_reload_keep(main_cfg, next);
		ok = main_snapshot_load(next, err, sizeof(err)) &&
		     main_check_config(next, err, sizeof(err));
	}
	if (!ok) {
		log_err("reload refused: %s; still serving with the previous configuration", err);
		config_unref(&next);
		/* Do not retry until one of the files changes again. */
		certwatch_refused(main_certs, certs);
		certwatch_free(&certs);
		notify_send(false,
			    "READY=1\nSTATUS=reload refused, serving the previous configuration");
		return;
	}
	if (next->workers != main_cfg->workers)
		log_warn("reload: \"workers\" changed; it takes effect after a restart");
	if ((next->user == NULL) != (main_cfg->user == NULL) ||
	    (next->user != NULL && strcmp(next->user, main_cfg->user) != 0))
		log_warn("reload: \"user\" changed; it takes effect after a restart");
	if (next->log_level != main_cfg->log_level ||
	    next->syslog_facility != main_cfg->syslog_facility)
		log_warn("reload: log_level/syslog_facility changed; they take effect after a "
			 "restart");
	if (strcmp(next->metrics_listen ? next->metrics_listen : "",
		   main_cfg->metrics_listen ? main_cfg->metrics_listen : "") != 0)
		log_warn("reload: metrics_listen changed; it takes effect after a restart");
	log_set_json(next->log_json);

	worker_reconfigure_all(next);
	config_unref(&main_cfg);
	main_cfg = next;
	control_reconfigure(main_cfg);
	certwatch_free(&main_certs);
	main_certs = certs;
	tls_server_describe(main_cfg, desc, sizeof(desc));
	log_info("configuration reloaded: %s", desc);
	notify_send(false, "READY=1");
	main_status();
}

static void main_cert_cb(uv_timer_t *t)
{
	const char *which = certwatch_poll(main_certs);
	if (which != NULL) {
		char why[600];
		snprintf(why, sizeof(why), "%s changed", which);
		main_reload(why);
	}
}

/* Reload storms (a configuration-management run, a renewal loop) are
 * coalesced: at most one reload per RELOAD_MIN_INTERVAL_MS, the signals that
 * arrive meanwhile become one reload at its end, which reads the files as
 * they are then. */
static void main_reload_timer_cb(uv_timer_t *t)
{
	if (main_reload_requests > 1)
		log_info("reload requests coalesced: %u SIGHUPs since the last reload",
			 main_reload_requests);
	main_reload_requests = 0;
	main_reload("SIGHUP");
}

static void main_sighup_cb(uv_signal_t *sig, int signum)
{
	main_reload_requests++;
	if (uv_is_active((uv_handle_t *)&main_reload_timer))
		return;
	uint64_t now = uv_now(sig->loop), due = main_last_reload + RELOAD_MIN_INTERVAL_MS;
	uv_timer_start(&main_reload_timer, main_reload_timer_cb,
		       main_last_reload != 0 && due > now ? due - now : 0, 0);
}

static void main_stop_timer_cb(uv_timer_t *t)
{
	unsigned n = worker_count(), done = worker_finished_count();
	log_err("%u of %u workers did not stop within %d s: exiting without them", n - done, n,
		SHUTDOWN_HARD_MS / 1000);
	_exit(1);
}

static void main_signal_cb(uv_signal_t *sig, int signum)
{
	if (main_stopping)
		return;
	main_stopping = true;
	notify_send(false, "STOPPING=1\nSTATUS=stopping: open sessions finish their mail");
	log_info("%s received, stopping: no new connections, open sessions finish their mail",
		 signum == SIGTERM ? "SIGTERM" : "SIGINT");
	worker_stop_all();
	uv_close((uv_handle_t *)&main_sighup, NULL);
	uv_timer_stop(&main_cert_timer);
	uv_timer_stop(&main_reload_timer);
	uv_timer_start(&main_stop_timer, main_stop_timer_cb, SHUTDOWN_HARD_MS, 0);
}

static void main_async_cb(uv_async_t *a)
{
	if (!main_ready && worker_started_count() == worker_count()) {
		/* Listening on every socket, configuration and keys loaded,
		   privileges dropped, SIGHUP handled: ready. */
		main_ready = true;
		char desc[1024];
		tls_server_describe(main_cfg, desc, sizeof(desc));
		log_info("submitd %s ready: %u workers, %zu listeners, relayhost %s; %s",
			 PACKAGE_VERSION, worker_count(), main_cfg->nlistens,
			 main_cfg->relay[0].text, desc);
		notify_send(false, "READY=1\nMAINPID=%ld", (long)getpid());
		main_status();
	}
	/* Every worker is done. The handles are closed after the threads are
	   joined, so that no worker can still be signalling main_async. */
	if (worker_finished_count() == worker_count())
		uv_stop(a->loop);
}

static void main_close_handles(uv_loop_t *loop)
{
	control_stop();
	limits_redis_thread_done();
	hold_notice_cancel(loop); /* submitctl's holds ran on this loop */
	uv_handle_t *hs[] = {(uv_handle_t *)&main_async,        (uv_handle_t *)&main_sigterm,
			     (uv_handle_t *)&main_sigint,       (uv_handle_t *)&main_sighup,
			     (uv_handle_t *)&main_status_timer, (uv_handle_t *)&main_watchdog_timer,
			     (uv_handle_t *)&main_cert_timer,   (uv_handle_t *)&main_stop_timer,
			     (uv_handle_t *)&main_reload_timer};
	for (size_t i = 0; i < sizeof(hs) / sizeof(hs[0]); i++)
		if (!uv_is_closing(hs[i]))
			uv_close(hs[i], NULL);
	uv_run(loop, UV_RUN_DEFAULT);
}

/* -t -u LOGIN: the password comes from standard input (never from the
 * command line, where ps shows it), without echo on a terminal. */
static int main_check_login(struct config *cfg, const char *login, const char *sender)
{
	struct termios saved;
	bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
	if (tty) {
		struct termios quiet = saved;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
		fprintf(stderr, "password for %s: ", login);
	}
	char password[1024];
	bool got = fgets(password, sizeof(password), stdin) != NULL;
	if (tty) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
		fputc('\n', stderr);
	}
	if (!got) {
		printf("login %s: FAILED: no password on standard input\n", login);
		return 1;
	}
	password[strcspn(password, "\r\n")] = '\0';
	int problems = check_login(cfg, login, password, sender, stdout);
	explicit_bzero(password, sizeof(password));
	return problems;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: submitd [-c FILE] [-t [-u LOGIN [-s ADDRESS]]] [-V]\n"
		"  -c FILE     configuration file (default %s)\n"
		"  -t          check the configuration and its neighbours, and exit\n"
		"  -u LOGIN    with -t: also log in as LOGIN through Dovecot (password read\n"
		"              from standard input) and check it owns its sender address\n"
		"  -s ADDRESS  with -u: the sender address to check (default: the login)\n"
		"  -V          print the version and exit\n",
		DEFAULT_CONFIG);
}

int main(int argc, char **argv)
{
	const char *path = DEFAULT_CONFIG;
	bool test_only = false;
	const char *test_login = NULL, *test_sender = NULL;
	int opt;
	while ((opt = getopt(argc, argv, "c:tu:s:Vh")) != -1) {
		switch (opt) {
		case 'c':
			path = optarg;
			break;
		case 'u':
			test_login = optarg;
			break;
		case 's':
			test_sender = optarg;
			break;
		case 't':
			test_only = true;
			break;
		case 'V':
			printf("submitd %s\n", PACKAGE_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc || ((test_login || test_sender) && !test_only) ||
	    (test_sender && !test_login)) {
		usage(stderr);
		return 2;
	}

	char err[1024];
	main_config_path = path;
	struct config *cfg = main_config_load(path, err, sizeof(err));
	if (cfg == NULL) {
		fprintf(stderr, "submitd: %s\n", err);
		return 1;
	}
	struct certwatch *certs = certwatch_new(cfg);
	bool loaded = main_snapshot_load(cfg, err, sizeof(err));
	if (!loaded || !main_check_config(cfg, err, sizeof(err))) {
		/* main_check_config()'s messages name the file themselves */
		if (loaded)
			fprintf(stderr, "submitd: %s\n", err);
		else
			fprintf(stderr, "submitd: %s: %s\n", path, err);
		config_unref(&cfg);
		certwatch_free(&certs);
		return 1;
	}
	if (test_only) {
		/* The file is sound; now the neighbours it names (docs/design.md §8). */
		printf("submitd: %s: syntax, certificates and tables: ok\n", path);
		fflush(stdout);
		int problems = check_neighbours(cfg, stdout);
		if (test_login != NULL)
			problems += main_check_login(cfg, test_login, test_sender);
		if (problems == 0)
			printf("submitd: configuration %s is valid\n", path);
		else
			printf("submitd: %s: %d problem%s with the neighbours above\n", path,
			       problems, problems == 1 ? "" : "s");
		config_unref(&cfg);
		certwatch_free(&certs);
		return problems == 0 ? 0 : 1;
	}
	main_cfg = cfg;
	main_certs = certs;
	log_open(cfg->syslog_facility >= 0 ? LOG_TARGET_SYSLOG : LOG_TARGET_STDERR,
		 cfg->syslog_facility >= 0 ? cfg->syslog_facility : LOG_MAIL, cfg->log_level);
	log_set_json(cfg->log_json);
	signal(SIGPIPE, SIG_IGN);
	notify_init();

	listener_inherit();
	if (!listener_plan(cfg, err, sizeof(err))) {
		log_err("%s", err);
		notify_send(false, "STATUS=%s\nERRNO=%d", err, EINVAL);
		return 1;
	}
	listener_nofile_check(cfg);
	if (!worker_create_all(cfg, err, sizeof(err))) {
		int e = errno;
		log_err("%s", err);
		notify_send(false, "STATUS=%s\nERRNO=%d", err, e);
		return 1;
	}

	/* The control socket is made before privileges are dropped; only root is
	   served (control.h). */
	if (!control_start(uv_default_loop(), cfg, err, sizeof(err)) ||
	    !metrics_http_open(cfg, err, sizeof(err))) {
		log_err("%s", err);
		notify_send(false, "STATUS=%s\nERRNO=%d", err, EADDRINUSE);
		return 1;
	}

	/* Sockets bound, keys and configuration read: drop privileges before
	   any thread, client or backend connection exists. */
	if (!privileges_drop(cfg, err, sizeof(err))) {
		log_err("%s", err);
		notify_send(false, "STATUS=%s\nERRNO=%d", err, EPERM);
		return 1;
	}
	int uerr = 0;
	const char *unreadable = certwatch_unreadable(main_certs, &uerr);
	if (unreadable != NULL)
		log_warn("%s: %s after the privilege drop: reloads will be refused until "
			 "this user can read it (README, \"Install\")",
			 unreadable, strerror(uerr));

	uv_loop_t *main_loop = uv_default_loop();
	uv_async_init(main_loop, &main_async, main_async_cb);
	uv_signal_init(main_loop, &main_sigterm);
	uv_signal_init(main_loop, &main_sigint);
	uv_signal_init(main_loop, &main_sighup);
	uv_signal_start(&main_sigterm, main_signal_cb, SIGTERM);
	uv_signal_start(&main_sigint, main_signal_cb, SIGINT);
	/* Before READY=1: a reload request must never find us without a
	   handler (Type=notify-reload). */
	uv_signal_start(&main_sighup, main_sighup_cb, SIGHUP);
	uv_timer_init(main_loop, &main_status_timer);
	uv_timer_init(main_loop, &main_watchdog_timer);
	uv_timer_init(main_loop, &main_cert_timer);
	uv_timer_init(main_loop, &main_stop_timer);
	uv_timer_init(main_loop, &main_reload_timer);
	if (notify_enabled())
		uv_timer_start(&main_status_timer, main_status_cb, STATUS_INTERVAL_MS,
			       STATUS_INTERVAL_MS);
	if (notify_watchdog_usec() > 0) {
		uint64_t ms = notify_watchdog_usec() / 2000;
		uv_timer_start(&main_watchdog_timer, main_watchdog_cb, 0, ms > 0 ? ms : 1);
	}
	if (!certwatch_empty(main_certs))
		uv_timer_start(&main_cert_timer, main_cert_cb, CERT_POLL_MS, CERT_POLL_MS);

	limits_redis_thread_start(main_loop, true); /* limit_store = redis: */
	worker_start_all(&main_async);
	metrics_http_start();

	uv_run(main_loop, UV_RUN_DEFAULT);

	worker_join_all();
	metrics_http_stop();
	main_close_handles(main_loop);
	limits_shutdown();
	log_info("submitd stopped");
	return 0;
}
