#!/usr/bin/env python3
"""A hold made while a message is in its END-OF-MESSAGE steps still stops
that message (issue 14; src/session.c session_relay_end()):

  - check_policy_service is asked at END-OF-MESSAGE and sits on its answer
    (a policy daemon that waits until told; a real one will not stall on
    demand); meanwhile `submitctl hold` holds the login; the daemon then
    says DUNNO: the end of DATA gets 554 5.7.1 and the downstream gets no
    message (no final dot);
  - the same with DKIM signing configured (the re-check runs after the
    signature, right before the final dot);
  - a kick in the same window: 421 4.7.1, nothing delivered;
  - without a hold the same slow answer delivers the message once.
"""
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import harness  # noqa: E402
from harness import *  # noqa: E402,F401,F403
import dkimtest  # noqa: E402
import txn  # noqa: E402

if os.geteuid() != 0 or not os.access(os.environ.get("DOVECOT", "/usr/sbin/dovecot"), os.X_OK):
    skip_all("needs root and dovecot-core (scripts/deps.sh)")
why = dkimtest.missing()
if why:
    skip_all(why)

env = Env()
env.require_binary()
os.chmod(env.dir, 0o711)
certs = env.certs()
USERS = ["alice", "bob", "carol", "dave"]
PW = {"%s@example.org" % u: "%s-secret" % u for u in USERS}
dv = private_dovecot(env, "passwd-file", users={k: (v, "SSHA256", "") for k, v in PW.items()},
                     failure_delay="0")
sink = env.sink()
sock = env.path("control.sock")


class SlowPolicy:
    """Answers DUNNO at once at RCPT; at END-OF-MESSAGE only once go is set."""

    def __init__(self):
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        self.waiting = threading.Event()
        self.go = threading.Event()
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self.one, args=(c,), daemon=True).start()

    def one(self, c):
        data = b""
        while b"\n\n" not in data:
            b = c.recv(4096)
            if not b:
                c.close()
                return
            data += b
        if b"protocol_state=END-OF-MESSAGE" in data:
            self.waiting.set()
            self.go.wait(20)
        c.sendall(b"action=DUNNO\n\n")
        c.close()


pol = SlowPolicy()
harness._cleanups.append(pol.srv.close)


def ctl(*args):
    return txn.submitctl(env, sock, *args)


def eom_then(d, user, action):
    """user's whole message is sent; while the policy daemon sits on
    END-OF-MESSAGE, action runs; then the daemon answers. Returns (final
    reply, client, messages the downstream got)."""
    pol.waiting.clear()
    pol.go.clear()
    before = sink.count()
    c, r = txn.login(d, certs, user, PW[user])
    is_(r.code, 235, "%s: AUTH" % user)
    is_(c.cmd("MAIL FROM:<%s>" % user).code, 250, "%s: MAIL" % user)
    is_(c.cmd("RCPT TO:<eom@example.net>").code, 250, "%s: RCPT" % user)
    is_(c.cmd("DATA").code, 354, "%s: DATA" % user)
    c.send(stuff(make_message(subject="eom", frm=user)))
    ok(pol.waiting.wait(10), "%s: the policy daemon was asked at END-OF-MESSAGE" % user)
    if action is not None:
        st, out = action()
        ok(st == 0, "%s: the control command ran" % user, out)
    pol.go.set()
    fin = c.reply()
    time.sleep(0.5)
    return fin, c, sink.count() - before


def run(d, tag):
    fin, c, got = eom_then(d, "alice@example.org", lambda: ctl("hold", "alice@example.org", "stolen"))
    ok(fin.code == 554 and fin.enhanced == "5.7.1" and "sending is suspended" in fin.text,
       "%s: held during END-OF-MESSAGE: 554 5.7.1" % tag, str(fin))
    is_(got, 0, "%s: held during END-OF-MESSAGE: the downstream got nothing" % tag)
    c.close()
    is_(ctl("release", "alice@example.org")[0], 0, "%s: released" % tag)
    fin, c, got = eom_then(d, "bob@example.org", lambda: ctl("kick", "bob@example.org"))
    ok(fin.code == 421 and fin.enhanced == "4.7.1", "%s: kicked during END-OF-MESSAGE: 421 4.7.1" % tag,
       str(fin))
    is_(got, 0, "%s: kicked during END-OF-MESSAGE: the downstream got nothing" % tag)
    fin, c, got = eom_then(d, "carol@example.org", None)
    ok(fin.code == 250, "%s: not held: the slow answer delivers the message" % tag, str(fin))
    is_(got, 1, "%s: once" % tag)
    c.close()


conf = [("check_policy_service", "inet:127.0.0.1:%d" % pol.port), ("policy_service_timeout", "30s"),
        ("control_socket", sock)]
d = txn.start(env, certs, dv, sink, conf, "submitd-eom")
run(d, "policy")
d.stop()

keys = dkimtest.Keys(env.subdir("keys"))
keys.ed("e1")
kt = env.path("KeyTable")
with open(kt, "w") as f:
    f.write("ed example.org:e1:%s\n" % keys.path["e1"])
st = env.path("SigningTable")
with open(st, "w") as f:
    f.write("*@example.org ed\n")
d = txn.start(env, certs, dv, sink, conf + [
    ("dkim_key_table", kt), ("dkim_signing_table", "refile:" + st),
    ("dkim_temp_directory", env.subdir("hold")),
    ("sender_login_maps", "inline:{ alice@example.org=alice@example.org, "
     "bob@example.org=bob@example.org, carol@example.org=carol@example.org }")], "submitd-eom-dkim")
run(d, "dkim")
ok(d.wait_log(r"dkim: signed, d=example\.org, s=e1", 5), "dkim: the delivered message was signed")
d.stop()
done()
