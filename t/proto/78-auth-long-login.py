#!/usr/bin/env python3
"""A hostile login that makes Dovecot's reply longer than any line limit
(Dovecot echoes the login in user=, escaped: 9000 TABs come back as 36 KB)
must fail only that login, and be counted and logged as a failure: it may
not drop the Dovecot connection (every login in flight would get 454 and go
uncounted, and everyone's AUTH on that worker would be down) — invariants
4, 9 and 12. Runs against both Dovecot deployments."""
import base64
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

PASSDB = variants(PASSDBS)
ALICE, ALICE_PW = "alice@example.com", "alice-secret"

env, certs, sink = setup()
dv = private_dovecot(env, PASSDB, failure_delay="1 secs")
d = env.submitd(standard_config(certs, sink) + [
    ("mynetworks", "127.0.0.1/32"),
    ("client_limit_exceptions", ""),
    ("workers", "1"),
    ("dovecot_auth_socket", dv.socket),
    ("auth_failure_delay", "0"),
    ("auth_max_failures", "100"),
    ("auth_ip_failure_limit", "3"),
])
ok(wait_dovecot_connected(d, 1), "submitd connected to Dovecot")


def auth(source, user, password, out, key):
    c = client_from(source, d, "tls", certs)
    r = c.cmd("AUTH PLAIN " + base64.b64encode(("\0%s\0%s" % (user, password)).encode()).decode(),
              timeout=30)
    out[key] = r.code
    c.close()


long_login = "\t" * 9000
for src in ("127.0.0.21", "127.0.0.22"):
    out = {}
    threads = [threading.Thread(target=auth, args=(src, long_login, "x", out, "long")),
               threading.Thread(target=auth, args=("127.0.0.1", ALICE, ALICE_PW, out, "alice"))]
    threads[0].start()
    time.sleep(0.2)
    threads[1].start()
    for t in threads:
        t.join(60)
    is_(out.get("long"), 535, "%s: a login whose echo is over-long: 535 (a failure, not a 454)" % src)
    is_(out.get("alice"), 235, "%s: a login in flight meanwhile is not hurt" % src)
like(d.log(), r"over-long FAIL, read as a failure", "the over-long reply is logged as what it is")
unlike(d.log(), r"dovecot auth: .*(protocol error|connection closed)", "the Dovecot connection was never dropped")

# Counted: three failures from one address block it (auth_ip_failure_limit = 3).
out = {}
for i in range(3):
    auth("127.0.0.23", long_login, "x", out, i)
auth("127.0.0.23", ALICE, ALICE_PW, out, "after")
is_([out[i] for i in range(3)], [535, 535, 535], "three over-long failures from 127.0.0.23")
is_(out["after"], 454, "are counted: the address is blocked, the right password then gets 454")

done()
