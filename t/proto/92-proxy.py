#!/usr/bin/env python3
"""Behind a real HAProxy (Debian's haproxy, private configuration, foreground)
with send-proxy (v1) and send-proxy-v2, on the STARTTLS and the implicit-TLS
listener: submitd's log, mynetworks and Dovecot's rip see the client's
address as HAProxy saw it (clients connect from 127.0.0.2 and 127.0.0.1;
HAProxy itself from 127.0.0.1). A PROXY header from an address outside
proxy_networks is refused without a reply; a malformed, slow or missing
header closes the connection without a greeting; LOCAL (health checks) keeps
the real endpoints. Malformed headers are also fuzzed (t/fuzz/fuzz-proxy.c,
t/unit/test-proxy.c). The logins run against both Dovecot deployments
(passwd-file passdb, and the ISPmail guide's SQL passdb).

haproxy's doc/proxy-protocol.txt (never guess, only from the
configured proxies, nothing before the header, bytes after it belong to TLS
or SMTP); docs/design.md invariants 3 and 10 (mynetworks sees the real client)."""
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
if not os.access(HAPROXY, os.X_OK):
    skip_all("haproxy not installed (scripts/deps.sh)")
PASSDB = variants(PASSDBS)

env, certs, sink = setup()
dv = private_dovecot(env, PASSDB, failure_delay="0")

p_starttls, p_tls, p_plain = free_port(), free_port(), free_port()
d = env.submitd(auth_config(certs, sink, dv.socket, [
    "127.0.0.1:%d starttls trusted proxy" % p_starttls,
    "127.0.0.1:%d tls proxy" % p_tls,
    "127.0.0.1:%d plain trusted" % p_plain,
], [
    # HAProxy connects from 127.0.0.1; so does one of the clients
    ("mynetworks", "127.0.0.1/32"),
    ("proxy_networks", "127.0.0.1/32, ::1/128"),
    ("proxy_timeout", "1s"),
    ("auth_failure_delay", "0"),
    ("workers", "2"),
]))

# ---------------------------------------------------------------- HAProxy
fronts = {}
cfg = ["global", "    maxconn 200", "defaults", "    mode tcp", "    timeout connect 5s",
       "    timeout client 60s", "    timeout server 60s"]
for name, port, opt in (("v1_starttls", p_starttls, "send-proxy"),
                        ("v2_starttls", p_starttls, "send-proxy-v2"),
                        ("v1_tls", p_tls, "send-proxy"),
                        ("v2_tls", p_tls, "send-proxy-v2"),
                        ("none_starttls", p_starttls, "")):
    fp = free_port()
    fronts[name] = fp
    cfg += ["frontend f_%s" % name, "    bind 127.0.0.1:%d" % fp, "    default_backend b_%s" % name,
            "backend b_%s" % name, "    server s 127.0.0.1:%d %s" % (port, opt)]
hcfg = env.path("haproxy.cfg")
with open(hcfg, "w") as f:
    f.write("\n".join(cfg) + "\n")
hlog = open(env.path("haproxy.log"), "ab")
hap = spawn([HAPROXY, "-f", hcfg, "-db"], stdin=subprocess.DEVNULL, stdout=hlog, stderr=hlog)
ok(all(wait_port("127.0.0.1", p, 10, hap) for p in fronts.values()), "haproxy is listening",
   open(env.path("haproxy.log")).read())


def connect_log(port):
    """The 'connect from' log line for a client whose local port is port."""
    m = d.wait_log(r"connect from \[[^\]]+\]:%d to .*" % port, 5)
    return m.group(0) if m else ""


for name in ("v1_starttls", "v2_starttls"):
    c = SMTPFrom("127.0.0.2", "127.0.0.1", fronts[name], certs=certs)
    like(str(c.greeting), r"^220 mail\.test\.example", "%s: greeting through HAProxy" % name)
    cport = c.sock.getsockname()[1]
    line = connect_log(cport)
    like(line, r"connect from \[127\.0\.0\.2\]:%d to 127\.0\.0\.1:%d \(starttls, via proxy \[127\.0\.0\.1\]:\d+\)"
         % (cport, p_starttls), "%s: the log shows the client as HAProxy saw it" % name)
    c.ehlo()
    c.starttls()
    c.ehlo()
    # 127.0.0.2 is not in mynetworks, the proxy (127.0.0.1) is: the real
    # client decides (invariant 10).
    r = c.cmd("MAIL FROM:<a@example.com>")
    is_(r.code, 530, "%s: mynetworks sees 127.0.0.2, not the proxy: MAIL without AUTH refused" % name)
    r = c.cmd("AUTH PLAIN " + plain_resp("bob@example.com", "wrong-password"))
    is_(r.code, 535, "%s: wrong password: 535" % name)
    r = c.cmd("AUTH PLAIN " + plain_resp("bob@example.com", "bob-secret"))
    is_(r.code, 235, "%s: AUTH through the proxy" % name)
    out = c.send_message("bob@example.com", ["x@example.net"], stuff(make_message(subject=name)))
    is_([x.code for x in out], [250, 250, 354, 250], "%s: delivered" % name)
    c.cmd("QUIT")
    c.close()
    log = open(dv.log, errors="replace").read()
    like(log, r"bob@example\.com,127\.0\.0\.2", "%s: Dovecot got rip=127.0.0.2" % name)
    open(dv.log, "w").close()

# The proxy's own address in mynetworks, and a client from there: trusted.
c = SMTPFrom("127.0.0.1", "127.0.0.1", fronts["v2_starttls"], certs=certs)
c.ehlo()
c.starttls()
c.ehlo()
out = c.send_message("a@example.com", ["y@example.net"], stuff(make_message(subject="trusted")))
is_([x.code for x in out], [250, 250, 354, 250], "a client at 127.0.0.1 via the proxy: mynetworks relay")
c.close()

for name in ("v1_tls", "v2_tls"):
    c = SMTPFrom("127.0.0.2", "127.0.0.1", fronts[name], tls=True, certs=certs)
    like(str(c.greeting), r"^220 ", "%s: implicit TLS through HAProxy (header, then ClientHello)" % name)
    cport = c.sock.getsockname()[1]
    like(connect_log(cport), r"connect from \[127\.0\.0\.2\]:%d to 127\.0\.0\.1:%d \(tls, via proxy"
         % (cport, p_tls), "%s: the log shows the client as HAProxy saw it" % name)
    is_(c.ehlo().code, 250, "%s: EHLO over TLS" % name)
    c.close()

# HAProxy without send-proxy in front of a proxy listener: its first bytes
# are not a header (the client's EHLO), so the connection is dropped unanswered.
c = SMTPFrom("127.0.0.2", "127.0.0.1", fronts["none_starttls"], greeting=False, timeout=5)
c.send("EHLO x\r\n")
ok(c.is_closed(3), "no PROXY header (the client spoke first): closed")
data = b"".join(x for dirn, x in c.transcript if dirn == "<<")
is_(data, b"", "... without a greeting or any reply")
c.close()
ok(d.wait_log(r"bad PROXY header from \[127\.0\.0\.1\]:\d+: no PROXY protocol signature", 3),
   "... logged as a bad PROXY header")


# ---------------------------------------------------------------- raw headers
def raw(source, payload, wait=3):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.settimeout(wait)
    s.connect(("127.0.0.1", p_starttls))
    if payload:
        s.sendall(payload)
    got = b""
    closed = False
    t0 = time.time()
    try:
        while True:
            x = s.recv(4096)
            if not x:
                closed = True
                break
            got += x
            if b"\r\n" in got:
                break
    except socket.timeout:
        pass
    except ConnectionResetError:
        closed = True
    return s, got, closed, time.time() - t0


s, got, closed, _ = raw("127.0.0.3", b"PROXY TCP4 192.0.2.7 127.0.0.1 50123 587\r\n")
ok(closed and got == b"", "a valid header from 127.0.0.3 (outside proxy_networks): closed, no reply")
s.close()
ok(d.wait_log(r"refusing \[127\.0\.0\.3\]:\d+ on proxy listener .*not in proxy_networks", 3),
   "... logged")
unlike(d.log(), r"connect from \[192\.0\.2\.7\]", "the spoofed address never becomes a client")

s, got, closed, _ = raw("127.0.0.1", b"PROXY TCP4 192.0.2.7 127.0.0.1 050123 587\r\n")
ok(closed and got == b"", "a malformed v1 header (leading zero in a port): closed, no reply")
s.close()
s, got, closed, _ = raw("127.0.0.1", b"\r\n\r\n\x00\r\nQUIT\n\x21\x12\x00\x0c" + bytes(12))
ok(closed and got == b"", "a v2 header for UDP: closed, no reply")
s.close()

s, got, closed, took = raw("127.0.0.1", b"PROXY TCP4 192.0.2.7", wait=5)
ok(closed and got == b"" and 0.8 < took < 3.5,
   "an incomplete header: closed after proxy_timeout (1 s; took %.1f s)" % took)
s.close()
ok(d.wait_log(r"no complete PROXY header .* within proxy_timeout", 3), "... logged")

# A v1 header with the SMTP input right behind it in the same segment.
s, got, closed, _ = raw("127.0.0.1", b"PROXY TCP6 2001:db8::7 ::1 40001 587\r\n")
like(got, r"^220 ", "v1 TCP6 header: greeting")
ok(d.wait_log(r"connect from \[2001:db8::7\]:40001 to \[?::1\]?", 3) or
   d.wait_log(r"connect from \[2001:db8::7\]:40001", 1), "the IPv6 client of the header is logged")
s.close()

# LOCAL (a health check of the proxy): the real endpoints stay.
s, got, closed, _ = raw("127.0.0.1", b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00")
like(got, r"^220 ", "v2 LOCAL: greeting, as the proxy itself")
port = s.getsockname()[1]
ok(d.wait_log(r"connect from \[127\.0\.0\.1\]:%d " % port, 3), "v2 LOCAL: the connection's own address")
s.close()

# What Dovecot is told behind a proxy (docs/dovecot-auth.md): rip is
# the client the header names, real_rip the proxy itself. A recording fake
# Dovecot shows the AUTH line as sent.
fd = FakeDovecot(env.path("fake-dovecot.sock")).start()
p_tls2 = free_port()
d2 = env.submitd(auth_config(certs, sink, fd.path, ["127.0.0.1:%d tls proxy" % p_tls2], [
    ("proxy_networks", "127.0.0.1/32"),
    ("workers", "1"),
]), name="submitd-fake-dovecot")
wait_dovecot_connected(d2, 1)
raw_s = socket.create_connection(("127.0.0.1", p_tls2))
raw_s.sendall(b"PROXY TCP4 203.0.113.5 127.0.0.1 41000 465\r\n")
c = SMTP.__new__(SMTP)
c.sock, c.timeout, c.certs, c.buf, c.transcript = raw_s, 15, certs, bytearray(), []
c.tls, c.closed = False, False
c._wrap(MYHOST)
c.greeting = c.reply()
c.ehlo()
r = c.cmd("AUTH PLAIN " + plain_resp("alice@example.com", "alice-secret"))
is_(r.code, 235, "behind a proxy: AUTH through the fake Dovecot")
lines = b"".join(fd.auth_lines()).decode(errors="replace")
like(lines, r"\trip=203\.0\.113\.5\t", "Dovecot's rip is the client the PROXY header names")
like(lines, r"\trport=41000\b", "... and rport its port")
like(lines, r"\treal_rip=127\.0\.0\.1\t", "real_rip is the proxy (Dovecot's own proxy-aware field)")
like(lines, r"\treal_rport=\d+", "... and real_rport its port")
c.close()
d2.stop()
fd.stop()

hap.terminate()
hap.wait(5)
done()
