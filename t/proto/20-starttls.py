#!/usr/bin/env python3
"""STARTTLS (RFC 3207) and implicit TLS (RFC 8314): plaintext command
injection (CVE-2011-0411), state reset after the handshake, capability
lists before/after TLS, second STARTTLS, arguments, TLS versions, garbage
in place of a handshake."""
import os
import socket
import ssl
import sys
import time
import warnings

warnings.simplefilter("ignore", DeprecationWarning)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

env, certs, sink = setup()
d = env.submitd(standard_config(certs, sink))
sh, sp = d.addr("starttls")
th, tp = d.addr("tls")


def caps(r):
    return [l[4:].split()[0].upper() for l in r.lines[1:] if len(l) > 4]


# -- capabilities before / after TLS
c = SMTP(sh, sp, certs=certs)
like(str(c.greeting), r"^220 mail\.test\.example\b", "starttls listener: plaintext 220 greeting")
r = c.ehlo()
ok("STARTTLS" in caps(r), "EHLO before TLS offers STARTTLS", caps(r))
ok("AUTH" not in caps(r), "EHLO before TLS does not offer AUTH", caps(r))
r = c.cmd("MAIL FROM:<a@example.com>")
ok(r.code == 530 and r.enhanced == "5.7.0", "MAIL before STARTTLS on a starttls listener: 530 5.7.0",
   str(r))
r = c.cmd("STARTTLS now")
is_(r.code, 501, "STARTTLS with arguments: 501")
r = c.starttls()
is_(r.code, 220, "STARTTLS: 220")
like(str(r), r"^220 2\.0\.0", "STARTTLS: 220 2.0.0")
ok(c.tls and c.sock.version() in ("TLSv1.2", "TLSv1.3"), "handshake done (%s)" %
   (c.sock.version() if c.tls else None))
r = c.cmd("MAIL FROM:<a@example.com>")
is_(r.code, 503, "after TLS, MAIL before EHLO: 503 (state reset)")
r = c.ehlo()
is_(r.code, 250, "EHLO after TLS")
ok("STARTTLS" not in caps(r), "after TLS, STARTTLS is no longer offered", caps(r))
r = c.cmd("STARTTLS")
ok(r.code == 554 and r.enhanced == "5.5.1", "second STARTTLS: 554 5.5.1", str(r))
out = c.send_message("a@example.com", ["b@example.net"], stuff(make_message(subject="after-tls")))
is_([x.code for x in out], [250, 250, 354, 250], "transaction after STARTTLS")
c.cmd("QUIT")
c.close()

# -- STARTTLS state reset: transaction before TLS is forgotten
c = SMTP(sh, sp, certs=certs)
c.ehlo("before.test.example")
c.starttls()
c.ehlo("after.test.example")
r = c.cmd("RCPT TO:<b@example.net>")
is_(r.code, 503, "RCPT right after TLS+EHLO: 503 (no transaction carried over)")
c.close()

# -- CVE-2011-0411: plaintext pipelined after STARTTLS is discarded
INJECT = [
    ("NOOP", b"NOOP\r\n"),
    ("RSET", b"RSET\r\n"),
    ("MAIL FROM", b"MAIL FROM:<injected@example.com>\r\n"),
    ("EHLO", b"EHLO injected.example\r\n"),
    ("MAIL+RCPT", b"MAIL FROM:<injected@example.com>\r\nRCPT TO:<victim@example.net>\r\n"),
]
for label, inj in INJECT:
    c = SMTP(sh, sp, certs=certs)
    c.ehlo("client.test.example")
    c.send(b"STARTTLS\r\n" + inj)
    r = c.reply()
    is_(r.code, 220, "injection %s: STARTTLS 220" % label)
    extra = bytes(c.buf)
    is_(extra, b"", "injection %s: nothing answered in plaintext after 220" % label)
    c.buf.clear()
    try:
        c._wrap(MYHOST)
        ok(True, "injection %s: TLS handshake succeeds" % label)
    except (ssl.SSLError, OSError) as e:
        ok(False, "injection %s: TLS handshake succeeds" % label, repr(e))
        c.close()
        continue
    early = c.pending(0.5)
    is_(early, b"", "injection %s: no reply to the injected command after TLS" % label)
    r = c.ehlo("real.test.example")
    ok(r.code == 250 and r.lines[0].startswith("250-mail.test.example") or
       r.lines == ["250 mail.test.example"] or r.lines[0].startswith("250 mail.test.example"),
       "injection %s: first reply after TLS answers our EHLO" % label, str(r))
    r = c.cmd("RCPT TO:<victim@example.net>")
    is_(r.code, 503, "injection %s: no transaction from the injected command" % label)
    r = c.cmd("NOOP")
    is_(r.code, 250, "injection %s: replies in step (NOOP 250)" % label)
    is_(c.pending(0.3), b"", "injection %s: nothing left over" % label)
    c.close()
is_(sink.count(), 1, "nothing from the injected commands reached the downstream")

# -- STARTTLS on a listener without TLS
c = SMTP(*d.addr("plain"))
r = c.ehlo()
ok("STARTTLS" not in caps(r), "plain listener does not offer STARTTLS", caps(r))
r = c.cmd("STARTTLS")
ok(r.code != 220, "STARTTLS on the plain listener is refused", str(r))
c.close()

# -- implicit TLS: no plaintext greeting; greeting after the handshake
s = socket.create_connection((th, tp), timeout=5)
s.settimeout(1.0)
try:
    early = s.recv(100)
except socket.timeout:
    early = b""
is_(early, b"", "tls listener: no plaintext sent before the handshake")
s.close()
c = SMTP(th, tp, tls=True, certs=certs)
like(str(c.greeting), r"^220 mail\.test\.example\b", "tls listener: 220 greeting inside TLS")
r = c.ehlo()
ok("STARTTLS" not in caps(r), "tls listener: STARTTLS not offered", caps(r))
r = c.cmd("STARTTLS")
ok(r.code == 554 and r.enhanced == "5.5.1", "tls listener: STARTTLS 554 5.5.1", str(r))
c.cmd("QUIT")
c.close()

# -- TLS versions
for label, mn, mx, want in [("TLS 1.2", ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2, True),
                            ("TLS 1.3", ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3, True)]:
    ctx = certs.client_context()
    ctx.minimum_version, ctx.maximum_version = mn, mx
    try:
        c = SMTP(th, tp, certs=certs, greeting=False)
        c._wrap(MYHOST, ctx)
        r = c.reply()
        ok(r.code == 220 and want, "%s handshake on the tls listener" % label, str(r))
        c.close()
    except (ssl.SSLError, OSError) as e:
        ok(not want, "%s handshake on the tls listener" % label, repr(e))
ctx = ssl._create_unverified_context()
try:
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    c = SMTP(th, tp, certs=certs, greeting=False)
    try:
        c._wrap(MYHOST, ctx)
        r = c.reply(timeout=3)
        ok(r.code is None, "TLS 1.1 refused (RFC 8997)", str(r))
    except (ssl.SSLError, OSError):
        ok(True, "TLS 1.1 refused (RFC 8997)")
    c.close()
except (ValueError, ssl.SSLError) as e:
    skip("TLS 1.1 refused (RFC 8997)", "client cannot offer TLS 1.1: %r" % e)

# -- garbage instead of a handshake
for label, port, pre in [("tls listener", tp, b""), ("starttls listener", sp, None)]:
    c = SMTP(th, port, tls=False, greeting=(pre is None))
    if pre is None:
        c.ehlo()
        c.cmd("STARTTLS")
    c.send(b"EHLO plaintext.example\r\n" + bytes(range(256)) * 4)
    ok(c.is_closed(5), "%s: garbage instead of a TLS handshake closes the connection" % label)
    c.close()
c = SMTP(th, tp, tls=True, certs=certs)
is_(c.greeting.code, 220, "server still serves TLS after failed handshakes")
c.close()

# -- a client that connects and never handshakes does not block others
idle = socket.create_connection((th, tp), timeout=5)
c = SMTP(th, tp, tls=True, certs=certs)
is_(c.greeting.code, 220, "a stalled handshake does not block another client")
c.close()
idle.close()

# -- real clients' view of the certificate
st, out = run(["openssl", "s_client", "-starttls", "smtp", "-connect", "%s:%d" % (sh, sp),
               "-CAfile", certs.ca, "-verify_return_error", "-servername", MYHOST, "-brief"],
              input=b"QUIT\r\n", timeout=20)
like(out, r"Verification: OK|Verify return code: 0", "openssl s_client -starttls smtp verifies the chain")
like(out, r"Protocol version: TLSv1\.[23]", "openssl s_client: TLS 1.2+")
st, out = run(["gnutls-cli", "--x509cafile", certs.ca, "--port", str(tp), "localhost"],
              input=b"QUIT\r\n", timeout=20)
like(out, r"certificate is trusted", "gnutls-cli on the tls listener trusts the chain")
like(out, r"220 mail\.test\.example", "gnutls-cli gets the greeting")

like(d.log(), r"(?i)starttls|TLSv1\.[23]|TLS1\.[23]", "log mentions TLS")
done()
