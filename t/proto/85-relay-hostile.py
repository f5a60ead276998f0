#!/usr/bin/env python3
"""A hostile downstream (issue 5): the relay's reply parser and state machine
survive oversized, truncated and interleaved replies, and plaintext injected
after STARTTLS's 220 is discarded (the client-side twin of CVE-2011-0411,
docs/design.md §7, docs/design.md invariant 6). Whatever the relay does, the
client never gets a 250 the relay did not give for its own end of data
(invariant 2), and submitd keeps running."""
import os
import socket
import ssl
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

env = Env()
env.require_binary()
certs = env.certs()


class Fake:
    """One scenario per instance: script(conn) talks to submitd."""

    def __init__(self, script):
        self.script = script
        self.port = free_port()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(8)
        self.seen = []        # lines received from submitd
        self.delivered = 0
        accept_loop(self.sock, self.one)

    def one(self, c):
        c.settimeout(10)
        try:
            self.script(self, c)
        except (OSError, ssl.SSLError, ValueError):
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def line(self, c, buf):
        while b"\r\n" not in buf[0]:
            d = c.recv(65536)
            if not d:
                raise ValueError("eof")
            buf[0] += d
        l, buf[0] = buf[0].split(b"\r\n", 1)
        self.seen.append(l)
        return l

    def session(self, c, buf, ehlo_reply=b"250-fake\r\n250 8BITMIME\r\n"):
        """A normal transaction after the greeting; returns at QUIT/EOF."""
        while True:
            l = self.line(c, buf).upper()
            if l.startswith(b"EHLO") or l.startswith(b"LHLO"):
                c.sendall(ehlo_reply)
            elif l.startswith(b"DATA"):
                c.sendall(b"354 go\r\n")
                while self.line(c, buf) != b".":
                    pass
                self.delivered += 1
                c.sendall(b"250 2.0.0 queued\r\n")
            elif l.startswith(b"QUIT"):
                c.sendall(b"221 bye\r\n")
                return
            else:
                c.sendall(b"250 2.0.0 ok\r\n")


def run(fake, name, extra=()):
    d = env.submitd(standard_config(certs, None, [("relayhost", "[127.0.0.1]:%d" % fake.port),
                                                  ("relay_timeout", "3s")] + list(extra)),
                    name=name)
    c = client(d, "plain", certs)
    out = c.send_message("a@example.com", ["b@example.net"], stuff(make_message(subject=name)))
    c.close()
    return d, out


def never_250(out):
    return not (len(out) == 4 and out[-1].code == 250)


# oversized greeting line
def oversized(f, c):
    c.sendall(b"220 " + b"x" * 100000 + b"\r\n")
    f.line(c, [b""])


fk = Fake(oversized)
d, out = run(fk, "oversized")
ok(any(x.code == 451 for x in out) and never_250(out), "oversized reply line: 451, no 250",
   [str(x) for x in out])
like(d.log(), r"malformed or oversized reply", "logged as malformed")
ok(d.running(), "submitd survived")
d.stop()


# too many lines in one reply
def manylines(f, c):
    buf = [b""]
    c.sendall(b"220 hi\r\n")
    f.line(c, buf)
    c.sendall(b"250-x\r\n" * 5000 + b"250 end\r\n")
    f.line(c, buf)


fk = Fake(manylines)
d, out = run(fk, "manylines")
ok(any(x.code == 451 for x in out) and never_250(out), "5000-line EHLO reply: 451, no 250",
   [str(x) for x in out])
d.stop()


# truncated reply, then the connection closes
def truncated(f, c):
    buf = [b""]
    c.sendall(b"220 hi\r\n")
    f.line(c, buf)
    c.sendall(b"250-fake\r\n250-PIPE")


fk = Fake(truncated)
d, out = run(fk, "truncated")
ok(any(x.code == 451 and x.enhanced == "4.4.1" for x in out) and never_250(out),
   "truncated EHLO reply then EOF: 451 4.4.1", [str(x) for x in out])
d.stop()


# truncated end-of-data reply: the message may or may not be there
def truncated_dot(f, c):
    buf = [b""]
    c.sendall(b"220 hi\r\n")
    while True:
        l = f.line(c, buf).upper()
        if l.startswith(b"DATA"):
            c.sendall(b"354 go\r\n")
            while f.line(c, buf) != b".":
                pass
            c.sendall(b"250 2.0.0 qu")
            return
        c.sendall(b"250 ok\r\n")


fk = Fake(truncated_dot)
d, out = run(fk, "truncated-dot")
ok(out[-1].code == 451 and out[-1].enhanced == "4.4.2",
   "half a 250 to the dot, then EOF: 451 4.4.2, not 250", [str(x) for x in out])
d.stop()


# interleaved: an extra reply nobody asked for, which would answer MAIL
def interleaved(f, c):
    buf = [b""]
    c.sendall(b"220 hi\r\n")
    f.line(c, buf)
    c.sendall(b"250 fake\r\n250 2.1.0 not your MAIL reply\r\n")
    f.session(c, buf)


fk = Fake(interleaved)
d, out = run(fk, "interleaved")
ok(any(x.code == 451 for x in out) and never_250(out),
   "unsolicited reply after EHLO: refused, never taken as the MAIL reply", [str(x) for x in out])
like(d.log(), r"unsolicited data after a reply", "logged")
is_(fk.delivered, 0, "nothing delivered")
d.stop()


# plaintext injected right after STARTTLS's 220 is discarded
def injected(f, c):
    buf = [b""]
    c.sendall(b"220 hi\r\n")
    f.line(c, buf)
    c.sendall(b"250-fake\r\n250 STARTTLS\r\n")
    l = f.line(c, buf)
    if l.upper() != b"STARTTLS":
        return
    # the 220 and a forged EHLO reply (no STARTTLS) in one segment
    c.sendall(b"220 go ahead\r\n250-forged\r\n250 AUTH PLAIN\r\n")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.fullchain, certs.key)
    t = ctx.wrap_socket(c, server_side=True)
    f.tls = True
    f.session(t, [b""], ehlo_reply=b"250-after-tls\r\n250 8BITMIME\r\n")


fk = Fake(injected)
fk.tls = False
d, out = run(fk, "injected", [("relay_tls_security_level", "encrypt")])
is_([x.code for x in out], [250, 250, 354, 250],
    "STARTTLS with injected plaintext: the injection is ignored, TLS and delivery proceed")
ok(fk.tls and fk.delivered == 1, "delivered over TLS")
# every connection (the workers' probes too): EHLO, STARTTLS, EHLO again
ehlos = sum(1 for l in fk.seen if l.upper().startswith(b"EHLO"))
starttls = sum(1 for l in fk.seen if l.upper() == b"STARTTLS")
ok(starttls > 0 and ehlos == 2 * starttls, "EHLO sent again after TLS on every connection "
   "(RFC 3207 §4.2)", (ehlos, starttls))
d.stop()

done()
