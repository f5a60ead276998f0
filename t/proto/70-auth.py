#!/usr/bin/env python3
"""AUTH through a real, private Dovecot (t/lib/dovecot.py): PLAIN and LOGIN in
every form (initial response, 334 challenges, "="), real clients (swaks,
smtplib, curl, msmtp) on the starttls and the tls listener, delivery with an
authenticated Received: header, refusals (wrong password, unknown user,
nologin), no AUTH before TLS or on a plain listener, 503/530 sequencing,
cancel, bad base64, over-long responses, unknown mechanisms, CR/LF/TAB/NUL
smuggling, Dovecot stopped and started again, log lines (never a password)
and the fail2ban filter over the real log.

Everything runs twice (harness.variants): against Dovecot with a passwd-file
passdb, and against the ISPmail guide's deployment (SQL passdb on a private
MariaDB, SHA512-CRYPT, static userdb), whose OK replies carry an empty
trailing field and, for a login typed in another letter case, an empty field
before original_user=.

Dovecot slows down every request from a client address that failed recently
(its "auth penalty", 2..15 s, keyed on the rip= submitd sends). Every test
that fails a login therefore connects from its own address in 127/8 (all of
it is local on Linux), which also shows that rip= is the client's address.

docs/design.md invariants 3, 4, 8, 10; docs/dovecot-auth.md; RFC 4954."""
import os
import re
import smtplib
import ssl
import subprocess
import sys
import time
import warnings

warnings.simplefilter("ignore", DeprecationWarning)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

PASSDB = variants(PASSDBS)

ALICE, ALICE_PW = "alice@example.com", "alice-secret"
BOB, BOB_PW = "bob@example.com", "bob-secret"
CAROL, CAROL_PW = "carol@example.com", "carol-secret"
# Wrong passwords used below: none of them may ever show up in submitd's log.
WRONG = ["Wr0ng-%d-%s" % (i, os.urandom(4).hex()) for i in range(8)]
SECRETS = [ALICE_PW, BOB_PW, CAROL_PW] + WRONG

env, certs, sink = setup()
dv = private_dovecot(env, PASSDB, failure_delay="0")

P = {m: free_port() for m in ("starttls", "tls", "plain", "trusted")}
d = env.submitd(auth_config(certs, sink, dv.socket, [
    "127.0.0.1:%d starttls" % P["starttls"],
    "127.0.0.1:%d tls" % P["tls"],
    "127.0.0.1:%d plain" % P["plain"],
    "127.0.0.1:%d starttls trusted" % P["trusted"],
], [
    # Only 127.0.0.1 itself is "ours": the other 127/8 addresses used below
    # are outsiders, even on the trusted listener.
    ("mynetworks", "127.0.0.1/32"),
    ("workers", "2"),
    ("auth_failure_delay", "100ms"),
    ("auth_failure_delay_max", "400ms"),
    ("auth_ip_failure_limit", "1000"),
]))
ok(wait_dovecot_connected(d, 2), "submitd completed its Dovecot handshakes (one per worker)")
TRUSTED = 3  # index of the trusted starttls listener

_ip = [1, 0]


def fresh_ip():
    """A client address in 127/8 no earlier test used (127.0.1.1, .2, ...)."""
    _ip[1] += 1
    if _ip[1] > 254:
        _ip[0], _ip[1] = _ip[0] + 1, 1
    return "127.0.%d.%d" % tuple(_ip)


CLIENTS = []      # every raw client talking to d (535s are counted from them)
EXTRA_535 = [0]   # failed logins made by external clients (swaks, curl)


def conn(mode="starttls", source="127.0.0.1", **kw):
    c = client_from(source, d, mode, certs, **kw)
    CLIENTS.append(c)
    return c


def caps(r):
    return [l[4:].upper() for l in r.lines[1:] if len(l) > 4]


def auth_cap(r):
    return [x for x in caps(r) if x.split()[0] == "AUTH"]


def text_of(c):
    return c.dump(100000)


MARK = "auth-%s" % os.urandom(3).hex()


def delivered_with(subject, timeout=5):
    """The stored message whose content names subject (None after timeout)."""
    want = subject.encode()

    def find():
        for m in sink.messages():
            if want in m.content:
                return m
        return None
    return wait_for(find, timeout)


def check_delivery(label, subject, user=ALICE):
    m = delivered_with(subject)
    if not ok(m is not None, "%s: delivered to the sink" % label):
        return
    rec = first_header(m.content)
    ok("(Authenticated sender: %s)" % user in rec and re.search(r"\bwith ESMTPSA\b", rec),
       "%s: Received: names the authenticated user and says ESMTPSA" % label, rec)


def send_one(c, label, user=ALICE):
    subj = "%s %s" % (MARK, label)
    out = c.send_message(user, ["rcpt@example.net"], stuff(make_message(subject=subj, frm=user)))
    ok([x.code for x in out] == [250, 250, 354, 250], "%s: transaction accepted" % label,
       [str(x) for x in out])
    check_delivery(label, subj, user)


# ================================================================ capabilities, TLS only
c = SMTPFrom("127.0.0.1", "127.0.0.1", P["starttls"], certs=certs)
CLIENTS.append(c)
r = c.ehlo()
is_(auth_cap(r), [], "starttls listener before STARTTLS: AUTH not advertised")
r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW))
ok(r.code == 530 and r.enhanced == "5.7.0" and "Must issue a STARTTLS command first" in r.text,
   "AUTH before STARTTLS: 530 5.7.0 Must issue a STARTTLS command first", str(r))
r = c.cmd("AUTH LOGIN")
is_(r.code, 530, "AUTH LOGIN (no initial response) before STARTTLS: 530 too")
c.starttls()
r = c.ehlo()
is_(auth_cap(r), ["AUTH PLAIN LOGIN"], "after STARTTLS: AUTH PLAIN LOGIN (Dovecot's mechanisms)")
r = c.cmd("MAIL FROM:<alice@example.com>")
ok(r.code == 530 and r.enhanced == "5.7.0",
   "the refused pre-TLS AUTH did not authenticate: MAIL still 530 5.7.0", str(r))
c.close()

c = conn("tls")
r = c.ehlo()
is_(auth_cap(r), ["AUTH PLAIN LOGIN"], "tls listener: AUTH PLAIN LOGIN")
c.close()

c = SMTPFrom("127.0.0.1", "127.0.0.1", P["plain"])
CLIENTS.append(c)
r = c.ehlo()
is_(auth_cap(r), [], "plain listener: AUTH not advertised")
r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW))
ok(r.code == 538 and r.enhanced == "5.7.11", "AUTH on a plain listener: 538 5.7.11", str(r))
r = c.cmd("AUTH LOGIN")
is_(r.code, 538, "AUTH LOGIN on a plain listener: 538")
r = c.cmd("MAIL FROM:<alice@example.com>")
ok(r.code == 530 and r.enhanced == "5.7.0", "plain listener: MAIL still 530 5.7.0", str(r))
c.close()

# ================================================================ every exchange form, both listeners
USER_PROMPT, PASS_PROMPT = b64("Username:"), b64("Password:")


def form_plain_ir(c):
    return [c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW))]


def form_plain_334(c):
    r1 = c.cmd("AUTH PLAIN")
    return [r1, c.cmd(plain_resp(ALICE, ALICE_PW))]


def form_login(c):
    return [c.cmd("AUTH LOGIN"), c.cmd(b64(ALICE)), c.cmd(b64(ALICE_PW))]


def form_login_ir(c):
    return [c.cmd("AUTH LOGIN " + b64(ALICE)), c.cmd(b64(ALICE_PW))]


def form_login_eq(c):
    return [c.cmd("AUTH LOGIN ="), c.cmd(b64(ALICE)), c.cmd(b64(ALICE_PW))]


def form_lower(c):
    return [c.cmd("auth plain " + plain_resp(ALICE, ALICE_PW))]


FORMS = [
    ("PLAIN initial response", form_plain_ir, ["235"]),
    ("PLAIN 334 challenge", form_plain_334, ["334 ", "235"]),
    ("LOGIN", form_login, ["334 " + USER_PROMPT, "334 " + PASS_PROMPT, "235"]),
    ("LOGIN initial response", form_login_ir, ["334 " + PASS_PROMPT, "235"]),
    ("LOGIN =", form_login_eq, ["334 " + USER_PROMPT, "334 " + PASS_PROMPT, "235"]),
    ("lower-case auth plain", form_lower, ["235"]),
]
for mode in ("starttls", "tls"):
    for label, fn, want in FORMS:
        lab = "%s %s" % (mode, label)
        c = conn(mode)
        rs = fn(c)
        got = [r.lines[-1] if r.code != 235 else "235" for r in rs]
        is_(got, want, "%s: %s" % (lab, " / ".join(w.strip() for w in want)))
        if rs[-1].code == 235:
            is_(rs[-1].enhanced, "2.7.0", "%s: 235 2.7.0" % lab)
            send_one(c, lab.replace(" ", "-"))
        c.cmd("QUIT")
        c.close()

log = d.log()
like(log, r"\w+: client=\[127\.0\.0\.1\]:\d+, sasl_method=PLAIN, sasl_username=alice@example\.com\n",
     "log: success line names client IP:port, sasl_method=PLAIN and the user")
like(log, r"\w+: client=\[127\.0\.0\.1\]:\d+, sasl_method=LOGIN, sasl_username=alice@example\.com\n",
     "log: success line for LOGIN")

# Dovecot's canonical name is what counts afterwards (auth_username_format %Lu)
c = conn("tls")
r = c.cmd("AUTH PLAIN " + plain_resp("ALICE@Example.COM", ALICE_PW))
is_(r.code, 235, "PLAIN as ALICE@Example.COM: 235")
send_one(c, "canonical-user")
c.close()
like(d.log(), r"sasl_method=PLAIN, sasl_username=alice@example\.com\n",
     "the user Dovecot returned (lower-cased) is logged and put into Received:")
c = conn("starttls")
r = c.cmd("AUTH LOGIN " + b64(BOB))
r = c.cmd(b64(BOB_PW))
is_(r.code, 235, "bob (%s) over LOGIN: 235" % ("SSHA256" if PASSDB == "passwd-file" else "SHA512-CRYPT"))
send_one(c, "bob-login", user=BOB)
c.close()

# ================================================================ real clients


def swaks(label, port, tls_args, mech, password=ALICE_PW, source=None):
    subj = "%s %s" % (MARK, label.replace(" ", "-"))
    argv = ["swaks", "--server", "127.0.0.1:%d" % port, "--ehlo", "swaks.test.example",
            "--from", ALICE, "--to", "rcpt@example.net", "--header", "Subject: " + subj,
            "--body", "hello from swaks", "-a", mech, "-au", ALICE, "-ap", password] + tls_args
    if source:
        argv += ["--local-interface", source]
    st, out = run(argv)
    return st, out, subj


for mode, tls_args in (("starttls", ["--tls"]), ("tls", ["--tls-on-connect"])):
    for mech in ("PLAIN", "LOGIN"):
        label = "swaks %s %s" % (mode, mech)
        st, out, subj = swaks(label, P[mode], tls_args, mech)
        ok(st == 0 and re.search(r"(?m)^<[-~]\s+235 2\.7\.0", out), "%s: exit 0, 235 2.7.0" % label,
           out[-2500:])
        check_delivery(label, subj)

st, out, subj = swaks("swaks wrong password", P["starttls"], ["--tls"], "LOGIN", password=WRONG[0],
                      source=fresh_ip())
ok(st != 0 and re.search(r"(?m)^<[-~]\*?\s+535 5\.7\.8", out), "swaks with a wrong password: 535 5.7.8",
   out[-2500:])
if "535 5.7.8" in out:
    EXTRA_535[0] += 1

# smtplib
ctx = certs.client_context()


def smtplib_conn(mode):
    if mode == "tls":
        s = smtplib.SMTP_SSL("localhost", P["tls"], context=ctx, timeout=30)
    else:
        s = smtplib.SMTP("localhost", P["starttls"], timeout=30)
        s.starttls(context=ctx)
    s.ehlo("smtplib.test.example")
    return s


SMTPLIB = [
    ("login()", lambda s: s.login(ALICE, ALICE_PW)),
    ("auth_plain IR", lambda s: s.auth("PLAIN", s.auth_plain, initial_response_ok=True)),
    ("auth_plain 334", lambda s: s.auth("PLAIN", s.auth_plain, initial_response_ok=False)),
    ("auth_login IR", lambda s: s.auth("LOGIN", s.auth_login, initial_response_ok=True)),
    ("auth_login 334", lambda s: s.auth("LOGIN", s.auth_login, initial_response_ok=False)),
]
for mode in ("starttls", "tls"):
    for name, fn in SMTPLIB:
        label = "smtplib %s %s" % (mode, name)
        try:
            s = smtplib_conn(mode)
            s.user, s.password = ALICE, ALICE_PW
            code, resp = fn(s)
            ok(code == 235, "%s: 235" % label, (code, resp))
            subj = "%s %s" % (MARK, label.replace(" ", "-"))
            s.sendmail(ALICE, ["rcpt@example.net"], make_message(subject=subj, frm=ALICE))
            s.quit()
            check_delivery(label, subj)
        except (OSError, smtplib.SMTPException) as e:
            ok(False, label, repr(e))

try:
    s = smtplib.SMTP_SSL("localhost", P["tls"], context=ctx, timeout=30, source_address=(fresh_ip(), 0))
    try:
        s.login(ALICE, WRONG[1])
        ok(False, "smtplib login() with a wrong password raises SMTPAuthenticationError")
    except smtplib.SMTPAuthenticationError as e:
        ok(e.smtp_code == 535, "smtplib login() with a wrong password: SMTPAuthenticationError 535",
           repr(e))
        # login() tries every mechanism offered: PLAIN, then LOGIN
        EXTRA_535[0] += 2 if e.smtp_code == 535 else 0
    s.close()
except (OSError, smtplib.SMTPException) as e:
    ok(False, "smtplib wrong password", repr(e))

# curl
for label, url, extra in [
        ("curl STARTTLS AUTH=PLAIN", "smtp://localhost:%d" % P["starttls"], ["--ssl-reqd", "--login-options", "AUTH=PLAIN"]),
        ("curl STARTTLS AUTH=LOGIN sasl-ir", "smtp://localhost:%d" % P["starttls"],
         ["--ssl-reqd", "--login-options", "AUTH=LOGIN", "--sasl-ir"]),
        ("curl smtps AUTH=PLAIN sasl-ir", "smtps://localhost:%d" % P["tls"], ["--login-options", "AUTH=PLAIN", "--sasl-ir"]),
        ("curl smtps AUTH=LOGIN", "smtps://localhost:%d" % P["tls"], ["--login-options", "AUTH=LOGIN"]),
        ("curl smtps (curl picks)", "smtps://localhost:%d" % P["tls"], [])]:
    subj = "%s %s" % (MARK, label.replace(" ", "-"))
    path = env.path("curl-%d.eml" % len(CLIENTS + [label]))
    with open(path, "wb") as f:
        f.write(make_message(subject=subj, frm=ALICE))
    st, out = run(["curl", "-sS", "-v", "--cacert", certs.ca, url + "/curl.test.example",
                   "--user", "%s:%s" % (ALICE, ALICE_PW), "--mail-from", ALICE,
                   "--mail-rcpt", "rcpt@example.net", "--upload-file", path] + extra)
    mech = re.search(r"AUTH=(\w+)", " ".join(extra))
    ok(st == 0 and re.search(r"(?m)^< 235 2\.7\.0", out) and
       (mech is None or re.search(r"(?m)^> AUTH %s\b" % mech.group(1), out)),
       "%s: exit 0, 235 2.7.0" % label, out[-2500:])
    check_delivery(label, subj)

ip = fresh_ip()
st, out = run(["curl", "-sS", "-v", "--cacert", certs.ca, "--interface", ip,
               "smtps://localhost:%d/curl.test.example" % P["tls"], "--user", "%s:%s" % (ALICE, WRONG[2]),
               "--login-options", "AUTH=PLAIN", "--mail-from", ALICE, "--mail-rcpt", "rcpt@example.net",
               "--upload-file", "/dev/null"])
ok(st == 67 and re.search(r"(?m)^< 535 5\.7\.8", out), "curl with a wrong password: 535, exit 67 (login denied)",
   out[-2500:])
if re.search(r"(?m)^< 535 ", out):
    EXTRA_535[0] += 1

# msmtp
for label, port, starttls, auth in [("msmtp STARTTLS auth on", P["starttls"], "on", "on"),
                                    ("msmtp STARTTLS auth login", P["starttls"], "on", "login"),
                                    ("msmtp implicit TLS auth plain", P["tls"], "off", "plain"),
                                    ("msmtp implicit TLS auth on", P["tls"], "off", "on")]:
    rc = env.path("msmtprc-%s" % label.replace(" ", "-"))
    with open(rc, "w") as f:
        f.write("account default\nhost localhost\nport %d\ntls on\ntls_starttls %s\n"
                "tls_trust_file %s\nauth %s\nuser %s\npassword %s\nfrom %s\n"
                "domain msmtp.test.example\n" % (port, starttls, certs.ca, auth, ALICE, ALICE_PW, ALICE))
    os.chmod(rc, 0o600)
    subj = "%s %s" % (MARK, label.replace(" ", "-"))
    st, out = run(["msmtp", "-C", rc, "-v", "rcpt@example.net"], input=make_message(subject=subj, frm=ALICE))
    ok(st == 0 and "235 2.7.0" in out, "%s: exit 0, 235 2.7.0" % label, out[-2500:])
    check_delivery(label, subj)

# ================================================================ refusals
for label, fn, user in [
        ("wrong password (PLAIN)", lambda c: [c.cmd("AUTH PLAIN " + plain_resp(ALICE, WRONG[3]))], ALICE),
        ("unknown user (LOGIN)", lambda c: [c.cmd("AUTH LOGIN"), c.cmd(b64("nobody@example.com")),
                                            c.cmd(b64(WRONG[4]))], "nobody@example.com"),
        ("nologin user carol (PLAIN 334)" if PASSDB == "passwd-file" else
         "carol, not in virtual_users (PLAIN 334)", lambda c: [c.cmd("AUTH PLAIN"), c.cmd(plain_resp(CAROL, CAROL_PW))],
         CAROL),
        ("wrong password (LOGIN initial response)", lambda c: [c.cmd("AUTH LOGIN " + b64(BOB)),
                                                              c.cmd(b64(WRONG[5]))], BOB)]:
    ip = fresh_ip()
    c = conn("starttls" if "PLAIN" in label else "tls", source=ip)
    t0 = time.time()
    rs = fn(c)
    r = rs[-1]
    ok(r.code == 535 and r.enhanced == "5.7.8" and "Error: authentication failed: " in r.text,
       "%s: 535 5.7.8 Error: authentication failed: ..." % label, str(r))
    mech = "LOGIN" if "LOGIN" in label else "PLAIN"
    like(d.wait_log(r"SASL %s authentication failed: login=<%s>" % (mech, re.escape(user))) and d.log(),
         r"submitd\[\d+\]: warning: \w+: \[%s\]:\d+: SASL %s authentication failed: login=<%s>, reason=\S"
         % (re.escape(ip), mech, re.escape(user)),
         "%s: log line names [IP]:port, the mechanism and the login" % label)
    r = c.cmd("MAIL FROM:<%s>" % user)
    ok(r.code == 530 and r.enhanced == "5.7.0", "%s: MAIL afterwards is 530 5.7.0" % label, str(r))
    r = c.cmd("NOOP")
    is_(r.code, 250, "%s: session goes on (NOOP)" % label)
    c.close()
if PASSDB == "passwd-file":  # the guide's password_query returns no extra fields
    like(d.log(), r"login=<carol@example\.com>, reason=disabled",
         "nologin: Dovecot's OK+nologin is a refusal, its reason is logged")

# ================================================================ sequencing
c = conn("tls")
r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW))
is_(r.code, 235, "login")
r = c.cmd("AUTH PLAIN " + plain_resp(BOB, BOB_PW))
ok(r.code == 503 and r.enhanced == "5.5.1", "second AUTH after success: 503 5.5.1", str(r))
r = c.cmd("AUTH LOGIN")
is_(r.code, 503, "AUTH LOGIN after success: 503")
r = c.cmd("MAIL FROM:<alice@example.com>")
is_(r.code, 250, "MAIL after login")
r = c.cmd("AUTH PLAIN " + plain_resp(BOB, BOB_PW))
ok(r.code == 503 and r.enhanced == "5.5.1", "AUTH inside a transaction: 503 5.5.1", str(r))
r = c.cmd("RSET")
c.close()
like(d.log(), r"sasl_username=alice@example\.com", "still alice")

# trusted listener: 127.0.0.1 (in mynetworks) may send without AUTH; a
# transaction started that way refuses AUTH in the middle
c = client_from("127.0.0.1", d, TRUSTED, certs)
CLIENTS.append(c)
r = c.cmd("MAIL FROM:<webmail@example.com>")
is_(r.code, 250, "trusted listener + mynetworks: MAIL without AUTH accepted")
r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW))
ok(r.code == 503 and r.enhanced == "5.5.1", "AUTH during a transaction: 503 5.5.1", str(r))
c.cmd("RSET")
r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW))
is_(r.code, 235, "after RSET AUTH works on the trusted listener")
send_one(c, "trusted-listener-auth")
c.close()

# never an open relay: outsiders, or a non-trusted listener
before = sink.count()
ended = []
for label, src, mode in [("starttls listener, 127.0.0.1 (in mynetworks but not trusted)", "127.0.0.1", "starttls"),
                         ("tls listener, 127.0.0.1", "127.0.0.1", "tls"),
                         ("trusted listener, client outside mynetworks", fresh_ip(), TRUSTED)]:
    c = conn(mode, source=src)
    r = c.cmd("MAIL FROM:<alice@example.com>")
    ok(r.code == 530 and r.enhanced == "5.7.0" and "Authentication required" in r.text,
       "MAIL without AUTH, %s: 530 5.7.0 Authentication required" % label, str(r))
    c.send(b"RCPT TO:<rcpt@example.net>\r\nDATA\r\n" + stuff(make_message(subject="open relay?")))
    rs = [c.reply(5), c.reply(5)]
    ok([x.code for x in rs] == [503, 503], "%s: RCPT and DATA refused too (503, 503)" % label,
       [str(x) for x in rs])
    c.close()
    ended.append(c)
ok(d.wait_closed(*ended), "submitd logged the end of those three sessions")
is_(sink.count(), before, "nothing reached the sink without AUTH")

# ================================================================ exchange errors
c = conn("starttls")
r = c.cmd("AUTH PLAIN")
is_(r.lines[-1], "334 ", "PLAIN without initial response: '334 '")
r = c.cmd("*")
ok(r.code == 501 and r.enhanced == "5.7.0" and "Authentication aborted" in r.text,
   "'*' cancels: 501 5.7.0 Authentication aborted", str(r))
is_(c.cmd("NOOP").code, 250, "after the cancel the session goes on")
r = c.cmd("AUTH LOGIN " + b64(ALICE))
r = c.cmd("*")
is_(r.code, 501, "'*' at LOGIN's Password: prompt: 501")
is_(c.cmd("MAIL FROM:<alice@example.com>").code, 530, "a cancelled exchange does not authenticate")
r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW))
is_(r.code, 235, "two cancels (failed attempts, under auth_max_failures): a login still works in the session")
c.close()

c = conn("tls")
for ir in ["AGFs!ce==", "=AAA", "AA=A", "AAA", "AAAA====", "AGFsaWNl\x01t"]:
    r = c.cmd("AUTH PLAIN " + ir)
    ok(r.code == 501 and r.enhanced == "5.5.2", "malformed base64 initial response %r: 501 5.5.2" % ir, str(r))
r = c.cmd("AUTH PLAIN")
r = c.cmd("AGFs%aWNl")
ok(r.code == 501 and r.enhanced == "5.5.2", "malformed base64 response after 334: 501 5.5.2", str(r))
r = c.cmd("AUTH LOGIN")
c.cmd(b64(ALICE))
r = c.cmd("YWxpY2Ut=2VjcmV0")
ok(r.code == 501 and r.enhanced == "5.5.2", "'=' inside a LOGIN response: 501 5.5.2", str(r))
is_(c.cmd("NOOP").code, 250, "session goes on after bad base64")
r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW))
is_(r.code, 235, "bad base64 after 334: the session goes on, a login works afterwards")
c.close()

c = conn("starttls")
c.cmd("AUTH PLAIN")
r = c.cmd("A" * 12292)
ok(r.code == 500 and r.enhanced == "5.5.6", "response of 12292 octets: 500 5.5.6", str(r))
is_(c.cmd("NOOP").code, 250, "session goes on after the over-long response")
c.cmd("AUTH LOGIN")
r = c.cmd("QUFB" * 40000)
ok(r.code == 500 and r.enhanced == "5.5.6", "response of 160000 octets: 500 5.5.6", str(r))
is_(c.cmd("NOOP").code, 250, "session goes on after a 160 kB response")
r = c.cmd("AUTH PLAIN " + "A" * 13000)
is_(r.code, 500, "over-long initial response: 500")
is_(c.cmd("NOOP").code, 250, "session goes on after the over-long AUTH command")
r = c.cmd("AUTH PLAIN " + plain_resp(ALICE, ALICE_PW))
is_(r.code, 235, "and a login works in that session")
c.close()

c = conn("starttls", source=fresh_ip())
c.cmd("AUTH PLAIN")
r = c.cmd("A" * 12288, timeout=30)
ok(r.code == 535, "response of exactly 12288 octets is forwarded (Dovecot refuses it: 535)", str(r))
c.close()

c = conn("tls")
for mech in ("CRAM-MD5", "GSSAPI", "EXTERNAL", "ANONYMOUS", "XOAUTH2", "X-UNKNOWN"):
    r = c.cmd("AUTH %s" % mech)
    ok(r.code == 504 and r.enhanced == "5.5.4", "AUTH %s (not offered): 504 5.5.4" % mech, str(r))
r = c.cmd("AUTH")
is_(r.code, 501, "AUTH without a mechanism: 501")
r = c.cmd("AUTH PLAIN %s extra" % plain_resp(ALICE, ALICE_PW))
is_(r.code, 501, "AUTH with two arguments: 501")
is_(c.cmd("MAIL FROM:<alice@example.com>").code, 530, "none of that authenticated")
c.close()

# ================================================================ smuggling CR/LF/TAB/NUL toward Dovecot
CONNECTED = r"dovecot auth: \S+: connected"
n_connected = len(re.findall(CONNECTED, d.log()))
dv_log_before = len(dv.read_log())
good = plain_resp(ALICE, ALICE_PW)
inner = "AUTH\t99\tPLAIN\tservice=smtp\tresp=" + plain_resp("admin@example.com", "x")
SMUGGLE = [
    ("PLAIN user with TAB + user=admin", "PLAIN", plain_resp(ALICE + "\tuser=admin", ALICE_PW)),
    ("PLAIN user with LF + a forged AUTH line", "PLAIN", plain_resp("x\n" + inner + "\n", ALICE_PW)),
    ("PLAIN password with CR LF", "PLAIN", plain_resp(ALICE, ALICE_PW + "\r\n")),
    ("PLAIN password with TAB no-penalty", "PLAIN", plain_resp(ALICE, WRONG[6] + "\tno-penalty")),
    ("PLAIN with a NUL inside the password", "PLAIN", plain_resp(ALICE, "alice\0secret")),
    ("PLAIN with \\001 escapes", "PLAIN", plain_resp(ALICE + "\x01t\x01n", ALICE_PW)),
    ("LOGIN user with TAB", "LOGIN", b64(ALICE + "\tuser=admin")),
]
for label, mech, resp in SMUGGLE:
    c = conn("tls", source=fresh_ip())
    if mech == "PLAIN":
        r = c.cmd("AUTH PLAIN " + resp, timeout=30)
    else:
        r = c.cmd("AUTH LOGIN " + resp, timeout=30)
        if r.code == 334:  # Dovecot may refuse the name at once, or after the password
            r = c.cmd(b64(ALICE_PW), timeout=30)
    ok(r.code == 535, "%s: fails cleanly with 535" % label, str(r))
    c.close()

# raw control characters on the SMTP side never get past the base64 check:
# a TAB or bare CR inside the line is bad base64 (501), a NUL or a bare LF
# makes the command line itself invalid (500)
for label, data, code in [
        ("TAB in the AUTH line", b"AUTH PLAIN " + good.encode() + b"\tno-penalty\r\n", 501),
        ("NUL in the AUTH line", b"AUTH PLAIN AGFs\x00aWNl\r\n", 500),
        ("bare CR in the AUTH line", b"AUTH PLAIN " + good.encode() + b"\rAUTH\t98\tPLAIN\r\n", 501),
        ("bare LF in the AUTH line", b"AUTH PLAIN " + good.encode() + b"\nAUTH\t97\tPLAIN\tservice=smtp\r\n",
         500)]:
    c = conn("starttls", source=fresh_ip())
    c.send(data)
    r = c.reply(10)
    ok(r.code == code, "%s: refused with %d (%s)" % (label, code, r), str(r))
    c.pending(0.5)  # the rest of the line may come back as a second (refused) command
    r = c.cmd("MAIL FROM:<alice@example.com>")
    ok(r.code == 530, "%s: not authenticated afterwards (MAIL 530)" % label, str(r))
    c.close()
for label, line in [("TAB in a 334 response", good + "\tno-penalty"),
                    ("NUL in a 334 response", "AGFs\x00aWNl")]:
    c = conn("tls", source=fresh_ip())
    c.cmd("AUTH PLAIN")
    r = c.cmd(line)
    ok(r.code == 501, "%s: refused with 501" % label, str(r))
    c.close()

# the TLS server name (SNI) is client input that goes into local_name=
# (GnuTLS refuses such a name in the handshake already; if it ever lets one
# through, the login must still work: local_name= is escaped, not split.
# t/proto/71-auth-fake.py shows the escaped value on the wire.)
try:
    c = conn("tls", server_hostname="evil.example\tuser=admin\tno-penalty")
    r = c.cmd("AUTH PLAIN " + good)
    is_(r.code, 235, "SNI with TABs: login works (local_name= is escaped, not split)")
    c.close()
except (OSError, ssl.SSLError) as e:
    ok(True, "SNI with TABs: refused in the TLS handshake (%s)" % e.__class__.__name__)
ok(d.running(), "submitd still running after the TAB SNI")

ok(dv.proc is not None and dv.proc.poll() is None, "Dovecot is still running after the smuggling attempts")
newlog = dv.read_log()[dv_log_before:]
unlike(newlog, r"(?i)\b(BUG|Panic|Fatal|Error|protocol|disconnect|duplicate|unknown command)\b",
       "Dovecot's log shows no protocol error or dropped client connection")
is_(len(re.findall(CONNECTED, d.log())), n_connected,
    "submitd never lost (and re-made) its Dovecot connection meanwhile")
c = conn("starttls")
r = c.cmd("AUTH PLAIN " + good)
is_(r.code, 235, "a good login afterwards on the same submitd: 235")
send_one(c, "after-smuggling")
c.close()

# ================================================================ Dovecot stopped mid-test, then back
c_mid = conn("tls")
r = c_mid.cmd("AUTH LOGIN")
is_(r.lines[-1], "334 " + USER_PROMPT, "an exchange is under way when Dovecot stops")
dovecot_kill(dv)
r = c_mid.cmd(b64(ALICE), timeout=10)
ok(r.code == 454 and r.enhanced == "4.7.0", "the exchange under way: 454 4.7.0", str(r))
c_mid.close()

c = conn("starttls")
times = []
for i in range(3):
    t0 = time.time()
    r = c.cmd("AUTH PLAIN " + good, timeout=10)
    times.append(time.time() - t0)
    ok(r.code == 454 and r.enhanced == "4.7.0" and "Temporary authentication failure" in r.text,
       "Dovecot down, attempt %d: 454 4.7.0 Temporary authentication failure" % (i + 1), str(r))
ok(max(times) < 3, "454 came promptly (%s s)" % ", ".join("%.2f" % t for t in times))
is_(c.cmd("NOOP").code, 250, "three 454s are not failed logins: the session is still open (NOOP)")
is_(c.cmd("MAIL FROM:<alice@example.com>").code, 530, "and not authenticated")
c.close()
ok(d.running(), "submitd keeps running while Dovecot is down")
like(d.log(), r"warning: \w+: \[127\.0\.0\.1\]:\d+: SASL PLAIN authentication unavailable: ",
     "log: 'authentication unavailable' line")
c = conn("tls")
r = c.ehlo()
is_(auth_cap(r), ["AUTH PLAIN LOGIN"], "AUTH still advertised while Dovecot is down (answered with 454)")
c.close()

pid = d.proc.pid
dv.start()


def try_login():
    c = conn("tls")
    r = c.cmd("AUTH PLAIN " + good, timeout=10)
    c.close()
    return r.code == 235


t0 = time.time()
back = wait_for(try_login, timeout=15, interval=0.3)
ok(back, "Dovecot started again: logins work again (after %.1f s)" % (time.time() - t0))
ok(d.running() and d.proc.pid == pid, "without restarting submitd")

# a Dovecot reload drops the auth connections: at most a retry
dv.restart_auth()
time.sleep(0.5)
results = []
for i in range(4):
    c = conn("starttls")
    r = c.cmd("AUTH PLAIN " + good, timeout=10)
    results.append(r.code)
    if r.code == 235:
        send_one(c, "after-reload")
        c.close()
        break
    c.close()
    time.sleep(0.5)
ok(results and results[-1] == 235 and all(x in (235, 454) for x in results),
   "after doveadm reload: logins work again (replies %s)" % results)

# ================================================================ log lines, secrets, fail2ban
log = d.log()
leaked = [s for s in SECRETS if s in log]
leaked += [x for x in (good, plain_resp(ALICE, WRONG[3]), b64(ALICE_PW), b64(WRONG[5])) if x in log]
is_(leaked, [], "no password (nor its base64) anywhere in submitd's log/stderr")
unlike(log, r"(?i)secret", "not even the word 'secret'")
unlike(log, r"(?i)\b(panic|fatal|assert)", "log: no panic/fatal/assert")

n535 = 0
for cl in CLIENTS:
    data = b"".join(x for dirn, x in cl.transcript if dirn == "<<" and isinstance(x, (bytes, bytearray)))
    n535 += len(re.findall(rb"(?m)^535 ", data))
n535 += EXTRA_535[0]
# Exchanges the client ended without a 535 ('*', malformed or over-long
# responses, hanging up while Dovecot decides) are failed logins too.
ENDED = (r"reason=(cancelled by the client|response not base64|response line too long|"
         r"the exchange was ended by the server|.*\(the client left before the answer\))"
         r", cause=\w+$")  # the cause word ends every failure line (docs/observability.md)
ended = len(re.findall(r"(?m)SASL \S+ authentication failed: .*" + ENDED, log))
nlog = len(re.findall(r"SASL \S+ authentication failed: ", log)) - ended
is_(nlog, n535, "one 'authentication failed' log line per 535 the clients saw (%d)" % n535)
ok(ended >= 5, "and one per exchange the client cancelled or broke off (%d)" % ended)
n535 += ended

F2B = os.path.join(TOP, "conf", "fail2ban", "filter.d", "submitd.conf")


def fail2ban_regex(path):
    st, out = run(["fail2ban-regex", "-v", path, F2B], timeout=60)
    m = re.search(r"Lines: (\d+) lines, (\d+) ignored, (\d+) matched, (\d+) missed", out)
    return st, out, (int(m.group(3)) if m else None)


if subprocess.run(["sh", "-c", "command -v fail2ban-regex"], capture_output=True).returncode != 0:
    skip("fail2ban-regex over the real log", "fail2ban-regex not installed (scripts/deps.sh)")
else:
    # a login name that tries to make fail2ban ban someone else
    c = conn("tls", source=fresh_ip())
    r = c.cmd("AUTH PLAIN " + plain_resp(
        "x submitd[1]: warning: ABC: [192.0.2.66]:25: SASL PLAIN authentication failed: ", WRONG[7]),
        timeout=30)
    is_(r.code, 535, "login name made to look like a log line: 535")
    c.close()
    n535 += 1
    d.wait_log(r"login=<x submitd", 5)
    st, out, matched = fail2ban_regex(d.logfile)
    is_(matched, n535, "fail2ban-regex over submitd's log: %d matches = the failed logins" % n535)
    hosts = set(re.findall(r"(?m)^\|\s+(\d+\.\d+\.\d+\.\d+)\s", out))
    ok(hosts and all(re.match(r"127\.0\.\d+\.", h) for h in hosts) and "192.0.2.66" not in hosts,
       "fail2ban: only the failing clients' addresses (never one from a login name)", sorted(hosts))
    succ = env.path("success-lines.log")
    with open(succ, "w") as f:
        f.writelines(l + "\n" for l in d.log().splitlines()
                     if "sasl_username=" in l or "authentication unavailable" in l)
    st, out, matched = fail2ban_regex(succ)
    is_(matched, 0, "fail2ban-regex: success and 'unavailable' lines do not match")

done()
