#!/usr/bin/env python3
"""Brute-force rules: failed logins are answered after a delay that doubles
within a session (auth_failure_delay, capped by auth_failure_delay_max); the
session is closed with 421 4.7.0 after auth_max_failures; an address that
spends its failure budget (auth_ip_failure_limit within
auth_ip_failure_window) gets 454 4.7.0 for auth_ip_block_time without
Dovecot being asked; the budget is per address, not per user name, so the
same user still gets in from another address, and it is back after the
block time.

Delays are measured against a fake Dovecot that answers at once (a real one
adds its own failure delay and per-address penalty); the block and the
second address are shown with both the fake and the real Dovecot, the latter
in both deployments (passwd-file passdb, and the ISPmail guide's SQL passdb).
The addresses are 127.0.0.x (all of 127/8 is local on Linux); they are in
the default mynetworks, which client_limit_exceptions exempts from the
budget, so these servers list no exceptions."""
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

ALICE, ALICE_PW = "alice@example.com", "alice-secret"
env, certs, sink = setup()
fd = FakeDovecot(env.path("fake-auth.sock")).start()
fd.tempfail.add("dave@example.com")
MARK = "bf-%s" % os.urandom(3).hex()


def submitd(name, *extra):
    """extra names the dovecot_auth_socket."""
    d = env.submitd(auth_config(certs, sink, None, ["127.0.0.1:%d tls" % free_port()],
                                [("workers", "2"), ("client_limit_exceptions", "")] + list(extra)),
                    name=name)
    if not wait_dovecot_connected(d, 2):
        diag("%s: no Dovecot handshake in its log:\n%s" % (name, d.log()))
    return d


def conn(d, source):
    return client_from(source, d, "tls", certs)


def timed(c, line, timeout=30):
    t0 = time.time()
    r = c.cmd(line, timeout=timeout)
    return r, time.time() - t0


def send_one(c, label, user=ALICE):
    subj = "%s %s" % (MARK, label)
    out = c.send_message(user, ["rcpt@example.net"], stuff(make_message(subject=subj, frm=user)))
    ok([x.code for x in out] == [250, 250, 354, 250], "%s: mail accepted" % label, [str(x) for x in out])
    found = wait_for(lambda: any(subj.encode() in m.content for m in sink.messages()), 5)
    ok(found, "%s: delivered" % label)


BLOCKED = "Too many failed logins from your address, try again later"

# ================================================================ delays grow, session closed
d = submitd("submitd-fake", ("dovecot_auth_socket", fd.path),
            ("auth_failure_delay", "200ms"), ("auth_failure_delay_max", "2s"),
            ("auth_max_failures", "3"), ("auth_ip_failure_limit", "5"),
            ("auth_ip_failure_window", "10m"), ("auth_ip_block_time", "2s"))

c = conn(d, "127.0.0.1")
r, t_ok = timed(c, "AUTH PLAIN " + plain_resp(ALICE, ALICE_PW))
ok(r.code == 235 and t_ok < 0.15, "a success is answered at once (%.0f ms)" % (t_ok * 1000), str(r))
c.close()

c = conn(d, "127.0.0.1")
times = []
for i in range(3):
    r, t = timed(c, "AUTH PLAIN " + plain_resp(ALICE, "wrong-%d" % i))
    times.append(t)
    ok(r.code == 535 and r.enhanced == "5.7.8", "127.0.0.1 failure %d: 535 5.7.8" % (i + 1), str(r))
ms = ["%.0f ms" % (t * 1000) for t in times]
ok(0.15 <= times[0] <= 0.45, "failure 1 answered after ~200 ms (%s)" % ms[0])
ok(0.35 <= times[1] <= 0.75, "failure 2 after ~400 ms (%s)" % ms[1])
ok(0.70 <= times[2] <= 1.30, "failure 3 after ~800 ms (%s)" % ms[2])
ok(times[1] > times[0] * 1.5 and times[2] > times[1] * 1.5, "the delay doubles: %s" % ", ".join(ms))
r = c.reply(3)
ok(r.code == 421 and r.enhanced == "4.7.0" and "too many failed authentication attempts" in r.text,
   "after the 3rd failure: 421 4.7.0 Error: too many failed authentication attempts", str(r))
ok(c.is_closed(3), "and the connection is closed")
c.close()
like(d.log(), r"SASL PLAIN authentication failed: login=<alice@example\.com>", "failures logged")

# ================================================================ the address budget
n_asked = len(fd.auth_lines())
c = conn(d, "127.0.0.1")
r = c.cmd("AUTH LOGIN " + b64("bob@example.com"))
r = c.cmd(b64("wrong-3"))
is_(r.code, 535, "127.0.0.1 failure 4 (new session, other user): 535")
r = c.cmd("AUTH PLAIN " + plain_resp("nobody@example.com", "wrong-4"))
is_(r.code, 535, "127.0.0.1 failure 5 (third user): 535 - the budget is spent")
is_(len(fd.auth_lines()) - n_asked, 2, "Dovecot was asked for both")
t_block = time.time()
n_asked = len(fd.auth_lines())
r, t = timed(c, "AUTH PLAIN " + plain_resp(ALICE, ALICE_PW))
ok(r.code == 454 and r.enhanced == "4.7.0" and BLOCKED in r.text,
   "blocked address, right password: 454 4.7.0 %s" % BLOCKED, str(r))
ok(t < 0.2, "answered at once (%.0f ms)" % (t * 1000))
c.close()
c = conn(d, "127.0.0.1")
r = c.cmd("AUTH LOGIN")
ok(r.code == 454 and BLOCKED in r.text, "new session from the blocked address, AUTH LOGIN: 454", str(r))
r = c.cmd("NOOP")
is_(r.code, 250, "the session itself goes on")
c.close()
ok(d.wait_closed(c), "submitd logged the end of that session")
is_(len(fd.auth_lines()), n_asked, "Dovecot was not asked while the address is blocked")
like(d.log(), r"warning: \w+: \[127\.0\.0\.1\]:\d+: SASL PLAIN authentication refused: too many failures from this address",
     "log: 'authentication refused: too many failures from this address'")

# the same user from another address is not locked out
c = conn(d, "127.0.0.2")
r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW))
is_(r.code, 235, "alice from 127.0.0.2 while 127.0.0.1 is blocked: 235")
send_one(c, "second-address")
c.close()
c = conn(d, "127.0.0.2")
r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, "typo"))
is_(r.code, 535, "a typo from 127.0.0.2 is an ordinary 535 (its own budget)")
c.close()

# rotating user names does not help an address: the budget is per address
c = None
codes = []
for i, user in enumerate(["u1@example.com", "u2@example.com", "u3@example.com", "u4@example.com",
                          "u5@example.com", ALICE]):
    if c is None or i % 2 == 0:
        if c:
            c.close()
        c = conn(d, "127.0.0.3")
    pw = ALICE_PW if user == ALICE else "guess"
    codes.append(c.cmd("AUTH PLAIN " + plain_resp(user, pw)).code)
c.close()
is_(codes, [535] * 5 + [454], "127.0.0.3: five different users, five failures -> blocked, even for alice's right password")

# temporary failures (Dovecot's problem, not the client's) do not count
codes = []
for i in range(6):
    c = conn(d, "127.0.0.4")
    codes.append(c.cmd("AUTH PLAIN " + plain_resp("dave@example.com", "x")).code)
    c.close()
c = conn(d, "127.0.0.4")
codes.append(c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW)).code)
c.close()
is_(codes, [454] * 6 + [235], "six temp_fail 454s do not spend the address budget")

# the block ends after auth_ip_block_time (2s)
left = 2.3 - (time.time() - t_block)
if left > 0:
    time.sleep(left)
c = conn(d, "127.0.0.1")
r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW))
is_(r.code, 235, "after auth_ip_block_time 127.0.0.1 logs in again")
send_one(c, "after-block")
c.close()

# fail2ban counts the 535s, not the 454 refusals
if os.system("command -v fail2ban-regex >/dev/null 2>&1") == 0:
    st, out = run(["fail2ban-regex", d.logfile, os.path.join(TOP, "conf", "fail2ban", "filter.d", "submitd.conf")])
    m = re.search(r"Lines: \d+ lines, \d+ ignored, (\d+) matched", out)
    nfail = len(re.findall(r"authentication failed: ", d.log()))
    ok(m and int(m.group(1)) == nfail == 11,
       "fail2ban-regex: %s matches = %d failed logins (refusals and temp failures not counted)"
       % (m.group(1) if m else None, nfail), out[-1500:])
else:
    skip("fail2ban-regex over the brute-force log", "fail2ban-regex not installed")

# ================================================================ the cap on the delay
d2 = submitd("submitd-cap", ("dovecot_auth_socket", fd.path),
             ("auth_failure_delay", "100ms"), ("auth_failure_delay_max", "300ms"),
             ("auth_max_failures", "5"), ("auth_ip_failure_limit", "0"))
c = conn(d2, "127.0.0.1")
times = []
for i in range(5):
    r, t = timed(c, "AUTH PLAIN " + plain_resp(ALICE, "bad%d" % i))
    times.append(t)
ms = ", ".join("%.0f" % (t * 1000) for t in times)
ok(0.07 <= times[0] <= 0.3 and 0.15 <= times[1] <= 0.5 and all(0.25 <= t <= 0.6 for t in times[2:]),
   "delays 100, 200, then capped at 300 ms by auth_failure_delay_max (%s ms)" % ms)
r = c.reply(3)
is_(r.code, 421, "auth_max_failures = 5: 421 after the 5th")
c.close()
c = conn(d2, "127.0.0.1")
r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW))
is_(r.code, 235, "auth_ip_failure_limit = 0: no address block")
c.close()

# ================================================================ the same with the real Dovecot


def real_dovecot(passdb):
    dv = private_dovecot(env, passdb, failure_delay="0")
    P = "" if passdb == "passwd-file" else passdb + ": "
    d3 = submitd("submitd-real-" + passdb, ("dovecot_auth_socket", dv.socket),
                 ("auth_failure_delay", "100ms"), ("auth_ip_failure_limit", "3"),
                 ("auth_ip_block_time", "2s"))
    # three failures at once from 127.0.0.20 (at once: Dovecot's own per-address
    # penalty would otherwise slow each next one down by seconds)
    res = {}

    def fail(i):
        c = conn(d3, "127.0.0.20")
        res[i] = c.cmd("AUTH PLAIN " + plain_resp(ALICE, "guess-%d" % i), timeout=30).code
        c.close()
    ts = [threading.Thread(target=fail, args=(i,)) for i in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    is_(sorted(res.values()), [535, 535, 535], P + "real Dovecot: three wrong passwords from 127.0.0.20: 535")
    t_block = time.time()
    # Dovecot logs each refusal after answering it: all three before the mark
    wait_for(lambda: len(re.findall(r"127\.0\.0\.20.*(Password mismatch|unknown user)",
                                    dv.read_log())) >= 3, 5)
    dvlog = len(dv.read_log())
    c = conn(d3, "127.0.0.20")
    r, t = timed(c, "AUTH PLAIN " + plain_resp(ALICE, "guess-again"))
    ok(r.code == 454 and BLOCKED in r.text and t < 0.3, P + "127.0.0.20 blocked: 454 at once (%.0f ms)"
       % (t * 1000), str(r))
    r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW))
    is_(r.code, 454, P + "even with the right password")
    c.close()
    ok(d3.wait_closed(c), P + "submitd logged the end of that session")
    is_(dv.read_log()[dvlog:], "", P + "Dovecot was not asked (nothing new in its log: no 'Password mismatch')")
    c = conn(d3, "127.0.0.21")
    r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW), timeout=30)
    is_(r.code, 235, P + "real Dovecot: alice from 127.0.0.21 gets in meanwhile")
    send_one(c, P + "real-second-address")
    c.close()
    left = 2.3 - (time.time() - t_block)
    if left > 0:
        time.sleep(left)
    c = conn(d3, "127.0.0.20")
    r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW), timeout=30)
    is_(r.code, 235, P + "after the block time alice gets in from 127.0.0.20 again")
    c.close()


for passdb in PASSDBS:
    real_dovecot(passdb)

done()
