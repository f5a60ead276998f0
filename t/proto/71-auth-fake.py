#!/usr/bin/env python3
"""AUTH against a scripted fake Dovecot (harness.FakeDovecot) that records
every line submitd sends: the exact AUTH/CONT/CANCEL lines (service, rip,
lip, ports, local_name, secured, resp= last and byte-identical to the
client's base64), nothing raw (TAB/CR/LF/NUL/\\001) inside a value whatever
the client smuggles, unknown mechanisms and bad base64 never forwarded, the
mechanisms advertised (only relayable ones), OK+nologin and code=temp_fail,
and what a real Dovecot will not do on demand: garbage, an unknown id, a
duplicate reply, silence (timeout), a disconnect with twenty requests in
flight, and SIGTERM while a request is pending.

docs/design.md invariants 4, 8, 9; docs/dovecot-auth.md."""
import os
import re
import ssl
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

ALICE, ALICE_PW = "alice@example.com", "alice-secret"
env, certs, sink = setup()
MECHS = ["PLAIN", "LOGIN", "GSSAPI", "EXTERNAL", "ANONYMOUS", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "OAUTHBEARER"]
fd = FakeDovecot(env.path("fake-auth.sock"), mechs=MECHS).start()
fd.nologin.add("carol@example.com")
fd.users["carol@example.com"] = "carol-secret"
fd.tempfail.add("dave@example.com")

sp, tp = free_port(), free_port()
d = env.submitd(auth_config(certs, sink, fd.path, ["127.0.0.1:%d starttls" % sp, "127.0.0.1:%d tls" % tp], [
    ("mynetworks", "127.0.0.1/32"),
    ("workers", "2"),
    ("auth_timeout", "1s"),
    ("auth_failure_delay", "0"),
    ("auth_ip_failure_limit", "0"),
    ("auth_max_failures", "100"),
]))
ok(wait_dovecot_connected(d, 2), "submitd completed its Dovecot handshakes (one per worker)")

KNOWN_PARAMS = {"service", "protocol", "session", "lip", "rip", "lport", "rport", "local_name",
                "secured", "resp", "real_lip", "real_rip", "real_lport", "real_rport",
                "valid-client-cert", "no-penalty", "nologin"}


OPENED = []   # every client of d, for d.wait_closed()


def conn(mode="tls", source="127.0.0.1", **kw):
    c = client_from(source, d, mode, certs, **kw)
    OPENED.append(c)
    return c


def cancelled(mark):
    """The lines since mark, once they hold a CANCEL (submitd's last word on
    a request: whatever it sent before has arrived too)."""
    return wait_for(lambda: any(l.startswith(b"CANCEL") for l in new_lines(mark)) and new_lines(mark),
                    5) or new_lines(mark)


def new_lines(mark):
    return [l for _, l in fd.received[mark:]]


def parse_auth(line):
    f = line.split(b"\t")
    params = {}
    order = []
    for p in f[3:]:
        k, _, v = p.partition(b"=")
        params[k.decode()] = v
        order.append(k.decode())
    return f, params, order


def unescape(v):
    out = bytearray()
    i = 0
    while i < len(v):
        if v[i] == 1 and i + 1 < len(v):
            out += {ord("1"): b"\x01", ord("t"): b"\t", ord("r"): b"\r", ord("n"): b"\n",
                    ord("0"): b"\0"}.get(v[i + 1], bytes([v[i + 1]]))
            i += 2
        else:
            out.append(v[i])
            i += 1
    return bytes(out)


# ================================================================ mechanisms
c = conn("tls")
r = c.ehlo()
advert = [l[4:] for l in r.lines if l[4:].upper().startswith("AUTH ")]
is_(advert, ["AUTH PLAIN LOGIN OAUTHBEARER"],
    "advertised: Dovecot's mechanisms that can be relayed (no GSSAPI/EXTERNAL/ANONYMOUS/-PLUS/SCRAM)")
mark = len(fd.received)
for mech in ("GSSAPI", "EXTERNAL", "ANONYMOUS", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "CRAM-MD5"):
    r = c.cmd("AUTH %s" % mech)
    is_(r.code, 504, "AUTH %s: 504" % mech)
for ir in ("AGFs!ce==", "=AAA", "AAA"):
    r = c.cmd("AUTH PLAIN " + ir)
    is_(r.code, 501, "bad base64 %r: 501" % ir)
c.cmd("AUTH PLAIN")
r = c.cmd("AGFs\x01taWNl")
is_(r.code, 501, "bad base64 after 334: 501")
lines = cancelled(mark)
auths = [l for l in lines if l.startswith(b"AUTH")]
ok(len(auths) == 1 and b"resp=" not in auths[0],
   "none of them reached Dovecot: only the AUTH PLAIN without initial response did", lines)
is_([l for l in lines if l.startswith(b"CONT")], [], "the bad 334 response was not forwarded as CONT")
c.close()

# ================================================================ the AUTH line
mark = len(fd.received)
opened_mark = len(OPENED)
c = conn("tls")
cport = c.sock.getsockname()[1]
resp = plain_resp(ALICE, ALICE_PW)
r = c.cmd("AUTH PLAIN " + resp)
is_(r.code, 235, "PLAIN with initial response: 235")
auths = [l for l in new_lines(mark) if l.startswith(b"AUTH")]
if ok(len(auths) == 1, "one AUTH line", auths):
    f, params, order = parse_auth(auths[0])
    ok(f[1].isdigit() and int(f[1]) > 0, "AUTH id is a positive number", f[1])
    is_(f[2], b"PLAIN", "mechanism PLAIN")
    is_(params.get("service"), b"smtp", "service=smtp")
    is_(params.get("rip"), b"127.0.0.1", "rip= the client's address")
    is_(params.get("rport"), str(cport).encode(), "rport= the client's port")
    is_(params.get("lip"), b"127.0.0.1", "lip= the listener's address")
    is_(params.get("lport"), str(tp).encode(), "lport= the listener's port")
    is_(params.get("local_name"), MYHOST.encode(), "local_name= the TLS server name (SNI)")
    ok(params.get("secured") in (b"tls", b""), "secured", params.get("secured"))
    is_(order[-1], "resp", "resp= is the last parameter")
    is_(params.get("resp"), resp.encode(), "resp= is the client's base64, unchanged")
    is_(sorted(set(order) - KNOWN_PARAMS), [], "no unknown parameters")
like(d.log(), r"sasl_username=alice@example\.com", "logged in as alice")
c.close()

# from another address: rip follows the client
mark = len(fd.received)
c = conn("starttls", source="127.0.0.2")
r = c.cmd("AUTH PLAIN")
is_(r.lines[-1], "334 ", "PLAIN without initial response: 334 (empty challenge)")
r = c.cmd(resp)
is_(r.code, 235, "then 235")
lines = new_lines(mark)
auths = [l for l in lines if l.startswith(b"AUTH")]
conts = [l for l in lines if l.startswith(b"CONT")]
if ok(len(auths) == 1 and len(conts) == 1, "one AUTH and one CONT line", lines):
    f, params, order = parse_auth(auths[0])
    is_(params.get("rip"), b"127.0.0.2", "rip=127.0.0.2 for a client from 127.0.0.2")
    is_(params.get("lport"), str(sp).encode(), "lport= the starttls listener")
    ok("resp" not in params, "no resp= without an initial response", auths[0])
    is_(conts[0], b"CONT\t" + f[1] + b"\t" + resp.encode(), "CONT line: same id, the client's base64 unchanged")
c.close()

# LOGIN, initial response "=", cancel
mark = len(fd.received)
c = conn("tls")
r = c.cmd("AUTH LOGIN =")
is_(r.lines[-1], "334 " + b64("Username:"), "LOGIN = -> Username: prompt passed through")
r = c.cmd(b64(ALICE))
is_(r.lines[-1], "334 " + b64("Password:"), "Password: prompt passed through")
r = c.cmd(b64(ALICE_PW))
is_(r.code, 235, "LOGIN: 235")
lines = new_lines(mark)
auths = [l for l in lines if l.startswith(b"AUTH")]
if ok(len(auths) == 1, "one AUTH line for LOGIN ="):
    f, params, order = parse_auth(auths[0])
    ok(params.get("resp") in (b"", b"="), "'=' is forwarded as an empty initial response (resp= or resp==)",
       auths[0])
    is_(order[-1], "resp", "resp= last")
is_([l.split(b"\t", 2)[2] for l in lines if l.startswith(b"CONT")], [b64(ALICE).encode(), b64(ALICE_PW).encode()],
    "two CONT lines with the client's base64")
c.close()

mark = len(fd.received)
c = conn("tls")
c.cmd("AUTH LOGIN")
r = c.cmd("*")
is_(r.code, 501, "'*': 501")
lines = cancelled(mark)
auths = [l for l in lines if l.startswith(b"AUTH")]
cancels = [l for l in lines if l.startswith(b"CANCEL")]
ok(len(auths) == 1 and cancels == [b"CANCEL\t" + auths[0].split(b"\t")[1]],
   "'*' sends CANCEL with the request's id to Dovecot", lines)
c.close()

# refusals and temporary failures decided by Dovecot
c = conn("tls")
r = c.cmd("AUTH PLAIN " + plain_resp("carol@example.com", "carol-secret"))
ok(r.code == 535 and r.enhanced == "5.7.8", "OK with nologin is a refusal: 535 5.7.8", str(r))
r = c.cmd("MAIL FROM:<carol@example.com>")
is_(r.code, 530, "and does not authenticate")
r = c.cmd("AUTH PLAIN " + plain_resp("dave@example.com", "x"))
ok(r.code == 454 and r.enhanced == "4.7.0", "FAIL code=temp_fail: 454 4.7.0", str(r))
r = c.cmd("AUTH PLAIN " + resp)
is_(r.code, 235, "the session goes on: 235")
c.close()
like(d.log(), r"SASL PLAIN authentication unavailable: ", "temp_fail logged as 'unavailable'")
unlike(d.log(), r"authentication failed: login=<dave@example\.com>",
       "temp_fail is not logged as a failed login (fail2ban would count it)")

# ================================================================ smuggling: nothing raw inside a value
SMUGGLE = [
    plain_resp(ALICE + "\tuser=admin", ALICE_PW),
    plain_resp("x\nAUTH\t99\tPLAIN\tservice=smtp\tno-penalty\n", "pw"),
    plain_resp(ALICE, ALICE_PW + "\r\n"),
    plain_resp(ALICE, "pw\tno-penalty"),
    plain_resp(ALICE, "a\0b"),
    plain_resp(ALICE + "\x01t", "\x010"),
]
mark = len(fd.received)
for s_ in SMUGGLE:
    c = conn("tls")
    r = c.cmd("AUTH PLAIN " + s_)
    c2 = conn("starttls")
    c2.cmd("AUTH PLAIN")
    r2 = c2.cmd(s_)
    ok(r.code == 535 and r2.code == 535, "smuggled PLAIN %r: 535 (IR and 334 forms)" % s_[:24], (str(r), str(r2)))
    c.close()
    c2.close()
c = conn("tls")
c.cmd("AUTH LOGIN " + b64(ALICE + "\tuser=admin\r\nAUTH\t98"))
r = c.cmd(b64("pw\nCONT\t1\tx"))
is_(r.code, 535, "smuggled LOGIN name and password: 535")
c.close()
# a TAB or bare CR inside the line is bad base64 (501); a NUL or a bare LF
# makes the line itself invalid (500)
for label, data, code in [("TAB", b"AUTH PLAIN " + resp.encode() + b"\tno-penalty\r\n", 501),
                          ("NUL", b"AUTH PLAIN AGFs\x00aWNl\r\n", 500),
                          ("CR", b"AUTH PLAIN " + resp.encode() + b"\rAUTH\t97\r\n", 501),
                          ("LF", b"AUTH PLAIN " + resp.encode() + b"\nAUTH\t96\tPLAIN\tservice=smtp\r\n", 500)]:
    c = conn("tls")
    c.send(data)
    r = c.reply(5)
    is_(r.code, code, "raw %s in the AUTH command: refused with %d" % (label, code))
    c.close()
# SNI: GnuTLS may refuse odd names in the handshake; whatever gets through must arrive escaped
sni_seen = []
for sni in ("odd\tname.example", "odd\x01tname.example", "odd\rname.example", "odd\nname.example",
            "odd name.example", "odd_name.example"):
    try:
        c = conn("tls", server_hostname=sni)
    except (OSError, ssl.SSLError, UnicodeError, ValueError):
        continue
    sni_seen.append(sni)
    m0 = len(fd.received)
    r = c.cmd("AUTH PLAIN " + resp)
    is_(r.code, 235, "SNI %r accepted by TLS: login works" % sni)
    auths = [l for l in new_lines(m0) if l.startswith(b"AUTH")]
    if auths:
        _, params, _ = parse_auth(auths[0])
        ok("local_name" not in params or unescape(params["local_name"]) == sni.encode(),
           "SNI %r: local_name= unescapes to exactly the client's name" % sni, auths[0])
    c.close()
diag("SNI names GnuTLS let through: %r" % sni_seen)

ok(d.wait_closed(*OPENED[opened_mark:]), "submitd logged the end of every session above")
lines = new_lines(mark)
bad = [l for l in lines if l.split(b"\t", 1)[0] not in (b"AUTH", b"CONT", b"CANCEL", b"VERSION", b"CPID")]
is_(bad, [], "every line submitd sent starts with a protocol command (no forged line)")
is_([l for l in lines if b"\r" in l or b"\0" in l], [], "no raw CR or NUL anywhere")
bad_esc = [l for l in lines if re.search(rb"\x01(?![1trn0])|\x01$", l)]
is_(bad_esc, [], "every \\001 is an escape sequence")
auths = [l for l in lines if l.startswith(b"AUTH")]
bad_params = []
resp_ok = True
for l in auths:
    f, params, order = parse_auth(l)
    unknown = set(order) - KNOWN_PARAMS
    if unknown or len(order) != len(set(order)):
        bad_params.append(l)
    if "resp" in params and (order[-1] != "resp" or not re.fullmatch(rb"[A-Za-z0-9+/]*={0,2}", params["resp"])):
        resp_ok = False
is_(bad_params, [], "no AUTH line has an unknown or repeated parameter (no user=, no-penalty ...)")
ok(resp_ok, "every resp= is last and pure base64")
sent = set(SMUGGLE)
got = set(parse_auth(l)[1].get("resp", b"").decode() for l in auths)
got |= set(l.split(b"\t", 2)[2].decode() for l in lines if l.startswith(b"CONT") and l.count(b"\t") == 2)
is_(sorted(sent - got), [], "every smuggled response reached Dovecot as the client's base64, unchanged")
ok(all(l.count(b"\t") == 2 for l in lines if l.startswith(b"CONT")), "CONT lines have exactly two TABs")

# ================================================================ misbehaving Dovecot
def in_flight(n, mode="tls"):
    """n sessions, each with AUTH PLAIN sent and not answered yet."""
    cs = []
    for i in range(n):
        c = conn(mode)
        c.send("AUTH PLAIN %s\r\n" % resp)
        cs.append(c)
    return cs


def login_works(timeout=10):
    def once():
        c = conn("tls")
        r = c.cmd("AUTH PLAIN " + resp, timeout=5)
        c.close()
        return r.code == 235
    return wait_for(once, timeout, 0.2)


# silence: the request times out (auth_timeout = 1s)
fd.mode = "silent"
c = conn("tls")
t0 = time.time()
m0 = len(fd.received)
r = c.cmd("AUTH PLAIN " + resp, timeout=10)
dt = time.time() - t0
ok(r.code == 454 and r.enhanced == "4.7.0", "silent Dovecot: 454 4.7.0", str(r))
ok(0.8 <= dt <= 3.5, "after about auth_timeout (1s): %.2f s" % dt)
is_(c.cmd("NOOP").code, 250, "session goes on after the timeout")
cancelled(m0)
auths = [l for l in new_lines(m0) if l.startswith(b"AUTH")]
ok(auths and (b"CANCEL\t" + auths[0].split(b"\t")[1]) in new_lines(m0), "the timed-out request is CANCELled",
   new_lines(m0))
c.close()
fd.mode = "normal"
ok(login_works(), "Dovecot answers again: login works")

# garbage line with a request in flight
fd.mode = "silent"
n0 = len(fd.auth_lines())
cs = in_flight(2)
ok(wait_for(lambda: len(fd.auth_lines()) >= n0 + 2, 3), "two requests in flight")
time.sleep(0.1)
fd.send_all(b"THIS IS NOT\tTHE PROTOCOL\n")
rs = [c.reply(5) for c in cs]
ok(all(r.code == 454 for r in rs), "garbage from Dovecot: requests in flight get 454", [str(r) for r in rs])
for c in cs:
    c.close()
fd.mode = "normal"
ok(login_works(), "after garbage: submitd reconnects, login works")


# a reply for an id never sent must not log anyone in
def last_id():
    a = fd.auth_lines()
    return a[-1].split(b"\t")[1].decode() if a else None


fd.mode = "silent"
n0 = len(fd.auth_lines())
cs = in_flight(1)
ok(wait_for(lambda: len(fd.auth_lines()) > n0, 3), "a request in flight")
time.sleep(0.1)
fd.send_all(b"OK\t4000000000\tuser=admin@example.com\n")
r = cs[0].reply(5)
ok(r.code == 454 and r.enhanced == "4.7.0",
   "OK for an unknown id is ignored (as Dovecot's own client does): never 235; the request in flight "
   "still waits and times out with 454", str(r))
cs[0].close()
unlike(d.log(), r"sasl_username=admin@example\.com", "nobody logged in as the forged user")
like(d.log(), r"reply for an unknown request id 4000000000 ignored", "the unknown id is logged")
fd.mode = "normal"
ok(login_works(), "after the unknown id: login works")

# duplicate reply: the first counts, the second is ignored
fd.mode = "silent"
n0 = len(fd.auth_lines())
cs = in_flight(1)
ok(wait_for(lambda: len(fd.auth_lines()) > n0, 3), "a request in flight")
time.sleep(0.1)
rid = last_id()
fd.send_all(("FAIL\t%s\treason=no\nOK\t%s\tuser=alice@example.com\n" % (rid, rid)).encode())
r = cs[0].reply(5)
is_(r.code, 535, "FAIL then OK for one id: the FAIL counts (535), the OK is not honoured")
r = cs[0].cmd("MAIL FROM:<alice@example.com>")
is_(r.code, 530, "still not authenticated")
cs[0].close()
fd.mode = "normal"
ok(login_works(), "after the duplicate reply: login works again")

# ================================================================ reply shapes
# Each OK/FAIL shape Dovecot 2.3 and 2.4 send, judged as Dovecot's own auth
# client judges it (src/lib-auth-client/ in Dovecot's sources): empty and
# unknown fields are ignored; OK without a usable user=, or with two
# different ones, fails that login alone (454); nologin/proxy refuse.
SHAPES = [
    ("sql-trailing", "OK\t{id}\tuser=john@example.org\t", 235, "SQL passdb: trailing empty field"),
    ("sql-case", "OK\t{id}\tuser=john@example.org\t\toriginal_user=John@Example.ORG", 235,
     "SQL passdb, login in other letter case: empty field, original_user="),
    ("unknown", "OK\t{id}\tuser=u@example.org\tauth_user=u@example.org\tquota_rule=*:storage=1G\tflag", 235,
     "unknown fields and flags"),
    ("v24", "OK\t{id}\tuser=u@example.org\tprotocol=smtp\t", 235, "2.4-style extra fields"),
    ("nologin", "OK\t{id}\tuser=u@example.org\tnologin\treason=Account disabled", 535, "OK + nologin"),
    ("referral", "OK\t{id}\tuser=u@example.org\tnologin\tproxy\thost=192.0.2.1", 535, "OK + proxy referral"),
    ("reason-esc", "FAIL\t{id}\tuser=u@example.org\treason=Bad\x01tpass\x01nword", 535,
     "FAIL with an escaped reason"),
    ("tempfail", "FAIL\t{id}\tuser=u@example.org\tcode=temp_fail\treason=SQL down", 454, "code=temp_fail"),
    ("fail-empty", "FAIL\t{id}\tuser=u@example.org\t", 535, "FAIL with a trailing empty field"),
    ("no-user", "OK\t{id}\t\t", 454, "OK without user="),
    ("two-users", "OK\t{id}\tuser=a@example.org\tuser=b@example.org", 454, "two different user= values"),
]
for login, line, want, name in SHAPES:
    fd.replies[login] = line
log_mark = len(d.log())
for mode in ("tls", "starttls"):
    for login, line, want, name in SHAPES:
        c = conn(mode)
        r = c.cmd("AUTH PLAIN " + plain_resp(login, "any"))
        is_(r.code, want, "%s: %s -> %d" % (mode, name, want))
        c.close()
ok(fd.connections() == 2 and d.running(), "no shape cost the Dovecot connections (one per worker)")
like(d.log()[log_mark:], r"sasl_username=john@example\.org", "the SQL passdb's user= is the login name logged")
unlike(d.log()[log_mark:], r"dovecot auth: .*protocol error", "no shape was called a protocol error")
ok(login_works(), "ordinary logins still work")

# disconnect with twenty requests in flight
fd.mode = "silent"
n0 = len(fd.auth_lines())
cs = in_flight(20)
got = wait_for(lambda: len(fd.auth_lines()) - n0 >= 20, 5)
ok(got, "twenty AUTH requests in flight at Dovecot")
t0 = time.time()
fd.drop_all()
rs = [c.reply(5) for c in cs]
dt = time.time() - t0
codes = [r.code for r in rs]
ok(codes == [454] * 20, "Dovecot drops the connection: all twenty get 454", codes)
ok(dt < 3, "promptly (%.2f s)" % dt)
ok(all(c.cmd("NOOP").code == 250 for c in cs), "and their sessions go on")
for c in cs:
    c.close()
fd.mode = "normal"
ok(login_works(), "after the disconnect: submitd reconnects, login works")
ok(d.running(), "submitd survived all of that")

# Dovecot gone entirely: 454 at once, then back
fd.stop()
c = conn("tls")
t0 = time.time()
r = c.cmd("AUTH PLAIN " + resp, timeout=10)
ok(r.code == 454 and time.time() - t0 < 3, "socket gone: 454 promptly (%.2f s)" % (time.time() - t0), str(r))
c.close()
fd.start()
ok(login_works(15), "socket back: login works again without restarting submitd")

# ================================================================ Dovecot not there when submitd starts
late = env.path("late-auth.sock")
p3 = free_port()
d3 = env.submitd(auth_config(certs, sink, late, ["127.0.0.1:%d tls" % p3], [("workers", "1")]),
                 name="submitd-late")
c = SMTP("127.0.0.1", p3, tls=True, certs=certs)
r = c.ehlo()
ok(any(l[4:].upper().startswith("AUTH ") for l in r.lines),
   "Dovecot down since startup: AUTH still advertised (reference §6: never drop AUTH from EHLO)",
   str(r))
r = c.cmd("AUTH PLAIN " + resp)
ok(r.code == 454 and r.enhanced == "4.7.0",
   "Dovecot down since startup: AUTH PLAIN is a temporary failure, 454 4.7.0 (not 504: the client would give up)",
   str(r))
is_(c.cmd("NOOP").code, 250, "the session goes on")
c.close()
fd_late = FakeDovecot(late).start()
ok(wait_dovecot_connected(d3, 1, 15), "submitd connects once Dovecot is there")
c = SMTP("127.0.0.1", p3, tls=True, certs=certs)
c.ehlo()
r = c.cmd("AUTH PLAIN " + resp)
is_(r.code, 235, "and logins work")
c.close()
d3.stop()
fd_late.stop()

# ================================================================ SIGTERM with a request pending
fd.mode = "silent"
p2 = free_port()
d2 = env.submitd(auth_config(certs, sink, fd.path, ["127.0.0.1:%d tls" % p2],
                             [("workers", "1"), ("auth_timeout", "30s")]), name="submitd-shutdown")
c = SMTP("127.0.0.1", p2, tls=True, certs=certs)
c.ehlo()
n0 = len(fd.auth_lines())
c.send("AUTH PLAIN %s\r\n" % resp)
wait_for(lambda: len(fd.auth_lines()) > n0, 3)
t0 = time.time()
d2.stop()  # TAP: stopped on SIGTERM (no SIGKILL needed), no sanitizer report
ok(time.time() - t0 < 4, "SIGTERM with an AUTH waiting for Dovecot: exits within 4 s (%.1f s)" % (time.time() - t0))
r = c.reply(2)
is_(r.code, 421, "the waiting client gets 421 (shutting down)")
c.close()
fd.mode = "normal"

done()
