#!/usr/bin/env python3
"""A login whose client left is kept until Dovecot answers (so it is still
logged and counted), but a worker keeps at most 256 of them: past that
(clients exempt from the per-address budget, client_limit_exceptions, that
hang up after AUTH) the request is cancelled and the attempt logged as
failed at once, so memory and Dovecot's work stay bounded (invariant 5).
Against a fake Dovecot that never answers."""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

env, certs, sink = setup()
fd = FakeDovecot(env.path("fake-auth.sock")).start()
fd.mode = "silent"
d = env.submitd(standard_config(certs, sink) + [
    ("workers", "1"),
    ("dovecot_auth_socket", fd.path),
    ("auth_timeout", "60s"),
    ("mynetworks", "127.0.0.1/32"),   # exempt from the budget: no per-address bound
])
ok(wait_dovecot_connected(d, 1), "submitd connected to the fake Dovecot")

N = 300
resp = plain_resp("alice@example.com", "wrong")
for i in range(N):
    c = client(d, "tls", certs)
    c.send("AUTH PLAIN %s\r\n" % resp)
    wait_for(lambda: len(fd.auth_lines()) > i, 5, 0.005)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    c.close()
ok(wait_for(lambda: len(fd.auth_lines()) >= N, 10), "%d logins reached Dovecot, each client gone at once" % N)
cancels = lambda: len(fd.lines("CANCEL"))  # noqa: E731
ok(wait_for(lambda: cancels() >= N - 256, 10), "past 256 kept per worker, the rest are cancelled "
   "(%d CANCEL)" % cancels())
time.sleep(0.5)
is_(cancels(), N - 256, "exactly those: 256 are still awaited")
failed = lambda: d.log().count("authentication failed")  # noqa: E731
is_(failed(), N - 256, "the cancelled ones are logged as failed logins at once")
ok(d.running(), "submitd is fine")
done()
