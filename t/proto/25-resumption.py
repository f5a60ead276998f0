#!/usr/bin/env python3
"""TLS session resumption (RFC 8446 §4.6.1): a mail program that reconnects
with the ticket it got resumes without a full handshake, over implicit TLS
and over STARTTLS, and the session then works as any other. A ticket from
before a reload is not accepted afterwards (a new key per configuration
snapshot), and the client falls back to a full handshake."""
import os
import signal
import socket
import ssl
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

env, certs, sink = setup()
d = env.submitd(standard_config(certs, sink, extra=[("workers", "2")]), name="submitd-resume")

ctx = certs.client_context()


def tls_session(mode, session=None):
    """Connects, greets, says EHLO (and STARTTLS), returns (sock, reused, session)."""
    host, port = d.addr(mode)
    raw = socket.create_connection((host, port), timeout=10)
    f = None
    if mode == "tls":
        s = ctx.wrap_socket(raw, server_hostname=MYHOST, session=session)
        f = s.makefile("rb")
        f.readline()
    else:
        f = raw.makefile("rb")
        f.readline()
        raw.sendall(b"EHLO x\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        raw.sendall(b"STARTTLS\r\n")
        f.readline()
        s = ctx.wrap_socket(raw, server_hostname=MYHOST, session=session)
        f = s.makefile("rb")
    s.sendall(b"EHLO x\r\n")
    while True:
        line = f.readline()
        if line.startswith(b"250 ") or not line:
            break
    # TLS 1.3 tickets arrive after the handshake; the EHLO exchange above
    # has read past them.
    return s, f, s.session_reused, s.session


for mode in ("tls", "starttls"):
    s, f, reused, sess = tls_session(mode)
    ok(not reused, "%s: the first connection makes a full handshake" % mode)
    ok(sess is not None and sess.has_ticket, "%s: the server hands out a session ticket" % mode)
    s.close()
    s, f, reused, _ = tls_session(mode, sess)
    ok(reused, "%s: a reconnect with the ticket resumes the session" % mode)
    s.sendall(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
    codes = [f.readline()[:3] for _ in range(3)]
    s.sendall(stuff(make_message(subject="resumed " + mode)))
    codes.append(f.readline()[:3])
    is_(codes, [b"250", b"250", b"354", b"250"], "%s: a resumed session delivers" % mode)
    s.close()
ok(sink.wait_count(2) and sink.count() == 2, "both messages stored")

# After a reload the old ticket is refused: full handshake, still works.
s, f, reused, sess = tls_session("tls")
s.close()
os.kill(d.proc.pid, signal.SIGHUP)
ok(d.wait_log(r"reload", 5), "reloaded")
time.sleep(0.5)
s, f, reused, _ = tls_session("tls", sess)
ok(not reused, "after a reload, a ticket from before is not honoured (new key)")
s.sendall(b"NOOP\r\n")
like(f.readline().decode(), r"^250 ", "... and the full handshake works")
s.close()
d.stop()
done()
