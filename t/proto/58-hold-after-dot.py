#!/usr/bin/env python3
"""A hold or a kick made after the downstream got the final dot never turns
the downstream's acceptance into a refusal (docs/limits.md; src/session.c
session_relay_end()): the client hears the downstream's 250, the message is
delivered once, and only the next command meets the hold or the kick
(421: a held login's open session ends there). A 554 to the final dot
would make the client send the accepted message again.

The sink answers the final dot 3 s late; the hold and the kick are made
with submitctl in that window."""
import os
import sys
import threading
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
sock = env.path("control.sock")
sink = env.sink("--delay-data", "3")
d = txn.start(env, certs, dv, sink, [
    ("hold_client_addresses", "none"), ("hold_refused_recipients", "none"), ("hold_burst", "none"),
    ("control_socket", sock)], "submitd-after-dot")


def ctl(*args):
    return txn.submitctl(env, sock, *args)


for user, verbs, nxt in (("alice@example.com", [("hold", "after the dot")], 421),
                         ("bob@example.com", [("kick",)], 421)):
    c, r = txn.login(d, certs, user, PW[user])
    is_(r.code, 235, "%s logged in" % user)
    before = len(sink.messages())
    out = {}
    th = threading.Thread(target=lambda: out.update(r=txn.send(c, user, ["x@example.net"], tag=user)))
    th.start()
    ok(wait_for(lambda: "delay" in sink.log() or len(sink.log()) > 0, 5), "sink running")
    time.sleep(1.5)  # the final dot is downstream; its answer comes 3 s after it
    for v in verbs:
        st, o = ctl(v[0], user, *v[1:])
        ok(st == 0, "submitctl %s %s while the downstream holds the final dot" % (v[0], user), o)
    th.join(30)
    final = out.get("r", (None, None, None))[2]
    ok(final is not None and final.code == 250, "%s: the downstream's 250 is what the client hears" % user,
       str(final))
    ok(wait_for(lambda: len(sink.messages()) == before + 1, 5), "%s: delivered once" % user)
    rm = c.cmd("MAIL FROM:<%s>" % user)
    ok(rm.code == nxt, "%s: the next MAIL meets the %s" % (user, verbs[0][0]), str(rm))
    c.close()
d.stop()
done()
