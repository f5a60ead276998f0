#!/usr/bin/env python3
"""Bounded output: a client that pipelines commands and never reads its
replies makes submitd stop reading, not grow. Floods of EHLO (before TLS and
inside TLS) and of NOOP/RSET/HELP/VRFY: submitd's resident memory grows by a
few MiB at most, and another client is served meanwhile. A client that sends
a long pipeline and only then reads gets every reply, in order (no stall when
the output drains)."""
import os
import re
import socket
import ssl
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

FLOOD = 24 * 1024 * 1024     # bytes a flooder tries to send
GROWTH_MAX = 6 * 1024        # KiB of RSS growth allowed per flood

env = Env()
env.require_binary()
small_asan_quarantine(env.binary)  # RSS is measured below
certs = env.certs()
sink = env.sink()
# One worker: the flooder and the other client share one event loop.
d = env.submitd(standard_config(certs, sink, [("workers", "1")]))
sh, sp = d.addr("starttls")


def rss_kib():
    with open("/proc/%d/status" % d.proc.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def flood(sock, unit, total, stalled=3.0):
    """Sends unit repeatedly until total bytes or until the server has not
    taken a byte for `stalled` seconds. Returns the bytes sent."""
    chunk = unit * (65536 // len(unit))
    sock.settimeout(stalled)
    sent = 0
    try:
        while sent < total:
            sock.sendall(chunk)
            sent += len(chunk)
    except (socket.timeout, ssl.SSLError, OSError):
        pass
    return sent


def read_all(sock, what):
    """Everything the server sends until it closes, as a list of lines."""
    got = bytearray()
    try:
        while True:
            b = sock.recv(65536)
            if not b:
                break
            got += b
    except (socket.timeout, ssl.SSLError, OSError) as e:
        diag("%s: %r" % (what, e))
    return bytes(got).split(b"\r\n")


def delivery():
    """A whole delivery on another connection; returns (ok, seconds)."""
    t0 = time.time()
    try:
        c = client(d, "plain", certs)
        msg = make_message(subject="served meanwhile")
        out = c.send_message("a@example.com", ["b@example.net"], stuff(msg))
        c.cmd("QUIT")
        c.close()
        return out[-1].code == 250, time.time() - t0
    except Exception as e:  # noqa: BLE001
        diag("delivery failed: %r" % e)
        return False, time.time() - t0


def flood_case(name, make_sock, unit):
    warm = delivery()  # the other client's buffers exist before the baseline
    ok(warm[0], "%s: warm-up delivery" % name)
    before = rss_kib()
    sock = make_sock()
    result = {}
    th = threading.Thread(target=lambda: result.update(sent=flood(sock, unit, FLOOD)))
    th.start()
    time.sleep(1.0)
    served, secs = delivery()
    th.join(120)
    after = rss_kib()
    diag("%s: sent %.1f MiB, submitd VmRSS %d KiB before, %d KiB after (%+d KiB); "
         "other client served in %.2f s" % (name, result.get("sent", 0) / 1048576.0, before,
                                            after, after - before, secs))
    ok(after - before < GROWTH_MAX,
       "%s: submitd's RSS grew by less than %d KiB (%+d KiB)" % (name, GROWTH_MAX, after - before))
    ok(served and secs < 10, "%s: another client delivered a message meanwhile (%.2f s)"
       % (name, secs))
    ok(result.get("sent", 0) < FLOOD, "%s: submitd stopped reading (%.1f MiB taken)"
       % (name, result.get("sent", 0) / 1048576.0))
    sock.close()
    ok(d.running(), "%s: submitd still running" % name)


def plain_sock():
    c = SMTP(sh, sp)
    c.ehlo()
    return c.sock


def tls_sock():
    c = SMTP(sh, sp)
    c.ehlo()
    c.starttls()
    c.ehlo()
    return c.sock


flood_case("EHLO flood before TLS", plain_sock, b"EHLO x\r\n")
flood_case("EHLO flood inside TLS", tls_sock, b"EHLO x\r\n")
flood_case("NOOP/RSET/HELP/VRFY flood inside TLS", tls_sock,
           b"NOOP\r\nRSET\r\nHELP\r\nVRFY postmaster\r\n")

# -- a long pipeline, read only afterwards: every reply arrives, in order.
for name, mk in (("plain", plain_sock), ("TLS", tls_sock)):
    sock = mk()
    n = 30000
    sock.settimeout(30)
    payload = b"NOOP\r\n" * n + b"QUIT\r\n"
    th = threading.Thread(target=lambda: sock.sendall(payload))
    th.start()
    lines = read_all(sock, "%s pipeline" % name)
    th.join(30)
    is_(sum(1 for l in lines if l.startswith(b"250 ")), n,
        "%s: %d pipelined NOOPs sent before reading: every reply arrives" % (name, n))
    ok(any(l.startswith(b"221 ") for l in lines), "%s: then QUIT's 221" % name)
    sock.close()

# -- the STARTTLS checkpoint holds when STARTTLS sits behind a long pipeline
# that made submitd stop reading: plaintext sent after it is never run.
c = SMTP(sh, sp)
c.ehlo()
n = 20000
burst = b"EHLO x\r\n" * n + b"STARTTLS\r\nMAIL FROM:<injected@example.com>\r\n"
th = threading.Thread(target=lambda: c.sock.sendall(burst))
th.start()
ehlos = 0
r = None
while True:
    r = c.reply(timeout=30)
    if r.code != 250:
        break
    ehlos += 1
th.join(30)
is_(ehlos, n, "checkpoint: every pipelined EHLO answered before STARTTLS")
is_(r.code, 220, "then 220 to STARTTLS (%s)" % r)
ok(not c.buf, "and nothing after it in plaintext (%r)" % bytes(c.buf[:80]))
try:
    c._wrap(MYHOST)
    r = c.cmd("MAIL FROM:<a@example.com>")
    ok(r.code == 503, "inside TLS the session starts afresh: MAIL before EHLO is 503 (%s)" % r)
except (ssl.SSLError, OSError) as e:
    ok(True, "inside TLS: the injected plaintext broke the handshake (%r)" % e)
c.close()
ok(not re.search(r"injected@example\.com", d.log()), "the injected MAIL never ran")

# -- the same pipeline, then the client closes its side before reading:
# the replies still come, all of them, as the output drains.
sock = plain_sock()
sock.settimeout(30)
n = 30000
sock.sendall(b"NOOP\r\n" * n)
sock.shutdown(socket.SHUT_WR)
lines = read_all(sock, "half-closed pipeline")
is_(sum(1 for l in lines if l.startswith(b"250 ")), n,
    "%d NOOPs, then the client's FIN, then reading: every reply arrives" % n)
sock.close()

# -- input read while the session waits (here for the downstream's reply to
# the end of data) is bounded, and reading resumes once the wait is over.
slow = env.sink("--delay-data", "1")
d2 = env.submitd(standard_config(certs, slow, [("workers", "1")]), name="slow")
c = SMTP(*d2.addr("plain"))
c.ehlo()
is_(c.cmd("MAIL FROM:<a@example.com>").code, 250, "slow downstream: MAIL")
is_(c.cmd("RCPT TO:<b@example.net>").code, 250, "RCPT")
is_(c.cmd("DATA").code, 354, "DATA")
n = 40000
c.sock.settimeout(30)
t0 = time.time()
payload = stuff(make_message(subject="slow")) + b"NOOP\r\n" * n + b"QUIT\r\n"
th = threading.Thread(target=lambda: c.sock.sendall(payload))
th.start()
lines = read_all(c.sock, "pipeline behind a slow end of data")
th.join(30)
ok(lines and lines[0].startswith(b"250 "), "the message is delivered (%r)" % lines[:1])
is_(sum(1 for l in lines if l.startswith(b"250 ")), n + 1,
    "%d NOOPs pipelined behind it (while the session waited): every reply" % n)
ok(any(l.startswith(b"221 ") for l in lines) and time.time() - t0 < 20,
   "then QUIT's 221, without waiting for a timeout (%.1f s)" % (time.time() - t0))
c.close()
done()
