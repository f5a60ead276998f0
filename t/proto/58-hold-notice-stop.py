#!/usr/bin/env python3
"""The hold notice's own downstream transaction (src/policy/hold_notice.c)
against the worker's and the main loop's life:

  - the downstream refuses the notice's recipient: the notice's transaction
    ends with RSET on a connection of the notice's own relay pool, which is
    freed right after; the RSET's answer must not reach freed memory (the
    sanitizer build reports it) and the process stops cleanly;
  - a reload (SIGHUP) while a notice is in flight: the notice still goes out;
  - SIGTERM while a notice waits for the downstream (a hold made with
    submitctl, on the main loop, and one made by a detection rule, on a
    worker): submitd stops at once (the notice is given up and logged), it
    does not wait for the notice's 60 s deadline.
"""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import harness  # noqa: E402
from harness import *  # noqa: E402,F401,F403
import txn  # noqa: E402

if os.geteuid() != 0 or not os.access(os.environ.get("DOVECOT", "/usr/sbin/dovecot"), os.X_OK):
    skip_all("needs root and dovecot-core (scripts/deps.sh)")

env = Env()
env.require_binary()
os.chmod(env.dir, 0o711)
certs = env.certs()
PW = {"alice@example.com": "alice-secret"}
dv = private_dovecot(env, "passwd-file", users={k: (v, "SSHA256", "") for k, v in PW.items()},
                     failure_delay="0")
sock = env.path("control.sock")
NONE = [("hold_client_addresses", "none"), ("hold_refused_recipients", "none"), ("hold_burst", "none")]


def ctl(*args):
    return txn.submitctl(env, sock, *args)


def term_with_notice(d, where, login_re):
    """SIGTERM while a notice waits for the downstream: gone within 5 s, the
    notice given up and logged, no sanitizer report."""
    p, d.proc = d.proc, None
    t0 = time.time()
    p.terminate()
    try:
        p.wait(15)
        took = time.time() - t0
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        took = None
    ok(took is not None and took < 5, "SIGTERM with a notice in flight on %s: stopped in %s s" % (where, took))
    ok(d.wait_log(r"hold notice for %s: not sent to <postmaster@example\.org>: shutting down" % login_re, 1),
       "the notice given up is logged", d.log()[-2000:])
    rep = d.sanitizer_report()
    ok(rep is None, "no sanitizer report", rep)


# ---- the downstream refuses the notice's recipient: RSET on the notice's pool
refusing = env.sink("--reject-rcpt", "postmaster@example.org")
d = txn.start(env, certs, dv, refusing, NONE + [
    ("hold_notify_recipient", "postmaster@example.org"), ("control_socket", sock)], "submitd-notice-rset")
for i in range(3):
    is_(ctl("hold", "rset%d@example.com" % i, "test")[0], 0, "hold %d" % i)
    ok(d.wait_log(r"hold notice for rset%d@example\.com: not sent to <postmaster@example\.org>: RCPT: 550" % i, 10),
       "notice %d: the refusal is logged" % i)
time.sleep(1)  # the RSETs' answers arrive after the notices' pools are gone
ok(d.proc.poll() is None, "still running after the RSETs' answers")
d.stop()
refusing.stop()

# ---- slow downstream: SIGHUP, then SIGTERM with notices in flight
slow = env.sink("--delay-data", "4")
d = txn.start(env, certs, dv, slow, NONE + [
    ("hold_notify_recipient", "postmaster@example.org"), ("control_socket", sock)], "submitd-notice-reload")
is_(ctl("hold", "hup@example.com", "test")[0], 0, "hold before a reload")
time.sleep(0.5)
d.proc.send_signal(signal.SIGHUP)
ok(d.wait_log(r"configuration reloaded", 10), "reloaded while the notice is in flight")
ok(d.wait_log(r"hold notice for hup@example\.com: sent to <postmaster@example\.org>", 15),
   "the notice still went out after the reload")
d.stop()
slow.stop()

stalled = env.sink("--delay-data", "40")
d = txn.start(env, certs, dv, stalled, NONE + [
    ("hold_notify_recipient", "postmaster@example.org"), ("control_socket", sock)], "submitd-notice-term-main")
is_(ctl("hold", "term@example.com", "test")[0], 0, "a hold with submitctl (main loop)")
time.sleep(1)
term_with_notice(d, "the main loop", r"term@example\.com")

d = txn.start(env, certs, dv, stalled, NONE + [
    ("login_recipient_limit", "1/1h"), ("hold_limit_hits", "1/1h"),
    ("hold_notify_recipient", "postmaster@example.org"), ("control_socket", sock)], "submitd-notice-term-worker")
c, _ = txn.login(d, certs, "alice@example.com", PW["alice@example.com"])
is_(c.cmd("MAIL FROM:<alice@example.com>").code, 250, "MAIL")
is_(c.cmd("RCPT TO:<a@example.net>").code, 250, "RCPT 1")
is_(c.cmd("RCPT TO:<b@example.net>").code, 450, "RCPT 2: alice over her limit, held by a worker")
c.close()
ok(d.wait_log(r"hold: client=\[127\.0\.0\.1\] login=<alice@example\.com>", 5), "held")
time.sleep(1.5)
term_with_notice(d, "a worker", r"alice@example\.com")
stalled.stop()
done()
