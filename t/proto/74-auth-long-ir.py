#!/usr/bin/env python3
"""AUTH with a long initial response (RFC 4954 §4: up to 12288 octets of
base64; OAuth bearer tokens are often 2-8 KB) reaches Dovecot byte for
byte, on the AUTH command line and on a continuation line; one octet more is
refused with 500 5.5.6; other commands keep line_length_limit."""
import base64
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

env, certs, sink = setup()
fd = FakeDovecot(env.path("fake-auth.sock"), mechs=["PLAIN", "LOGIN", "OAUTHBEARER"]).start()
d = env.submitd(standard_config(certs, sink, [("workers", "1"), ("dovecot_auth_socket", fd.path),
                                              ("auth_failure_delay", "0"),
                                              ("auth_ip_failure_limit", "0")]))
ok(wait_dovecot_connected(d, 1), "submitd connected to the fake Dovecot")


def token(nb64):
    """A base64 string of exactly nb64 octets (nb64 a multiple of 4)."""
    raw = b"n,a=user@example.com,\x01auth=Bearer " + b"t" * (nb64 * 3 // 4)
    return base64.b64encode(raw[:nb64 * 3 // 4]).decode()


def resp_of(line):
    for p in line.split(b"\t"):
        if p.startswith(b"resp="):
            return p[5:].decode()
    return None


for n in (2048, 8192, 12288):
    c = client_from("127.0.0.1", d, "tls", certs)
    tok = token(n)
    mark = len(fd.received)
    r = c.cmd("AUTH OAUTHBEARER " + tok, timeout=10)
    ok(r.code is not None and r.code != 500,
       "AUTH OAUTHBEARER with a %d-octet initial response is not refused as too long (%s)"
       % (n, r.lines[0][:60]))
    lines = [l for _, l in fd.received[mark:] if l.startswith(b"AUTH\t")]
    ok(len(lines) == 1 and resp_of(lines[0]) == tok,
       "%d octets: Dovecot got the initial response byte for byte" % n)
    c.close()

# On a continuation line (after "334 ").
c = client_from("127.0.0.1", d, "tls", certs)
r = c.cmd("AUTH PLAIN")
is_(r.code, 334, "AUTH PLAIN without initial response: 334")
tok = token(12288)
mark = len(fd.received)
r = c.cmd(tok, timeout=10)
ok(r.code is not None and r.code != 500, "a 12288-octet continuation line is taken (%s)" % r.lines[0][:60])
ok(any(l.split(b"\t")[-1].decode() == tok for _, l in fd.received[mark:] if l.startswith(b"CONT\t")),
   "and reaches Dovecot byte for byte")
c.close()

# One base64 quantum more: refused before Dovecot.
c = client_from("127.0.0.1", d, "tls", certs)
mark = len(fd.received)
r = c.cmd("AUTH OAUTHBEARER " + token(12292), timeout=10)
ok(r.code == 500 and r.enhanced == "5.5.6", "12292 octets: 500 5.5.6 (%s)" % r)
ok(not any(l.startswith(b"AUTH\t") for _, l in fd.received[mark:]), "and nothing sent to Dovecot")
is_(c.cmd("NOOP").code, 250, "the session stays in step")
r = c.cmd("NOOP " + "x" * 5000)
ok(r.code == 500 and r.enhanced == "5.5.2", "other commands keep line_length_limit: 500 5.5.2 (%s)" % r)
is_(c.cmd("NOOP").code, 250, "in step")
c.close()
done()
