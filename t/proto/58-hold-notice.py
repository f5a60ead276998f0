#!/usr/bin/env python3
"""The notification message of a hold (issue 14; src/policy/hold_notice.h),
through the same downstream the sessions use (the recording sink):

  - a hold made by a detection rule (hold_limit_hits) and one made with
    `submitctl hold` each send one message to hold_notify_recipient, from
    the null sender, with Date, Message-ID, From, To, a Subject naming the
    login and the reason, Auto-Submitted: auto-generated, and the figures
    in the body; the outcome is logged;
  - hold_notify_sender sets the envelope sender and From:;
  - a reason full of header-looking text stays inside the Subject line;
  - a flood of holds sends at most 10 messages a minute (the rest logged);
  - a downstream that is down: the hold still holds, the failure is logged
    and nothing waits;
  - a bad hold_notify_recipient refuses the configuration.
"""
import email
import email.utils
import re
import email.policy
import os
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
PW = {"alice@example.com": "alice-secret", "bob@example.com": "bob-secret"}
dv = private_dovecot(env, "passwd-file", users={k: (v, "SSHA256", "") for k, v in PW.items()},
                     failure_delay="0")
sink = env.sink()
sock = env.path("control.sock")
NONE = [("hold_client_addresses", "none"), ("hold_refused_recipients", "none"), ("hold_burst", "none")]


def ctl(*args):
    return txn.submitctl(env, sock, *args)


def notices():
    return [m for m in sink.messages() if "postmaster@example.org" in m.rcpts]


def parsed(m):
    return email.message_from_bytes(m.content, policy=email.policy.compat32)


d = txn.start(env, certs, dv, sink, NONE + [
    ("login_message_limit", "1/1h"), ("hold_limit_hits", "1/1h"),
    ("hold_notify_recipient", "postmaster@example.org"), ("control_socket", sock)], "submitd-notice")

# ---- a detection rule holds alice
c, _ = txn.login(d, certs, "alice@example.com", PW["alice@example.com"])
txn.send(c, "alice@example.com", ["a@example.net"])
rm = txn.send(c, "alice@example.com", ["a@example.net"])[0]
is_(rm.code, 450, "alice: over her limit")
c.close()
ok(wait_for(lambda: len(notices()) >= 1, 10), "the hold's notice reached the downstream")
ns = notices()
is_(len(ns), 1, "one notice for one hold")
m = ns[0]
is_(m.mail_from, "", "from the null sender")
is_(m.rcpts, ["postmaster@example.org"], "to hold_notify_recipient only")
p = parsed(m)
for h in ("Date", "Message-ID", "From", "To", "Subject", "Auto-Submitted"):
    ok(p[h] is not None and len(p.get_all(h)) == 1, "notice: one %s: header" % h, str(p[h]))
ok(email.utils.parsedate_tz(p["Date"]) is not None, "Date parses", p["Date"])
like(p["Message-ID"], r"^<hold\.[0-9.]+@%s>$" % re.escape(MYHOST), "Message-ID")
is_(p["From"], "Mail submission <MAILER-DAEMON@%s>" % MYHOST, "From: MAILER-DAEMON")
is_(p["To"], "<postmaster@example.org>", "To")
is_(p["Subject"], "login alice@example.com held: limit_hits", "Subject names the login and the reason")
is_(p["Auto-Submitted"], "auto-generated", "Auto-Submitted: auto-generated (RFC 3834)")
body = p.get_payload()
like(body, r"Login:   alice@example\.com\r?\n", "body: the login")
like(body, r"Figures: \S", "body: the figures")
like(body, r"Client:  127\.0\.0\.1", "body: the client")
like(body, r"submitctl release alice@example\.com", "body: how to release")
ok(d.wait_log(r"hold notice for alice@example\.com: sent to <postmaster@example\.org> through .*: 250", 5),
   "the outcome is logged")

# ---- submitctl hold, a reason that looks like headers
st, out = ctl("hold", "Bob@Example.com", "Bcc: victim@example.net X-Evil: yes")
ok(st == 0, "submitctl hold", out)
ok(wait_for(lambda: len(notices()) >= 2, 10), "the manual hold's notice arrived")
p = parsed(notices()[1])
is_(p["Subject"], "login bob@example.com held: manual", "Subject of a manual hold")
ok(p["Bcc"] is None and p["X-Evil"] is None, "the reason made no header of its own")
like(p.get_payload(), r"Figures: Bcc: victim@example\.net X-Evil: yes", "the administrator's words in the body")
is_(notices()[1].rcpts, ["postmaster@example.org"], "nobody else got it")

# ---- a flood of holds: at most 10 a minute
before = len(notices())
for i in range(14):
    ctl("hold", "flood%d@example.com" % i, "flood")
time.sleep(2)
sent = len(notices()) - before
ok(1 <= sent <= 8, "a flood of 14 holds sent %d notices (10 a minute, 2 already this minute)" % sent)
ok(d.wait_log(r"hold notice for flood\d+@example\.com: not sent: ", 5), "the ones not sent are logged")
is_(len(re.findall(r"^flood\d+@example\.com ", ctl("held")[1], re.M)), 14, "every flood login is held all the same")
d.stop()

# ---- hold_notify_sender; a downstream that is down
dead = free_port()
d = txn.start(env, certs, dv, sink, NONE + [
    ("hold_notify_recipient", "postmaster@example.org"), ("hold_notify_sender", "abuse@example.org"),
    ("control_socket", sock)], "submitd-notice-from")
before = len(notices())
is_(ctl("hold", "carol@example.com", "test")[0], 0, "hold")
ok(wait_for(lambda: len(notices()) > before, 10), "notice sent")
m = notices()[-1]
is_(m.mail_from, "abuse@example.org", "hold_notify_sender is the envelope sender")
is_(parsed(m)["From"], "Mail submission <abuse@example.org>", "and the From:")
d.stop()
d = txn.start(env, certs, dv, sink, NONE + [
    ("relayhost", "[127.0.0.1]:%d" % dead),
    ("hold_notify_recipient", "postmaster@example.org"), ("control_socket", sock)], "submitd-notice-down")
t0 = time.time()
st, out = ctl("hold", "dave@example.com", "test")
ok(st == 0 and time.time() - t0 < 2, "the hold answers at once with the downstream down", out)
ok(d.wait_log(r"hold notice for dave@example\.com: not sent to <postmaster@example\.org>: MAIL: 4\d\d", 15),
   "the failure is logged")
st, out = ctl("held")
like(out, r"dave@example\.com", "the login is held all the same")
d.stop()

# ---- configuration
for i, bad in enumerate(("postmaster", "a b@example.org", "x@example.org>, <y@example.org")):
    conf = env.path("bad%d.conf" % i)
    with open(conf, "w") as f:
        f.write("myhostname = %s\nrelayhost = %s\nlisten = 127.0.0.1:%d plain\nhold_notify_recipient = %s\n"
                % (MYHOST, sink.relayhost, free_port(), bad))
    p = subprocess.run([env.binary, "-t", "-c", conf], capture_output=True, text=True, timeout=30)
    ok(p.returncode != 0 and "hold_notify_recipient" in p.stdout + p.stderr,
       "hold_notify_recipient = %s is refused" % bad, p.stdout + p.stderr)
done()
