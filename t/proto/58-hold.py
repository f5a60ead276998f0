#!/usr/bin/env python3
"""Holding a login that looks compromised (issue 14; README "When an
account is compromised"; docs/limits.md), against a private Dovecot and
the recording downstream:

  - each rule holds a login in a scripted scenario and not on a normal
    user's pattern: hold_limit_hits, hold_client_addresses (logins from
    127.0.0.2, .3, ...), hold_refused_recipients (the downstream refuses
    recipients), hold_burst;
  - a held login's open session is ended at its next command (421 4.7.1);
    a new session's AUTH still succeeds (235) and its MAIL gets 554 5.7.1;
    nothing more reaches the downstream;
  - one log line per hold, matched by conf/fail2ban/filter.d/submitd-hold.conf
    (fail2ban-regex), with the client address;
  - notify_command runs with LOGIN REASON FIGURES CLIENT, once per hold,
    and one that hangs is killed after notify_timeout while mail flows;
  - hold_time ends a hold by itself;
  - a domain_* limit's refusals count toward nobody's hold_limit_hits;
  - a hold, kick or block while DATA is under way stops that message: the
    end of DATA gets 554 5.7.1 (held) or 421 4.7.1 (kicked, blocked) and
    the downstream gets nothing.
"""
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import harness  # noqa: E402
from harness import *  # noqa: E402,F401,F403
import txn  # noqa: E402

env = Env()
env.require_binary()
os.chmod(env.dir, 0o711)
certs = env.certs()

USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "gina", "henry", "ivan", "judy"]
PW = {"%s@example.com" % u: "%s-secret" % u for u in USERS}
dv = private_dovecot(env, "passwd-file", users={k: (v, "SSHA256", "") for k, v in PW.items()},
                     failure_delay="0")

sink = env.sink("--reject-rcpt", "nobody1@example.net", "--reject-rcpt", "nobody2@example.net",
                "--reject-rcpt", "nobody3@example.net")

notify_dir = env.path("notify")
os.makedirs(notify_dir)
notify = env.path("notify.sh")
with open(notify, "w") as f:
    f.write("#!/bin/sh\n# records its arguments, one a line\n"
            "printf '%%s\\n' \"$@\" > %s/$1.$$\n" % notify_dir)
os.chmod(notify, 0o755)
hang = env.path("hang.sh")
with open(hang, "w") as f:
    f.write("#!/bin/sh\necho started > %s/hang.started\nexec sleep 60\n" % notify_dir)
os.chmod(hang, 0o755)

NONE = [("hold_limit_hits", "none"), ("hold_client_addresses", "none"),
        ("hold_refused_recipients", "none"), ("hold_burst", "none")]


def start(extra, name):
    conf = [("notify_command", notify)] + NONE
    over = {k for k, _ in extra}
    conf = [(k, v) for k, v in conf if k not in over] + list(extra)
    return txn.start(env, certs, dv, sink, conf, name)


def login(d, user, source=None):
    return txn.login(d, certs, user, PW[user], source)


def send(c, frm, rcpts):
    return txn.send(c, frm, rcpts, "hold")


def holds(d, user):
    return re.findall(r"hold: client=\[[^\]]*\] login=<%s> reason=\S+ until=\S+: .*" % re.escape(user), d.log())


def notified(user):
    out = []
    for name in os.listdir(notify_dir):
        if name.startswith(user + "."):
            with open(os.path.join(notify_dir, name)) as f:
                out.append(f.read().splitlines())
    return out


def held_session_checks(d, user, what):
    """A new session of a held login: AUTH 235, MAIL 554 5.7.1, nothing delivered."""
    before = sink.count()
    c, r = login(d, user)
    is_(r.code, 235, "%s: held %s still logs in (235)" % (what, user))
    rm = c.cmd("MAIL FROM:<%s>" % user)
    ok(rm.code == 554 and rm.enhanced == "5.7.1", "%s: MAIL of held %s gets 554 5.7.1" % (what, user), str(rm))
    c.cmd("QUIT")
    c.close()
    is_(sink.count(), before, "%s: nothing of held %s reached the downstream" % (what, user))


# ------------------------------------------------------------ hold_limit_hits
d = start([("login_message_limit", "2/1h"), ("hold_limit_hits", "3/1h")], "submitd-hits")
# normal: bob reaches his limit once, and stops
b, _ = login(d, "bob@example.com")
codes = [send(b, "bob@example.com", ["x@example.net"])[0].code for _ in range(3)]
is_(codes, [250, 250, 450], "normal: bob's third message is over the limit")
b.close()
ok(not holds(d, "bob@example.com"), "normal: one refusal holds nobody")
# compromised: alice keeps trying
a, _ = login(d, "alice@example.com")
codes = [send(a, "alice@example.com", ["x@example.net"])[0].code for _ in range(5)]
is_(codes, [250, 250, 450, 450, 450], "alice: two accepted, three refused")
ok(wait_for(lambda: len(holds(d, "alice@example.com")) == 1, 5), "alice held after 3 refusals: one log line")
like("\n".join(holds(d, "alice@example.com")), r"client=\[127\.0\.0\.1\] login=<alice@example\.com> reason=limit_hits until=released: 3 limit refusals within 1h",
     "the hold line names client, login, reason and figures")
r = a.cmd("NOOP")
ok(r.code == 421 and r.enhanced == "4.7.1", "alice's open session is ended at its next command: 421 4.7.1", str(r))
ok(a.is_closed(), "and closed")
held_session_checks(d, "alice@example.com", "limit_hits")
ok(wait_for(lambda: len(notified("alice@example.com")) == 1, 5), "notify_command ran once")
args = (notified("alice@example.com") or [[]])[0]
is_(args[:2], ["alice@example.com", "limit_hits"], "notify_command: LOGIN REASON")
ok(len(args) == 4 and "3 limit refusals within 1h" in args[2] and args[3] == "127.0.0.1",
   "notify_command: FIGURES CLIENT", repr(args))
# fail2ban's own matcher on the log
f2b = shutil.which("fail2ban-regex")
filt = os.path.join(harness.TOP, "conf", "fail2ban", "filter.d", "submitd-hold.conf")
if f2b:
    st, out = run([f2b, d.logfile, filt])
    m = re.search(r"Failregex: (\d+) total", out)
    ok(st == 0 and m and int(m.group(1)) == 1, "fail2ban-regex: the filter matches the one hold line", out[-800:])
else:
    skip("fail2ban-regex: the filter matches the one hold line", "needs fail2ban (scripts/deps.sh)")
d.stop()

# ------------------------------------------------------------ a domain limit is not the login's
d = start([("domain_message_limit", "2/1h"), ("hold_limit_hits", "2/1h")], "submitd-domain")
a, _ = login(d, "alice@example.com")
codes = [send(a, "alice@example.com", ["x@example.net"])[0].code for _ in range(2)]
is_(codes, [250, 250], "alice uses up example.com's domain_message_limit")
b, _ = login(d, "bob@example.com")
codes = [send(b, "bob@example.com", ["x@example.net"])[0].code for _ in range(4)]
is_(codes, [450] * 4, "bob is refused four times for the domain limit")
codes = [send(a, "alice@example.com", ["x@example.net"])[0].code for _ in range(3)]
is_(codes, [450] * 3, "and alice three times")
time.sleep(0.5)
ok(not holds(d, "bob@example.com") and not holds(d, "alice@example.com"),
   "domain limit refusals hold nobody (hold_limit_hits counts the login's own rules)",
   d.log()[-600:])
is_(b.cmd("NOOP").code, 250, "bob's session goes on")
a.close()
b.close()
d.stop()

# ------------------------------------------------------------ hold_client_addresses
d = start([("hold_client_addresses", "2/1h")], "submitd-addrs")
for i in range(4):
    c, r = login(d, "dave@example.com")
    c.close()
ok(not holds(d, "dave@example.com"), "normal: four logins from one address hold nobody")
c, r = login(d, "carol@example.com", "127.0.0.2")
c.close()
c, r = login(d, "carol@example.com", "127.0.0.3")
c.close()
ok(not holds(d, "carol@example.com"), "carol from two addresses: not held")
c, r = login(d, "carol@example.com", "127.0.0.4")
is_(r.code, 235, "carol's login from a third address succeeds")
ok(wait_for(lambda: len(holds(d, "carol@example.com")) == 1, 5), "carol held: three addresses within 1h")
like("\n".join(holds(d, "carol@example.com")), r"client=\[127\.0\.0\.4\] .*reason=client_addresses.*3 client addresses within 1h",
     "the hold line names the last address and the count")
rm = c.cmd("MAIL FROM:<carol@example.com>")
ok(rm.code == 421 and rm.enhanced == "4.7.1", "the session that tripped it is ended at its next command", str(rm))
c.close()
held_session_checks(d, "carol@example.com", "client_addresses")
d.stop()

# ------------------------------------------------------------ hold_refused_recipients
d = start([("hold_refused_recipients", "50%/4/1h")], "submitd-refused")
c, _ = login(d, "frank@example.com")
rm, rr, fin = send(c, "frank@example.com", ["f%d@example.net" % i for i in range(5)] + ["nobody1@example.net"])
ok(fin is not None and fin.code == 250 and [r.code for r in rr].count(550) == 1,
   "normal: frank, one of six recipients refused downstream", str([r.code for r in rr]))
c.close()
ok(not holds(d, "frank@example.com"), "normal: frank is not held")
e, _ = login(d, "erin@example.com")
rm, rr, fin = send(e, "erin@example.com", ["nobody1@example.net", "nobody2@example.net",
                                           "e1@example.net", "nobody3@example.net"])
is_([r.code for r in rr], [550, 550, 250, 550], "erin: three of four recipients refused downstream")
ok(wait_for(lambda: len(holds(d, "erin@example.com")) == 1, 5), "erin held")
like("\n".join(holds(d, "erin@example.com")), r"reason=refused_recipients.*3 of 4 recipients refused downstream within 1h",
     "the hold line gives the share")
ok(fin is not None and fin.code == 421 and fin.enhanced == "4.7.1", "erin's session ends at the next command (DATA)", str(fin))
is_(sum(1 for m in sink.messages() if "e1@example.net" in m.rcpts), 0, "her message was not delivered")
held_session_checks(d, "erin@example.com", "refused_recipients")
d.stop()

# ------------------------------------------------------------ hold_burst
d = start([("hold_burst", "2x/4/20s/200s"), ("hold_time", "3s")], "submitd-burst")
c, _ = login(d, "henry@example.com")
codes = [send(c, "henry@example.com", ["h@example.net"])[2].code for _ in range(3)]
is_(codes, [250, 250, 250], "normal: henry sends three (below the minimum of 4)")
c.close()
ok(not holds(d, "henry@example.com"), "normal: henry is not held")
g, _ = login(d, "gina@example.com")
finals = []
for i in range(5):
    rm, rr, fin = send(g, "gina@example.com", ["g%d@example.net" % i])
    finals.append((fin or rm).code)
    if (fin or rm).code == 421:
        break
ok(wait_for(lambda: len(holds(d, "gina@example.com")) == 1, 5), "gina held on her 4th message within 20s", str(finals))
like("\n".join(holds(d, "gina@example.com")), r"reason=burst until=\d{4}-\d\d-\d\dT.*: 4 messages within 20s", "the hold line: the burst and its end")
is_(finals[:3], [250, 250, 250], "her first three went")
ok(421 in finals, "her session was ended once held", str(finals))
held_session_checks(d, "gina@example.com", "burst")
time.sleep(3.5)
c, r = login(d, "gina@example.com")
rm = c.cmd("MAIL FROM:<gina@example.com>")
is_(rm.code, 250, "hold_time 3s: the hold ended by itself")
c.close()
d.stop()

# ------------------------------------------------------------ held, kicked, blocked during DATA
SUBMITCTL = os.path.join(os.path.dirname(env.binary), "submitctl")
sock = env.path("control.sock")


def ctl(*args):
    p = subprocess.run([SUBMITCTL, "-s", sock] + list(args), capture_output=True, text=True, timeout=30)
    return p.returncode, (p.stdout + p.stderr).strip()


def data_then(user, action):
    """user's message stops half way; action runs; the rest and the dot
    follow. Returns (final reply, client, messages the downstream got)."""
    before = sink.count()
    c, _ = login(d, user)
    is_(c.cmd("MAIL FROM:<%s>" % user).code, 250, "%s: MAIL" % user)
    is_(c.cmd("RCPT TO:<mid-data@example.net>").code, 250, "%s: RCPT" % user)
    is_(c.cmd("DATA").code, 354, "%s: DATA" % user)
    msg = stuff(make_message(subject="in flight"))
    c.send(msg[:len(msg) // 2])
    time.sleep(0.3)
    st, out = action()
    ok(st == 0, "%s: the control command ran" % user, out)
    c.send(msg[len(msg) // 2:])
    fin = c.reply()
    time.sleep(0.5)
    return fin, c, sink.count() - before


d = start([("control_socket", sock)], "submitd-middata")
fin, c, got = data_then("alice@example.com", lambda: ctl("hold", "alice@example.com", "stolen"))
ok(fin.code == 554 and fin.enhanced == "5.7.1" and "sending is suspended for this account" in fin.text,
   "held during DATA: the end of DATA gets MAIL's 554 5.7.1", str(fin))
is_(got, 0, "held during DATA: the downstream got nothing")
c.close()
fin, c, got = data_then("bob@example.com", lambda: ctl("kick", "bob@example.com"))
ok(fin.code == 421 and fin.enhanced == "4.7.1", "kicked during DATA: 421 4.7.1", str(fin))
ok(c.is_closed(), "kicked during DATA: the session is closed")
is_(got, 0, "kicked during DATA: the downstream got nothing")
fin, c, got = data_then("carol@example.com", lambda: ctl("block", "127.0.0.1", "test"))
ok(fin.code == 421 and fin.enhanced == "4.7.1", "address blocked during DATA: 421 4.7.1", str(fin))
ok(c.is_closed(), "blocked during DATA: the session is closed")
is_(got, 0, "blocked during DATA: the downstream got nothing")
is_(ctl("unblock", "127.0.0.1")[0], 0, "unblocked")
c, _ = login(d, "dave@example.com")
rm, rr, fin = send(c, "dave@example.com", ["d@example.net"])
ok(fin is not None and fin.code == 250, "another login's message still goes", str(fin))
c.close()
d.stop()

# ------------------------------------------------------------ a notify_command that hangs
d = start([("login_message_limit", "1/1h"), ("hold_limit_hits", "1/1h"),
           ("notify_command", hang), ("notify_timeout", "1s")], "submitd-hang")
c, _ = login(d, "ivan@example.com")
send(c, "ivan@example.com", ["i@example.net"])
t0 = time.time()
rm = send(c, "ivan@example.com", ["i@example.net"])[0]
ok(rm.code == 450 and time.time() - t0 < 1, "the hold's notify_command does not delay the reply")
c.close()
ok(wait_for(lambda: os.path.exists(os.path.join(notify_dir, "hang.started")), 5), "the hanging command started")
c, _ = login(d, "judy@example.com")
rm, rr, fin = send(c, "judy@example.com", ["j@example.net"])
ok(fin is not None and fin.code == 250, "mail flows while it hangs")
c.close()
ok(d.wait_log(r"notify_command for ivan@example\.com: still running after notify_timeout, killed", 5),
   "killed after notify_timeout")
d.stop()

done()
