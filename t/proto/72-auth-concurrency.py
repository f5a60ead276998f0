#!/usr/bin/env python3
"""Many concurrent logins over one worker's single Dovecot connection (real,
private Dovecot): 100 sessions at once (T_AUTH_CONCURRENCY), each its own
user and form (PLAIN/LOGIN, initial response or 334 challenges), a quarter
with wrong passwords, a fifth typing the login in upper case (Dovecot answers
with its canonical name, and the SQL passdb adds an empty field and
original_user=). Every reply must land on its own session: the right
ones get 235 and their mail through with a Received: header naming their own
user (a mix-up would name someone else), the wrong ones get 535, and the log
pairs each client address with its own user.

Runs against both Dovecot deployments (harness.variants): the passwd-file
passdb and the ISPmail guide's SQL passdb on a private MariaDB.

docs/dovecot-auth.md (multiplexing by id; failures come back late
and out of order)."""
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403
from dovecot import DEFAULT_USERS  # noqa: E402

PASSDB = variants(PASSDBS)

N = int(os.environ.get("T_AUTH_CONCURRENCY", "100"))
NUSERS = 30
raise_nofile(4096)

env, certs, sink = setup()
users = dict(DEFAULT_USERS)
PW = {}
for i in range(NUSERS):
    u = "user%02d@example.com" % i
    PW[u] = "pw-%02d-%s" % (i, os.urandom(3).hex())
    users[u] = (PW[u], "SSHA256", "")
PW["alice@example.com"] = "alice-secret"
dv = private_dovecot(env, PASSDB, failure_delay="0", users=users)

tp = free_port()
d = env.submitd(auth_config(certs, sink, dv.socket, ["127.0.0.1:%d tls" % tp], [
    ("workers", "1"),
    ("auth_failure_delay", "100ms"),
    ("auth_ip_failure_limit", "1000"),
    ("max_connections_per_ip", "1000"),
]))
ok(wait_dovecot_connected(d, 1), "submitd completed its Dovecot handshakes (one per worker)")

names = sorted(PW)
FORMS = ["plain-ir", "plain-334", "login", "login-ir"]
plan = []
for i in range(N):
    user = names[i % len(names)]
    wrong = i % 4 == 3
    pw = ("wrong-%d" % i) if wrong else PW[user]
    plan.append({"i": i, "user": user, "pw": pw, "wrong": wrong, "form": FORMS[(i // 4) % 4],
                 "login": user.upper() if i % 5 == 1 else user,
                 "ip": "127.0.%d.%d" % (3 + i // 250, 1 + i % 250)})

barrier = threading.Barrier(N, timeout=60)
MARK = "conc-%s" % os.urandom(3).hex()


def session(p):
    p["codes"] = []
    try:
        c = SMTPFrom(p["ip"], "127.0.0.1", tp, tls=True, certs=certs, timeout=60)
        c.ehlo()
        p["client"] = c
        barrier.wait()
        u, pw = p["login"], p["pw"]
        if p["form"] == "plain-ir":
            rs = [c.cmd("AUTH PLAIN " + plain_resp(u, pw))]
        elif p["form"] == "plain-334":
            rs = [c.cmd("AUTH PLAIN"), c.cmd(plain_resp(u, pw))]
        elif p["form"] == "login":
            rs = [c.cmd("AUTH LOGIN"), c.cmd(b64(u)), c.cmd(b64(pw))]
        else:
            rs = [c.cmd("AUTH LOGIN " + b64(u)), c.cmd(b64(pw))]
        p["codes"] = [r.code for r in rs]
        u = p["user"]  # what Dovecot answers
        if rs[-1].code == 235:
            subj = "%s %d %s" % (MARK, p["i"], u)
            out = c.send_message(u, ["rcpt@example.net"], stuff(make_message(subject=subj, frm=u)))
            p["mail"] = [r.code for r in out]
        else:
            p["mail"] = [c.cmd("MAIL FROM:<%s>" % u).code]
        c.cmd("QUIT")
        c.close()
    except Exception as e:  # noqa: BLE001
        p["error"] = repr(e)
        try:
            barrier.abort()
        except Exception:  # noqa: BLE001
            pass


t0 = time.time()
threads = [threading.Thread(target=session, args=(p,)) for p in plan]
for t in threads:
    t.start()
for t in threads:
    t.join(120)
dt = time.time() - t0
errors = [(p["i"], p["error"]) for p in plan if "error" in p]
is_(errors, [], "%d concurrent sessions ran without client errors (%.1f s)" % (N, dt))

want_final = lambda p: 535 if p["wrong"] else 235  # noqa: E731
bad = [(p["i"], p["form"], p["wrong"], p["codes"]) for p in plan
       if not p["codes"] or p["codes"][-1] != want_final(p)]
is_(bad, [], "every right password got 235 and every wrong one 535, on its own session")
steps = {"plain-ir": [], "plain-334": [334], "login": [334, 334], "login-ir": [334]}
bad = [(p["i"], p["codes"]) for p in plan if p["codes"][:-1] != steps[p["form"]]]
is_(bad, [], "every 334 challenge went to the session that asked (PLAIN/LOGIN, with and without IR)")
bad = [(p["i"], p.get("mail")) for p in plan if not p["wrong"] and p.get("mail") != [250, 250, 354, 250]]
is_(bad, [], "every logged-in session got its mail accepted")
bad = [(p["i"], p.get("mail")) for p in plan if p["wrong"] and p.get("mail") != [530]]
is_(bad, [], "every refused session stays unauthenticated (MAIL 530)")

ngood = sum(1 for p in plan if not p["wrong"])
sink.wait_count(ngood, 20)
msgs = sink.messages()
is_(len(msgs), ngood, "the sink has one message per logged-in session")
mixups = []
for m in msgs:
    mm = re.search((r"Subject: %s (\d+) (\S+)" % MARK).encode(), m.content)
    rec = first_header(m.content)
    au = re.search(r"\(Authenticated sender: (\S+)\)", rec)
    if not mm or not au or au.group(1) != mm.group(2).decode():
        mixups.append((mm.group(1) if mm else None, mm.group(2) if mm else None, rec[:200]))
is_(mixups, [], "each message's Received: names the user of the session that sent it")

log = d.log()
pairs = dict(re.findall(r"client=\[([\d.]+)\]:\d+, sasl_method=\w+, sasl_username=(\S+)", log))
bad = [(p["ip"], p["user"], pairs.get(p["ip"])) for p in plan if not p["wrong"] and pairs.get(p["ip"]) != p["user"]]
is_(bad, [], "log: each client address logged in as its own user")
fails = dict(re.findall(r"\[([\d.]+)\]:\d+: SASL \w+ authentication failed: login=<([^>]*)>", log))
bad = [(p["ip"], p["login"], fails.get(p["ip"])) for p in plan if p["wrong"] and fails.get(p["ip"]) != p["login"]]
is_(bad, [], "log: each failed login names its own client address and login")
is_(len(re.findall(r"dovecot auth: \S+: connected", log)), 1,
    "one worker, one Dovecot connection for all of it (never reconnected)")
unlike(dv.read_log(), r"(?i)\b(BUG|Panic|Fatal|duplicate|unknown id)\b", "Dovecot saw no protocol error")
leaked = [pw for pw in PW.values() if pw in log] + [p["pw"] for p in plan if p["wrong"] and p["pw"] + "," in log]
is_(leaked, [], "no password in the log")
done()
