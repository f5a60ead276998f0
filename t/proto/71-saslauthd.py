#!/usr/bin/env python3
"""AUTH through Cyrus saslauthd (saslauthd_socket) instead of Dovecot: the
LibreLAMP guide's "smtpd_sasl_type = cyrus" + saslauthd setup.

A real saslauthd (Debian's sasl2-bin, t/lib/saslauthd.py: -a sasldb on a
private sasldb) answers PLAIN and LOGIN in every form; a right password
is 235 and mail goes through (smtplib, swaks), a wrong one is 535 with the
Dovecot path's reply and log line and counts against the address's budget
(454 when spent); saslauthd stopped is 454 4.7.0 and not counted. A fake
saslauthd (what the real one will not do on demand) shows the exact request
framing (four counted strings: login, password, service, realm), and that
answers over-long, cut short, garbage, dribbled a byte at a time, or never
sent end as documented (docs/saslauthd.md). `submitd -t` and `-t -u` work
with it. No password ever reaches the log.

docs/design.md invariants 4, 8, 9, 12; RFC 4954, RFC 4616."""
import os
import re
import smtplib
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import warnings

warnings.simplefilter("ignore", DeprecationWarning)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403
import saslauthd as saslmod  # noqa: E402

ALICE, ALICE_PW = "alice@example.org", "alice-Secret-%s" % os.urandom(3).hex()
BOB, BOB_PW = "bob@example.org", "bob-Secret-%s" % os.urandom(3).hex()
WRONG = ["Wr0ng-%d-%s" % (i, os.urandom(4).hex()) for i in range(12)]
SECRETS = [ALICE_PW, BOB_PW] + WRONG
FAIL_535 = "535 5.7.8 Error: authentication failed: authentication failure"

if not saslmod.available():
    skip_all("needs root and sasl2-bin (saslauthd, saslpasswd2; scripts/deps.sh)")

env = Env()
env.require_binary()
certs = env.certs()
sink = env.sink()
sa = saslmod.Saslauthd(env.path("saslauthd"), {ALICE: ALICE_PW, BOB: BOB_PW}, spawn=spawn)
try:
    sa.start()
except Exception as e:  # noqa: BLE001
    print("Bail out! private saslauthd did not start: %s" % e, flush=True)
    done()
import harness  # noqa: E402
harness._cleanups.append(sa.stop)

P = {m: free_port() for m in ("starttls", "tls")}
d = env.submitd([
    ("myhostname", MYHOST),
    ("listen", "127.0.0.1:%d starttls" % P["starttls"]),
    ("listen", "127.0.0.1:%d tls" % P["tls"]),
    ("tls_cert_file", certs.fullchain),
    ("tls_key_file", certs.key),
    ("mynetworks", "127.0.0.1/32"),
    ("relayhost", sink.relayhost),
    ("workers", "2"),
    ("log_level", "info"),
    ("saslauthd_socket", sa.socket),
    ("auth_failure_delay", "50ms"),
    ("auth_failure_delay_max", "100ms"),
    ("auth_max_failures", "3"),
    ("auth_ip_failure_limit", "4"),
])

_ip = [3, 0]


def fresh_ip():
    _ip[1] += 1
    return "127.0.%d.%d" % tuple(_ip)


def conn(mode="tls", source=None, dd=None):
    return client_from(source or fresh_ip(), dd or d, mode, certs)


# ---- EHLO and the right password, every form ----
c = conn("starttls")
r = c.ehlo()
ok(any(l[4:].upper() == "AUTH PLAIN LOGIN" for l in r.lines), "EHLO after STARTTLS offers AUTH PLAIN LOGIN", r)
r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW))
is_(str(r), "235 2.7.0 Authentication successful", "PLAIN with an initial response, right password: 235")
ok(d.wait_log(r"client=\[127\.0\.3\.\d+\]:\d+, sasl_method=PLAIN, sasl_username=alice@example\.org"),
   "the success log line is the Dovecot path's")
r = c.cmd("MAIL FROM:<alice@example.org>")
is_(r.code, 250, "MAIL after saslauthd's OK")
c.close()

c = conn()
r = c.cmd("AUTH PLAIN")
is_(str(r), "334 ", "PLAIN without initial response: an empty 334")
r = c.cmd(plain_resp(ALICE, ALICE_PW))
is_(r.code, 235, "... then the response: 235")
c.close()

c = conn()
r = c.cmd("AUTH LOGIN")
is_(str(r), "334 VXNlcm5hbWU6", "LOGIN: 334 Username:")
r = c.cmd(b64(BOB))
is_(str(r), "334 UGFzc3dvcmQ6", "LOGIN: 334 Password:")
r = c.cmd(b64(BOB_PW))
is_(r.code, 235, "LOGIN, right password: 235")
c.close()

c = conn()
r = c.cmd("AUTH LOGIN " + b64(ALICE))
is_(str(r), "334 UGFzc3dvcmQ6", "LOGIN with the user name as initial response: 334 Password:")
r = c.cmd(b64(ALICE_PW))
is_(r.code, 235, "... 235")
c.close()

c = conn()
r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW, authzid=ALICE))
is_(r.code, 235, "PLAIN with authzid = authcid: 235")
c.close()

# Real clients, and the message delivered.
subj = "sasl-smtplib-%s" % os.urandom(3).hex()
try:
    s = smtplib.SMTP_SSL("127.0.0.1", P["tls"], context=ssl._create_unverified_context(), timeout=20)
    s.login(BOB, BOB_PW)
    s.sendmail(BOB, ["rcpt@example.net"], ("From: %s\r\nTo: rcpt@example.net\r\nSubject: %s\r\n\r\nhi\r\n"
                                           % (BOB, subj)).encode())
    s.quit()
    ok(True, "smtplib logs in through saslauthd and sends")
except Exception as e:  # noqa: BLE001
    ok(False, "smtplib logs in through saslauthd and sends", str(e))
ok(wait_for(lambda: any(subj.encode() in m.content for m in sink.messages()), 10), "... delivered")
subj2 = "sasl-swaks-%s" % os.urandom(3).hex()
rc, out = run(["swaks", "--server", "127.0.0.1:%d" % P["starttls"], "--tls", "--auth", "LOGIN",
               "--auth-user", ALICE, "--auth-password", ALICE_PW, "--from", ALICE,
               "--to", "rcpt@example.net", "--header", "Subject: " + subj2], timeout=60)
ok(rc == 0, "swaks AUTH LOGIN through saslauthd sends", out)
ok(wait_for(lambda: any(subj2.encode() in m.content for m in sink.messages()), 10), "... delivered")

# ---- wrong passwords: 535, logged, counted ----
ip = fresh_ip()
c = conn(source=ip)
r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, WRONG[0]))
is_(str(r), FAIL_535, "wrong password: Postfix's 535 text")
ok(d.wait_log(r"\[%s\]:\d+: SASL PLAIN authentication failed: login=<alice@example\.org>, "
              r"reason=authentication failure" % re.escape(ip)),
   "the failure log line (fail2ban's) is the Dovecot path's")
r = c.cmd("AUTH LOGIN")
c.cmd(b64("nobody@example.org"))
r = c.cmd(b64(WRONG[1]))
is_(str(r), FAIL_535, "unknown user (LOGIN): the same 535")
r = c.cmd("AUTH PLAIN " + plain_resp(BOB, BOB_PW, authzid=ALICE))
is_(r.code, 535, "PLAIN acting as another user (authzid): 535, never asked")
r = c.reply(timeout=5)
is_(r.code, 421, "third failure in the session: 421 and closed")
c.close()
c = conn(source=ip)
r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, WRONG[2]))
is_(r.code, 535, "fourth failure from the address: 535")
r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW))
is_(str(r), "454 4.7.0 Too many failed logins from your address, try again later",
    "the address's budget (auth_ip_failure_limit = 4) is spent: 454, even for the right password")
c.close()
c = conn()
r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW))
is_(r.code, 235, "another address still logs in")
c.close()

# NUL inside a LOGIN password: saslauthd reads C strings, so "pw\0junk"
# would be checked as "pw"; refused before it is sent.
c = conn()
c.cmd("AUTH LOGIN")
c.cmd(b64(ALICE))
r = c.cmd(b64(ALICE_PW.encode() + b"\0junk"))
is_(r.code, 535, "a password holding NUL is refused (not truncated into the right one)")
r = c.cmd("AUTH LOGIN")
c.cmd(b64("x" * 300))
r = c.cmd(b64(ALICE_PW))
is_(r.code, 535, "a login longer than saslauthd's 256 bytes: 535")
c.close()

# ---- submitd -t and -t -u ----
rc, out = run([env.binary, "-c", d.conf, "-t"], timeout=60)
like(out, r"saslauthd_socket \S+: ok", "submitd -t: saslauthd_socket ok")
p = subprocess.run([env.binary, "-c", d.conf, "-t", "-u", ALICE], input=ALICE_PW + "\n",
                   capture_output=True, text=True, timeout=60)
ok(re.search(r"login alice@example\.org: ok \(saslauthd\)", p.stdout), "submitd -t -u LOGIN through saslauthd",
   p.stdout + p.stderr)
p = subprocess.run([env.binary, "-c", d.conf, "-t", "-u", ALICE], input="Wrong\n",
                   capture_output=True, text=True, timeout=60)
ok(p.returncode != 0 and "saslauthd refused it" in p.stdout, "-t -u with a wrong password: refused",
   p.stdout + p.stderr)

# ---- sender ownership: no sender_restrictions list can switch it off ----
# sender_login_policy checks every logged-in user first; a list that
# permits early, or names another *_sender_login_mismatch, only adds checks
# (docs/restrictions.md).
OWN_LOGINS = env.path("own-logins")
OWN_ACCESS = env.path("own-access")
with open(OWN_LOGINS, "w") as f:
    f.write("%s %s\n%s %s\n" % (ALICE, ALICE, BOB, BOB))
with open(OWN_ACCESS, "w") as f:
    f.write("example.org OK\n")
OWN_LISTS = [
    "permit_mynetworks,reject_sender_login_mismatch",
    "permit_sasl_authenticated,reject_sender_login_mismatch",
    "permit,reject_sender_login_mismatch",
    "reject_unauthenticated_sender_login_mismatch",
    "reject_known_sender_login_mismatch",
    None,  # the global list: check_sender_access (example.org OK) first
]
OWN_P = [free_port() for _ in OWN_LISTS]
d3 = env.submitd([
    ("myhostname", MYHOST),
    ("tls_cert_file", certs.fullchain),
    ("tls_key_file", certs.key),
    ("mynetworks", "127.0.0.0/8"),
    ("relayhost", sink.relayhost),
    ("workers", "1"),
    ("log_level", "info"),
    ("saslauthd_socket", sa.socket),
    ("auth_failure_delay", "0"),
    ("sender_login_maps", "texthash:" + OWN_LOGINS),
    ("sender_restrictions", "check_sender_access texthash:%s, reject_sender_login_mismatch" % OWN_ACCESS),
] + [("listen", "127.0.0.1:%d tls%s" % (p, " sender_restrictions=" + l if l else ""))
     for p, l in zip(OWN_P, OWN_LISTS)], name="submitd-owner")
for i, l in enumerate(OWN_LISTS):
    name = l or "check_sender_access (OK), reject_sender_login_mismatch"
    c = client_from(fresh_ip(), d3, i, certs)
    is_(c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW)).code, 235, "%s: alice logs in" % name)
    is_(str(c.cmd("MAIL FROM:<%s>" % BOB)),
        "553 5.7.1 <%s>: Sender address rejected: not owned by user %s" % (BOB, ALICE),
        "%s: alice sending as bob: 553" % name)
    c.cmd("RSET")
    like(str(c.cmd("MAIL FROM:<%s>" % ALICE)), r"^250 ", "%s: ... as herself: 250" % name)
    c.close()

# ---- saslauthd stopped: 454, not counted ----
sa.stop()
ip = fresh_ip()
c = conn(source=ip)
for i in range(6):
    r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW))
    if r.code != 454:
        break
is_(str(r), "454 4.7.0 Temporary authentication failure: authentication server not available",
    "saslauthd down: 454 4.7.0, six times in one session (never counted as failures)")
ok(d.wait_log(r"SASL PLAIN authentication unavailable: authentication server not available"),
   "logged as unavailable")
c.close()
rc, out = run([env.binary, "-c", d.conf, "-t"], timeout=60)
like(out, r"saslauthd_socket \S+: FAILED", "submitd -t: saslauthd down is reported")
sa.start()
c = conn(source=ip)
r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW))
is_(r.code, 235, "saslauthd back: 235 at once, no restart of submitd")
c.close()


# ---- a fake saslauthd: framing and hostile answers ----
class FakeSaslauthd:
    """Reads one request (four counted strings) per connection, records it,
    answers as self.mode says."""

    def __init__(self, path):
        self.path = path
        self.mode = "ok"
        self.requests = []
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.bind(path)
        self.s.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.s.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _read(self, c, n):
        b = b""
        while len(b) < n:
            x = c.recv(n - len(b))
            if not x:
                raise EOFError
            b += x
        return b

    def _serve(self, c):
        try:
            fields = []
            for _ in range(4):
                n = struct.unpack(">H", self._read(c, 2))[0]
                fields.append(self._read(c, n) if n else b"")
            self.requests.append(fields)
            m = self.mode
            if m == "ok":
                c.sendall(b"\x00\x0cOK \"Success.\"")
            elif m == "no":
                c.sendall(b"\x00\x02NO")
            elif m == "long":
                c.sendall(struct.pack(">H", 5000) + b"OK" + b"x" * 4998)
            elif m == "truncated":
                c.sendall(b"\x00\x10OK")
            elif m == "garbage":
                c.sendall(b"\x00\x04OKAY")
            elif m == "binary":
                c.sendall(b"\x00\x03\x00\r\n")
            elif m == "dribble":
                for ch in b"\x00\x02OK":
                    c.sendall(bytes([ch]))
                    time.sleep(0.05)
            elif m == "silent":
                time.sleep(4)
            elif m == "close":
                pass
            time.sleep(0.2)
        except (EOFError, OSError):
            pass
        finally:
            c.close()


fake = FakeSaslauthd(env.path("fake-mux"))
P2 = free_port()
LONG_LOGIN = "a" * 255
FAKE_LOGINS = env.path("fake-logins")
with open(FAKE_LOGINS, "w") as f:
    f.write("ceo@example.org %s\n" % LONG_LOGIN)
d2 = env.submitd([
    ("myhostname", MYHOST),
    ("listen", "127.0.0.1:%d tls" % P2),
    ("tls_cert_file", certs.fullchain),
    ("tls_key_file", certs.key),
    ("relayhost", sink.relayhost),
    ("workers", "1"),
    ("log_level", "info"),
    ("saslauthd_socket", fake.path),
    ("saslauthd_service", "smtp"),
    ("saslauthd_realm", "realm.example"),
    ("auth_timeout", "1s"),
    ("auth_failure_delay", "0"),
    ("auth_max_failures", "100"),
    ("auth_ip_failure_limit", "0"),
    ("sender_login_maps", "texthash:" + FAKE_LOGINS),
], name="submitd-fake")

def fake_auth(login, pw, timeout=10):
    c = conn("tls", dd=d2)
    r = c.cmd("AUTH PLAIN " + plain_resp(login, pw), timeout=timeout)
    c.close()
    return r


r = fake_auth("carol", "pw-carol")
is_(r.code, 235, "fake saslauthd OK \"Success.\": 235")
is_(fake.requests[-1], [b"carol", b"pw-carol", b"smtp", b"realm.example"],
    "the request: login, password, service, realm (saslauthd_realm) as four counted strings")
r = fake_auth("dave@mail@x.example", "pw-dave")
is_(r.code, 235, "a login with '@'")
is_(fake.requests[-1], [b"dave@mail", b"pw-dave", b"smtp", b"x.example"],
    "... is split at its last '@' into user and realm, as Cyrus SASL does")
# The longest login saslauthd takes (256 bytes) is the session's user whole:
# cut to 255 it would be the owner of ceo@example.org.
c = conn("tls", dd=d2)
is_(c.cmd("AUTH PLAIN " + plain_resp(LONG_LOGIN + "b", "pw-carol")).code, 235, "a 256-byte login: 235")
like(str(c.cmd("MAIL FROM:<ceo@example.org>")), r"^553 5\.7\.1 <ceo@example\.org>: Sender address "
     r"rejected: not owned by user a{255}b$", "... it is not cut to the 255-byte owner of ceo@example.org")
c.close()
n = len(fake.requests)
r = fake_auth(LONG_LOGIN + "bc", "pw-carol")
ok(r.code == 535 and len(fake.requests) == n, "a 257-byte login: 535, saslauthd not asked", str(r))
fake.mode = "no"
r = fake_auth("carol", "pw-x")
is_(str(r), FAIL_535, "NO: 535")
for mode, want, name in [
        ("long", 454, "an answer longer than 1024 bytes: 454"),
        ("truncated", 454, "an answer cut short (length 16, 2 bytes, EOF): 454"),
        ("garbage", 454, "\"OKAY\" is neither OK nor NO: 454"),
        ("binary", 454, "NUL/CR/LF as the answer: 454"),
        ("close", 454, "closed without an answer: 454"),
        ("silent", 454, "never answers: 454 after auth_timeout"),
        ("dribble", 235, "\"OK\" one byte at a time: 235")]:
    fake.mode = mode
    t0 = time.time()
    r = fake_auth("carol", "pw-carol")
    ok(r.code == want, name, str(r))
    if mode == "silent":
        ok(time.time() - t0 < 3, "... within the 1 s timeout (%.1fs)" % (time.time() - t0))
ok(d2.wait_log(r"answer of 5000 bytes is longer than 1024"), "the over-long answer is logged")
ok(d2.wait_log(r"answer is neither OK nor NO: \"OKAY\""), "the garbage answer is logged, escaped")
ok("\r" not in d2.log() and "\x00" not in d2.log(), "nothing raw from the fake in the log")

# A session that ends while saslauthd judges: still counted (as Dovecot's).
fake.mode = "silent"
c = conn("tls", dd=d2)
c.send("AUTH PLAIN " + plain_resp("carol", "pw-gone") + "\r\n")
time.sleep(0.2)
c.close()
ok(d2.wait_log(r"SASL PLAIN authentication (failed|unavailable).*\(the client left before the answer\)", 5),
   "a login abandoned by the client is still answered and logged")

# Config: both backends is an error.
bad = env.path("both.conf")
with open(bad, "w") as f:
    f.write("listen = 127.0.0.1:%d plain\nsaslauthd_socket = /x\ndovecot_auth_socket = /y\n" % free_port())
rc, out = run([env.binary, "-c", bad, "-t"], timeout=30)
ok(rc != 0 and "set one of them" in out, "dovecot_auth_socket and saslauthd_socket together: refused", out)

# saslauthd_service and saslauthd_realm longer than saslauthd takes: refused at load.
for key in ("saslauthd_service", "saslauthd_realm"):
    bad = env.path("long-%s.conf" % key)
    with open(bad, "w") as f:
        f.write("listen = 127.0.0.1:%d plain\nsaslauthd_socket = /x\n%s = %s\n" % (free_port(), key, "s" * 257))
    rc, out = run([env.binary, "-c", bad, "-t"], timeout=30)
    ok(rc != 0 and "%s: longer than 256 bytes" % key in out, "a 257-byte %s: refused by submitd -t" % key, out)
    with open(bad, "w") as f:
        f.write("listen = 127.0.0.1:%d plain\nsaslauthd_socket = /x\n%s = %s\n" % (free_port(), key, "s" * 256))
    rc, out = run([env.binary, "-c", bad, "-t"], timeout=30)
    ok("longer than" not in out, "... 256 bytes: taken", out)

# ---- secrets ----
for dd in (d, d2, d3):
    log = dd.log()
    leaked = [s for s in SECRETS + ["pw-carol", "pw-gone", "pw-dave"] if s in log]
    ok(not leaked, "%s: no password in the log" % dd.name, leaked)
    ok(not unsafe_log_lines(dd.logfile), "%s: every log line escaped" % dd.name)
done()
