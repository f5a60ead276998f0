#!/usr/bin/env python3
"""Every login attempt counts, and per-address accounting is exact
(docs/design.md invariant 12), with the exceptions Postfix makes for mynetworks
(smtpd_client_event_limit_exceptions).

- Guesses abandoned 0.3 s after AUTH (hang-up, TCP reset, LOGIN with the
  password sent) against a real Dovecot with its default 2 s
  auth_failure_delay: each is still answered by Dovecot, logged with the line
  the shipped fail2ban filter matches, and counted, so the address is
  blocked (the right password then gets 454 and Dovecot is not asked).
- A cancelled exchange ("*") is a counted, logged failure too; a right
  password whose client left before Dovecot's OK is not counted.
- Guesses per 10 s from one address with default limits (the figure is
  printed): at most auth_ip_failure_limit reach Dovecot.
- Exact accounting: addresses that shared a bucket with 127.0.0.5 in the old
  unkeyed table (127.1.82.102 for connections, 127.1.44.101 for the failure
  budget) and hundreds of other 127.x.y.z addresses never affect it.
- Shared addresses: 200 concurrent logged-in sessions from 127.0.0.1 (in
  mynetworks) all deliver; a client outside mynetworks over its cap, or over
  max_connections, gets 421 inside TLS on the implicit-TLS listener and 421
  as the greeting on the STARTTLS listener; refusal handshakes in flight are
  bounded (32 per worker), beyond that the connection is closed at once.
- client_limit_exceptions: a listed address (and $mynetworks) has no
  connection cap and no failure budget (its failures are still logged); an
  unlisted one has both; a network with host bits set is refused.

The addresses are 127.x.y.z (all of 127/8 is local on Linux)."""
import os
import re
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403
from harness import _cleanups  # noqa: E402
from dovecot import Dovecot  # noqa: E402

ALICE, ALICE_PW = "alice@example.com", "alice-secret"
BOB, BOB_PW = "bob@example.com", "bob-secret"
BLOCKED = "Too many failed logins from your address, try again later"
GONE = "(the client left before the answer)"
FILTER = os.path.join(TOP, "conf", "fail2ban", "filter.d", "submitd.conf")
HAVE_F2B = os.system("command -v fail2ban-regex >/dev/null 2>&1") == 0

env, certs, sink = setup()
os.chmod(env.dir, 0o711)  # Dovecot's auth process (user dovecot) reads its files in here
MARK = "acct-%s" % os.urandom(3).hex()

dv = Dovecot(dir=env.path("dovecot"))  # Dovecot's default auth_failure_delay: 2 s
dv.start()
_cleanups.append(lambda: dv.stop(remove=False))


def submitd(name, *extra, auth=None):
    listens = ["127.0.0.1:%d tls" % free_port(), "127.0.0.1:%d starttls" % free_port()]
    d = env.submitd(auth_config(certs, sink, auth or dv.socket, listens,
                                [("mynetworks", "127.0.0.1/32")] + list(extra)), name=name)
    if not wait_dovecot_connected(d, 1):
        diag("%s: no Dovecot handshake in its log:\n%s" % (name, d.log()))
    return d


def tls_from(d, source, **kw):
    return client_from(source, d, "tls", certs, **kw)


def failed_lines(d, ip):
    return re.findall(r"\[%s\]:\d+: SASL \w+ authentication failed: .*" % re.escape(ip), d.log())


def f2b_matches(d):
    st, out = run(["fail2ban-regex", d.logfile, FILTER])
    m = re.search(r"Lines: \d+ lines, \d+ ignored, (\d+) matched", out)
    return (int(m.group(1)) if m else None), out


def abandon(d, source, pw, how):
    """AUTH, then leave after 0.3 s without the answer. Returns what the
    client saw in those 0.3 s."""
    c = tls_from(d, source)
    if how == "login":
        # the user name as initial response; the password waits in the
        # socket for a 334 (Dovecot's per-address penalty delays it)
        c.send("AUTH LOGIN %s\r\n%s\r\n" % (b64(ALICE), b64(pw)))
    else:
        c.send("AUTH PLAIN %s\r\n" % plain_resp(ALICE, pw))
    seen = c.pending(0.3)
    if how == "reset":
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    return seen


# ================================================================ abandoned guesses count
T0 = time.time()
d = submitd("submitd-guess", ("auth_ip_failure_limit", "30"), ("workers", "2"))
hows = ["plain", "login", "reset"]
seen = [abandon(d, "127.0.0.5", "guess-%d" % i, hows[i % 3]) for i in range(30)]
ok(all(s == b"" for s in seen), "30 wrong passwords from 127.0.0.5, each abandoned after 0.3 s "
   "(hang-up, LOGIN, TCP reset): no answer seen by the client", repr(seen[:3]))
ok(wait_for(lambda: len(failed_lines(d, "127.0.0.5")) >= 30, 60),
   "all 30 are logged as failed logins once Dovecot answers (%d)" % len(failed_lines(d, "127.0.0.5")))
ok(all(GONE in l for l in failed_lines(d, "127.0.0.5")),
   "... each saying the client left before the answer", "\n".join(failed_lines(d, "127.0.0.5")[:3]))
n_dv = dv.read_log().count("Password mismatch")
c = tls_from(d, "127.0.0.5")
r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW), timeout=30)
ok(r.code == 454 and r.enhanced == "4.7.0" and BLOCKED in r.text,
   "127.0.0.5 is blocked: the right password gets 454 4.7.0", str(r))
c.close()
c = tls_from(d, "127.0.0.7")
r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW), timeout=30)
is_(r.code, 235, "alice from 127.0.0.7 meanwhile: 235")
c.close()
time.sleep(0.3)
is_(dv.read_log().count("Password mismatch"), n_dv, "Dovecot was not asked for the blocked address")

# "*" ends the exchange: a failure, counted and logged
c = tls_from(d, "127.0.0.6")
c.cmd("AUTH LOGIN")
r = c.cmd(b64(ALICE))
is_(r.code, 334, "AUTH LOGIN from 127.0.0.6: 334 for the password")
r = c.cmd("*")
ok(r.code == 501 and r.enhanced == "5.7.0", "'*': 501 5.7.0 Authentication aborted", str(r))
c.close()
like("\n".join(failed_lines(d, "127.0.0.6")), r"login=<alice@example\.com>, reason=cancelled by the client",
     "the cancelled exchange is logged as a failed login")
if HAVE_F2B:
    n, out = f2b_matches(d)
    ok(n == 31 == len(re.findall(r"authentication failed: ", d.log())),
       "fail2ban-regex with the shipped filter matches every attempt: %s of 30 abandoned + 1 cancelled"
       % n, out[-1500:])
else:
    skip("fail2ban-regex over the abandoned guesses", "fail2ban-regex not installed")
d.stop()
diag("abandoned guesses: %.1f s" % (time.time() - T0))

# A right password whose client left before the OK is not counted (fake
# Dovecot answering after 0.5 s; budget of 1).
fd = FakeDovecot(env.path("fake-auth.sock")).start()
df = submitd("submitd-slow-ok", ("auth_ip_failure_limit", "1"), ("workers", "1"), auth=fd.path)
fd.delay = 0.5
abandon(df, "127.0.0.8", ALICE_PW, "plain")
ok(df.wait_log(r"\[127\.0\.0\.8\]:\d+: SASL PLAIN authentication succeeded after the client left: "
               r"sasl_username=alice@example\.com", 5),
   "the OK that came after the client left is logged as a success")
fd.delay = 0.0
c = tls_from(df, "127.0.0.8")
r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW))
is_(r.code, 235, "and not counted: the same address (budget 1) logs in at once")
c.close()
# A login still with Dovecot when submitd shuts down is the server's doing:
# not a failed login (no line for fail2ban).
fd.delay = 1.0
c = tls_from(df, "127.0.0.10")
c.send("AUTH PLAIN %s\r\n" % plain_resp(ALICE, ALICE_PW))
time.sleep(0.3)
df.stop()
r = c.reply(5)
ok(r.code == 421, "SIGTERM while Dovecot decides a login: 421", str(r))
c.close()
ok(not failed_lines(df, "127.0.0.10"), "... and no 'authentication failed' line for it",
   "\n".join(failed_lines(df, "127.0.0.10")))
fd.delay = 0.0

# ================================================================ guesses per 10 s from one address
d = submitd("submitd-rate", ("workers", "2"))  # default limits: 20 per 10 min
count = {"n": 0, "refused": 0, "found": 0}
lock = threading.Lock()
dv_before = len(re.findall(r",127\.0\.0\.9,.*Password mismatch", dv.read_log()))
stop_at = time.time() + 10


def guesser(tid):
    while time.time() < stop_at:
        with lock:
            n = count["n"]
            count["n"] += 1
        pw = ALICE_PW if n == 60 else "guess-%d" % n
        try:
            c = tls_from(d, "127.0.0.9")
            c.send("AUTH PLAIN %s\r\n" % plain_resp(ALICE, pw))
            got = c.pending(0.15)
            c.close()
        except Exception:  # noqa: BLE001
            continue
        with lock:
            if got and got.startswith(b"454"):
                count["refused"] += 1
            if got and got.startswith(b"235"):
                count["found"] += 1


ts = [threading.Thread(target=guesser, args=(i,)) for i in range(8)]
for t in ts:
    t.start()
for t in ts:
    t.join(60)
n_all = count["n"]
wait_for(lambda: len(failed_lines(d, "127.0.0.9")) + count["refused"] >= n_all, 40)
logged = len(failed_lines(d, "127.0.0.9"))
checked = len(re.findall(r",127\.0\.0\.9,.*Password mismatch", dv.read_log())) - dv_before
diag("FIGURE guesses per 10 s from one address (default limits, 8 parallel clients, each leaving "
     "0.15 s after AUTH): %d attempts: %d sent to Dovecot and logged as failed, %d refused at once "
     "with 454, %d without a trace; Dovecot checked %d passwords; the right password (attempt 61) "
     "confirmed: %d" % (n_all, logged, count["refused"], n_all - logged - count["refused"], checked,
                        count["found"]))
is_(logged + count["refused"], n_all, "every attempt is either logged as failed or refused with 454")
ok(logged <= 20 and checked <= 20, "with default limits at most auth_ip_failure_limit (20) guesses "
   "go to Dovecot in 10 s from one address (%d logged, %d checked)" % (logged, checked))
is_(count["found"], 0, "the right password (attempt 61) is never confirmed")
d.stop()

# ================================================================ exact per-address accounting
T0 = time.time()
d = submitd("submitd-exact", ("workers", "2"), ("max_connections_per_ip", "3"),
            ("auth_ip_failure_limit", "2"), ("auth_failure_delay", "0"), auth=fd.path)
# 127.1.82.102 shared 127.0.0.5's connection bucket in the old table.
held = [SMTPFrom("127.1.82.102", *d.addr("starttls")) for _ in range(3)]
ok(all(x.greeting.code == 220 for x in held), "127.1.82.102: 3 connections (its cap)")
x = SMTPFrom("127.1.82.102", *d.addr("starttls"))
ok(x.greeting.code == 421, "a 4th from 127.1.82.102: 421", str(x.greeting))
x.close()
others = []
for n in range(300):
    src = "127.%d.%d.%d" % (2 + n // 250, n % 250 + 1, 1 + n % 7)
    others.append(SMTPFrom(src, *d.addr("starttls")))
    others.append(SMTPFrom(src, *d.addr("starttls")))
ok(all(x.greeting.code == 220 for x in others), "300 other addresses with 2 connections each: all greeted")
x = SMTPFrom("127.0.0.5", *d.addr("starttls"))
is_(x.greeting.code, 220, "127.0.0.5 is not affected by any of them: 220")
x.close()
for x in held + others:
    x.close()
# 127.1.44.101 shared 127.0.0.5's failure bucket in the old table.
for i in range(2):
    c = tls_from(d, "127.1.44.101")
    is_(c.cmd("AUTH PLAIN " + plain_resp(ALICE, "wrong-%d" % i), timeout=30).code, 535,
        "127.1.44.101 failure %d" % (i + 1))
    c.close()
c = tls_from(d, "127.1.44.101")
r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW), timeout=30)
is_(r.code, 454, "127.1.44.101 is blocked")
c.close()
blocked_ok = True
for n in range(40):
    src = "127.3.%d.%d" % (n + 1, 200 - n)
    c = tls_from(d, src)
    blocked_ok &= c.cmd("AUTH PLAIN " + plain_resp(BOB, "typo"), timeout=30).code == 535
    blocked_ok &= c.cmd("AUTH PLAIN " + plain_resp(BOB, "typo"), timeout=30).code == 535
    blocked_ok &= c.cmd("AUTH PLAIN " + plain_resp(BOB, BOB_PW), timeout=30).code == 454
    c.close()
ok(blocked_ok, "40 more addresses each spend their own budget and are blocked")
c = tls_from(d, "127.0.0.5")
r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW), timeout=30)
is_(r.code, 235, "127.0.0.5 logs in: no other address's failures count against it")
c.close()
d.stop()
diag("exact accounting: %.1f s" % (time.time() - T0))

# ================================================================ shared addresses
T0 = time.time()
d = submitd("submitd-shared", ("workers", "2"))  # max_connections_per_ip 50 (default)
N = 200
raise_nofile(4 * N)
sessions = [None] * N
errors = []


def login(i):
    try:
        c = tls_from(d, "127.0.0.1", timeout=60)
        r = c.cmd("AUTH PLAIN " + plain_resp(BOB, BOB_PW), timeout=60)
        if r.code != 235:
            errors.append("%d: %s" % (i, r))
        sessions[i] = c
    except Exception as e:  # noqa: BLE001
        errors.append("%d: %r" % (i, e))


ts = [threading.Thread(target=login, args=(i,)) for i in range(N)]
for t in ts:
    t.start()
for t in ts:
    t.join(120)
ok(not errors and all(sessions), "%d concurrent sessions from 127.0.0.1 (in mynetworks) all logged in "
   "(max_connections_per_ip is 50)" % N, "; ".join(errors[:5]))
results = [None] * N


def deliver(i):
    try:
        out = sessions[i].send_message(BOB, ["rcpt@example.net"],
                                       stuff(make_message(subject="%s shared %d" % (MARK, i), frm=BOB)))
        results[i] = [x.code for x in out]
    except Exception as e:  # noqa: BLE001
        results[i] = repr(e)


ts = [threading.Thread(target=deliver, args=(i,)) for i in range(N) if sessions[i]]
for t in ts:
    t.start()
for t in ts:
    t.join(120)
good = sum(1 for r in results if r == [250, 250, 354, 250])
is_(good, N, "all %d sessions delivered a message" % N)
ok(wait_for(lambda: sum(1 for m in sink.messages() if (MARK + " shared ").encode() in m.content) >= N, 30),
   "the sink has all %d" % N)
for c in sessions:
    if c:
        c.close()
d.stop()
diag("shared addresses: %.1f s" % (time.time() - T0))


def tls_greeting(d, source):
    """Implicit TLS from source: the greeting read inside TLS, or the error."""
    try:
        c = SMTPFrom(source, *d.addr("tls"), tls=True, certs=certs)
        g = c.greeting
        closed = c.is_closed(3)
        c.close()
        return g, closed
    except Exception as e:  # noqa: BLE001
        return None, repr(e)


d = submitd("submitd-cap", ("workers", "1"), ("max_connections_per_ip", "2"))
held = [SMTPFrom("127.0.0.5", *d.addr("tls"), tls=True, certs=certs) for _ in range(2)]
ok(all(x.greeting.code == 220 for x in held), "127.0.0.5 (outside mynetworks): 2 connections, its cap")
g, closed = tls_greeting(d, "127.0.0.5")
ok(g is not None and g.code == 421 and g.enhanced == "4.7.0" and "too many connections from your address" in g.text,
   "the 3rd on the implicit-TLS listener: TLS handshake, then 421 4.7.0 inside TLS", "%s %s" % (g, closed))
ok(closed is True, "... and the connection is closed")
x = SMTPFrom("127.0.0.5", *d.addr("starttls"))
ok(x.greeting.code == 421 and "too many connections from your address" in x.greeting.text,
   "on the STARTTLS listener: 421 as the greeting", str(x.greeting))
x.close()
# Refusal handshakes in flight are bounded: 40 connections that never send
# a ClientHello; 32 wait for it, 8 are closed at once.
raws = []
for _ in range(40):
    s = socket.socket()
    s.bind(("127.0.0.5", 0))
    s.connect(d.addr("tls"))
    raws.append(s)
time.sleep(1.0)
closed_now = 0
for s in raws:
    s.settimeout(0.05)
    try:
        if s.recv(1) == b"":
            closed_now += 1
    except socket.timeout:
        pass
    except OSError:
        closed_now += 1
is_(closed_now, 8, "40 refused clients that never start TLS: 32 handshakes wait, 8 closed at once")
for s in raws:
    s.close()
ok(wait_for(lambda: d.log().count("TLS handshake failed for [127.0.0.5]") >= 32, 10),
   "the 32 waiting handshakes end when their clients leave")
g, closed = tls_greeting(d, "127.0.0.5")
ok(g is not None and g.code == 421, "then a refused client gets its 421 inside TLS again", str(g))
for x in held:
    x.close()
d.stop()

# client_limit_exceptions: an explicit list, with $mynetworks in it.
d = submitd("submitd-exceptions", ("workers", "1"), ("max_connections_per_ip", "1"),
            ("auth_ip_failure_limit", "1"), ("auth_failure_delay", "0"),
            ("client_limit_exceptions", "$mynetworks, 127.0.0.11/32"), auth=fd.path)
for src in ("127.0.0.11", "127.0.0.1"):
    held = [SMTPFrom(src, *d.addr("starttls")) for _ in range(3)]
    ok(all(x.greeting.code == 220 for x in held), "%s (listed) is exempt from max_connections_per_ip = 1" % src,
       [str(x.greeting) for x in held])
    for x in held:
        x.close()
held = [SMTPFrom("127.0.0.12", *d.addr("starttls")) for _ in range(2)]
is_([x.greeting.code for x in held], [220, 421], "127.0.0.12 (not listed): the 2nd connection gets 421")
for x in held:
    x.close()
c = tls_from(d, "127.0.0.11")
codes = [c.cmd("AUTH PLAIN " + plain_resp(ALICE, "wrong-%d" % i)).code for i in range(2)]
codes.append(c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW)).code)
c.close()
is_(codes, [535, 535, 235], "127.0.0.11 has no AUTH failure budget (auth_ip_failure_limit = 1)")
like("\n".join(failed_lines(d, "127.0.0.11")), r"authentication failed", "... its failures are still logged")
c = tls_from(d, "127.0.0.12")
codes = [c.cmd("AUTH PLAIN " + plain_resp(ALICE, "wrong")).code,
         c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW)).code]
c.close()
is_(codes, [535, 454], "127.0.0.12 has one (one failure, then 454)")
d.stop()
bad = env.path("bad.conf")
with open(bad, "w") as f:
    f.write("listen = 127.0.0.1:%d plain\nclient_limit_exceptions = 10.0.0.1/8\n" % free_port())
st, out = run([env.binary, "-c", bad, "-t"])
ok(st != 0 and "client_limit_exceptions: bad network" in out, "a network with host bits is refused", out)

d = submitd("submitd-total", ("workers", "1"), ("max_connections", "2"))
ok(wait_for(lambda: d.log().count("disconnect from") >= 2, 5), "start-up probes closed")
held = [SMTPFrom("127.0.0.1", *d.addr("tls"), tls=True, certs=certs) for _ in range(2)]
g, closed = tls_greeting(d, "127.0.0.1")
ok(g is not None and g.code == 421 and "too many connections" in g.text,
   "over max_connections on the implicit-TLS listener: 421 inside TLS (mynetworks or not)", str(g))
for x in held:
    x.close()
d.stop()

done()
