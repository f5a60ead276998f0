#!/usr/bin/env python3
"""check_policy_service (issue 14; src/policy/policy_service.h): a real
postfwd, started privately, decides transactions the way it would behind
Postfix:

  - REJECT at RCPT -> 554 5.7.1 with postfwd's text ("REJECT 5.7.26 text"
    -> 554 5.7.26 text, the code once); DEFER_IF_PERMIT ->
    450 4.7.1; "550 5.1.1 text" -> as given; postfwd's rate() limit ->
    its 450 after two recipients; a REJECT at END-OF-MESSAGE refuses the
    message, which the downstream never gets (no final dot);
  - other logins and recipients pass (DUNNO) and are delivered;
  - postfwd gone: policy_service_default_action DEFER -> 451 4.3.5, DUNNO
    -> mail flows, and a warning is logged;
  - a hostile daemon (an action submitd cannot take, an endless answer,
    no answer at all): the default action, within policy_service_timeout,
    while another session is served.
"""
import os
import shutil
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import harness  # noqa: E402
from harness import *  # noqa: E402,F401,F403
import txn  # noqa: E402

POSTFWD = shutil.which("postfwd1", path=os.environ.get("PATH", "") + ":/usr/sbin")
if os.geteuid() != 0 or not POSTFWD or not os.access(os.environ.get("DOVECOT", "/usr/sbin/dovecot"), os.X_OK):
    skip_all("needs root, postfwd and dovecot-core (scripts/deps.sh)")

env = Env()
env.require_binary()
os.chmod(env.dir, 0o711)
certs = env.certs()
PW = {u + "@example.com": u + "-secret" for u in ("alice", "bob", "carol", "dave")}
dv = private_dovecot(env, "passwd-file", users={k: (v, "SSHA256", "") for k, v in PW.items()},
                     failure_delay="0")
sink = env.sink()

# ------------------------------------------------------------ postfwd
pdir = env.path("postfwd")
os.makedirs(pdir)
os.chmod(pdir, 0o777)   # it drops to nobody and writes its pid file here
rules = os.path.join(pdir, "postfwd.cf")
with open(rules, "w") as f:
    f.write("""# written by t/proto/56-policy-service.py
id=R1; protocol_state==RCPT; sasl_username==bob@example.com; action=REJECT bob may not send
id=R2; protocol_state==RCPT; recipient==deferme@example.net; action=DEFER_IF_PERMIT try later
id=R3; protocol_state==RCPT; recipient==gone@example.net; action=550 5.1.1 no such user here
id=RATE; protocol_state==RCPT; sasl_username==carol@example.com; action=rate(sasl_username/2/3600/450 4.7.1 carol over her rate)
id=EOM; protocol_state==END-OF-MESSAGE; sasl_username==dave@example.com; action=REJECT dave is done for today
id=R4; protocol_state==RCPT; recipient==dsn@example.net; action=REJECT 5.7.26 its own enhanced code
id=DEF; action=DUNNO
""")
pport = free_port()
pidfile = os.path.join(pdir, "postfwd.pid")


def postfwd_start():
    st, out = run([POSTFWD, "-d", "-f", rules, "-i", "127.0.0.1", "-p", str(pport), "-u", "nobody",
                   "-g", "nogroup", "--pidfile", pidfile, "-l", "postfwd-submitd-test"])
    up = wait_port("127.0.0.1", pport, 10)
    if not up:
        print("Bail out! postfwd did not start: %s" % out, flush=True)
        done()


def postfwd_stop():
    try:
        pid = int(open(pidfile).read().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    wait_for(lambda: not os.path.exists("/proc/%d" % pid) or
             open("/proc/%d/stat" % pid).read().split()[2] == "Z", 10)


harness._cleanups.append(postfwd_stop)
postfwd_start()


def start(policy, name, extra=()):
    return txn.start(env, certs, dv, sink, [("check_policy_service", policy)] + list(extra), name)


def login(d, user):
    c, r = txn.login(d, certs, user, PW[user])
    if r.code != 235:
        raise AssertionError("AUTH %s: %s" % (user, r))
    return c


def delivered_to(addr):
    return sum(1 for m in sink.messages() if addr in m.rcpts)


d = start("inet:127.0.0.1:%d" % pport, "submitd-postfwd")
a = login(d, "alice@example.com")
rm, rr, fin = txn.send(a, "alice@example.com", ["ok1@example.net", "deferme@example.net", "gone@example.net"], "policy")
is_([r.code for r in rr], [250, 450, 550], "alice: DUNNO, DEFER_IF_PERMIT, 550 from postfwd")
like(str(rr[1]), r"^450 4\.7\.1 try later", "DEFER_IF_PERMIT -> 450 4.7.1 with postfwd's text")
like(str(rr[2]), r"^550 5\.1\.1 no such user here", "a numeric action keeps its code and enhanced code")
ok(fin is not None and fin.code == 250, "alice's message goes to the accepted one", str(fin))
is_(delivered_to("ok1@example.net"), 1, "delivered")
is_(delivered_to("deferme@example.net") + delivered_to("gone@example.net"), 0, "the refused recipients were not")
unlike(sink.log(), r"deferme@|gone@", "the downstream never heard of them")
a.close()

a = login(d, "alice@example.com")
a.cmd("MAIL FROM:<alice@example.com>")
r = a.cmd("RCPT TO:<dsn@example.net>")
ok(r.code == 554 and r.enhanced == "5.7.26" and str(r).startswith("554 5.7.26 its own enhanced code"),
   "REJECT with an enhanced code: 554 and the daemon's code once", str(r))
a.close()

b = login(d, "bob@example.com")
rm, rr, fin = txn.send(b, "bob@example.com", ["ok2@example.net"], "policy")
ok(rr and rr[0].code == 554 and rr[0].enhanced == "5.7.1" and "bob may not send" in str(rr[0]),
   "bob: postfwd's REJECT -> 554 5.7.1 with its text", str(rr))
is_(delivered_to("ok2@example.net"), 0, "nothing of bob's delivered")
b.close()

c = login(d, "carol@example.com")
codes = [txn.send(c, "carol@example.com", ["c%d@example.net" % i], "policy")[1][0].code for i in range(3)]
is_(codes, [250, 250, 450], "carol: postfwd's rate() lets two recipients through, then 450")
c.close()

dd = login(d, "dave@example.com")
before = sink.count()
rm, rr, fin = txn.send(dd, "dave@example.com", ["dave1@example.net"], "policy")
ok(rr[0].code == 250 and fin is not None and fin.code == 554 and "dave is done for today" in str(fin),
   "dave: REJECT at END-OF-MESSAGE refuses the message", str(fin))
is_(sink.count(), before, "the downstream did not get it")
ok(wait_for(lambda: "abort: connection closed during DATA" in sink.log(), 5),
   "the downstream transaction was abandoned without the final dot", sink.log()[-600:])
is_(dd.cmd("NOOP").code, 250, "dave's session goes on")
dd.close()
ok(d.wait_idle(), "every session ended")

# ------------------------------------------------------------ postfwd gone
postfwd_stop()
a = login(d, "alice@example.com")
r = a.cmd("MAIL FROM:<alice@example.com>")
r = a.cmd("RCPT TO:<x@example.net>")
ok(r.code == 451 and r.enhanced == "4.3.5", "postfwd down, default DEFER: 451 4.3.5", str(r))
a.close()
like(d.log(), r"policy service inet:127\.0\.0\.1:%d: .*default action DEFER" % pport, "a warning names the daemon")
d.stop()
d = start("inet:127.0.0.1:%d" % pport, "submitd-dunno", [("policy_service_default_action", "DUNNO")])
a = login(d, "alice@example.com")
rm, rr, fin = txn.send(a, "alice@example.com", ["dunno@example.net"], "policy")
ok(fin is not None and fin.code == 250, "postfwd down, default DUNNO: mail flows", str(fin or rr or rm))
a.close()
d.stop()


# ------------------------------------------------------------ a hostile daemon
class Fake:
    def __init__(self, answer):
        self.answer = answer
        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        self.s.listen(16)
        self.port = self.s.getsockname()[1]
        self.conns = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.s.accept()
            except OSError:
                return
            self.conns.append(c)
            buf = b""
            while b"\n\n" not in buf:
                x = c.recv(4096)
                if not x:
                    break
                buf += x
            if self.answer is not None:
                try:
                    c.sendall(self.answer)
                except OSError:
                    pass


for answer, what in ((b"action=HOLD suspicious\n\n", "an action with no queue (HOLD)"),
                     (b"action=" + b"x" * 10000, "an answer that never ends"),
                     (b"action=OK\naction=REJECT\n\n", "two actions"),
                     (b"action=REJECT \x1b[31mred\n\n", "a control byte"),
                     (None, "no answer at all")):
    fake = Fake(answer)
    d = start("inet:127.0.0.1:%d" % fake.port, "submitd-hostile", [("policy_service_timeout", "1s")])
    a = login(d, "alice@example.com")
    a.cmd("MAIL FROM:<alice@example.com>")
    t0 = time.time()
    a.send("RCPT TO:<x@example.net>\r\n")
    other = client(d, "tls", certs)
    is_(other.cmd("NOOP").code, 250, "%s: another session is served meanwhile" % what)
    other.close()
    r = a.reply()
    el = time.time() - t0
    ok(r.code == 451 and r.enhanced == "4.3.5" and el < 3, "%s: the default action, 451 4.3.5 (%.1f s)" % (what, el), str(r))
    a.close()
    d.stop()
    fake.s.close()

done()
