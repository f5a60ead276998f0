#!/usr/bin/env python3
"""Smarthost relaying through a real Postfix (docs/design.md §7;
docs/design.md §7, invariants 2 and 8):

  * TLS policy: STARTTLS with encrypt/verify/secure, implicit TLS with the
    smtps: prefix, verify against the CA file and the relay's name; TLS
    required but missing or unverifiable -> 451 4.7.5 and no plaintext retry;
  * client SASL with relay_password_maps (texthash), the right account per
    relay and per sender; the relay's 535 -> 451 4.7.0, never 535, nothing
    delivered;
  * sender_relay_maps (full address, @domain, fallback to relayhost);
  * failover to the second destination;
  * relay_auth_header: the client cannot forge it.

The smarthost is t/lib/postfix.py, configured as the ISPmail guide configures
Postfix (its submission service on one port, the same in wrapper-mode TLS on
another), authenticating through the guide's Dovecot (t/lib/dovecot.py, SQL
passdb on a private MariaDB); what it forwards lands in a recording sink,
with "(Authenticated sender: LOGIN)" in its Received:."""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403
import postfix as pfmod  # noqa: E402

env = Env()
certs, dv, forwarded, pf = pfmod.smarthost(env)   # Postfix relays into forwarded
unlike(pf.check_output, r"warning|fatal", "postfix check: no warnings", )
STARTTLS = "[127.0.0.1]:%d" % pf.starttls_port
WRAPPER = "[127.0.0.1]:%d" % pf.tls_port


def texthash(name, lines):
    return pfmod.texthash(env, name, lines)


def smarthost(extra, name):
    """submitd relaying through the smarthost; extra replaces defaults."""
    return env.submitd(standard_config(certs, None, extra), name=name)


def send(d, sender, subject, rcpt="rcpt@example.net", extra=b""):
    c = client(d, "plain", certs)
    msg = make_message(subject=subject, frm=sender, extra=extra)
    out = c.send_message(sender, [rcpt], stuff(msg))
    c.cmd("QUIT")
    c.close()
    return out, msg


def forwarded_with(subject, timeout=15):
    """The message Postfix forwarded with this subject, or None."""
    def find():
        for m in forwarded.messages():
            if b"Subject: " + subject.encode() + b"\r\n" in m.content:
                return m
        return None
    return wait_for(find, timeout)


def auth_sender(m):
    r = re.search(rb"\(Authenticated sender: ([^)]+)\)", m.content) if m else None
    return r.group(1).decode() if r else None


def codes(out):
    return [r.code for r in out]


def refused_at_rcpt(out, code, enh):
    """MAIL is local (250); the relay is contacted at the first RCPT."""
    return len(out) >= 2 and out[0].code == 250 and out[1].code == code and \
        out[1].enhanced == enh


# ------------------------------------------------------------- STARTTLS + SASL
pw = texthash("passwords", [(STARTTLS, "alice@example.com:alice-secret"),
                            (WRAPPER, "bob@example.com:bob-secret")])
d = smarthost([("relayhost", STARTTLS), ("relay_tls_security_level", "encrypt"),
               ("relay_password_maps", pw)], "submitd-starttls")
out, msg = send(d, "alice@example.com", "via starttls")
is_(codes(out), [250, 250, 354, 250], "relayed through the STARTTLS+SASL Postfix")
m = forwarded_with("via starttls")
ok(m is not None, "Postfix forwarded it")
is_(auth_sender(m), "alice@example.com", "Postfix saw our login for [host]:port (texthash key)")
like(d.log(), r"TLS connection established", "submitd logged the TLS session to the relay")
like(d.log(), r"authenticated as alice@example\.com \(relay_password_maps key \[127\.0\.0\.1\]:%d\)"
     % pf.starttls_port, "submitd logged which account and which key")
unlike(d.log(), r"alice-secret", "the relay password is never logged")
like(pf.log(), r"sasl_method=(PLAIN|LOGIN), sasl_username=alice@example\.com",
     "Postfix logged the SASL login")
# a second message reuses the pooled, authenticated connection
out, _ = send(d, "alice@example.com", "via starttls again")
is_(codes(out), [250, 250, 354, 250], "second message through the pooled connection")
is_(auth_sender(forwarded_with("via starttls again")), "alice@example.com", "same account")
d.stop()

# ------------------------------------------------------------- implicit TLS (465 style)
d = smarthost([("relayhost", "smtps:" + WRAPPER), ("relay_tls_security_level", "encrypt"),
               ("relay_password_maps", pw)], "submitd-wrapper")
out, _ = send(d, "bob@example.com", "via wrapper")
is_(codes(out), [250, 250, 354, 250], "relayed through the wrapper-mode (465-style) Postfix")
is_(auth_sender(forwarded_with("via wrapper")), "bob@example.com",
    "the wrapper-mode relay got bob's login (key without the smtps: prefix)")
d.stop()

# ------------------------------------------------------------- wrong relay password
bad = texthash("bad-passwords", [(STARTTLS, "alice@example.com:wrong-password")])
n_before = forwarded.count()
d = smarthost([("relayhost", STARTTLS), ("relay_tls_security_level", "encrypt"),
               ("relay_password_maps", bad)], "submitd-badpw")
out, _ = send(d, "alice@example.com", "bad password")
ok(refused_at_rcpt(out, 451, "4.7.0"), "relay refused our login: client gets 451 4.7.0",
   [str(x) for x in out])
ok(all(x.code != 535 for x in out), "the relay's 535 never reaches the client")
ok(out[-1].code != 250, "nothing accepted")
ok(d.wait_idle(), "submitd logged the end of the session")
is_(forwarded.count(), n_before, "nothing delivered")
like(d.log(), r"relay=.*authentication as alice@example\.com .* refused: 535",
     "log names the relay and what it said")
unlike(d.log(), r"wrong-password", "the wrong password is not logged either")
d.stop()

# ------------------------------------------------------------- encrypt against a plain relay
plain = env.sink()
d = smarthost([("relayhost", plain.relayhost), ("relay_tls_security_level", "encrypt")],
              "submitd-encrypt-plain")
out, _ = send(d, "alice@example.com", "encrypt vs plain")
ok(refused_at_rcpt(out, 451, "4.7.5"), "encrypt, relay offers no STARTTLS: 451 4.7.5",
   [str(x) for x in out])
like(d.log(), r"TLS is required, but was not offered", "log says why")
unlike(plain.log(), r"< (MAIL|RCPT|DATA)", "no plaintext retry: no MAIL reached the plain relay")
is_(plain.count(), 0, "nothing delivered in plaintext")
d.stop()

# credentials without TLS are not sent (relay_sasl_allow_plaintext = no)
d = smarthost([("relayhost", plain.relayhost), ("relay_tls_security_level", "may"),
               ("relay_password_maps", texthash("plain-pw", [(plain.relayhost, "u:p")]))],
              "submitd-may-plain-creds")
out, _ = send(d, "alice@example.com", "may plain creds")
ok(refused_at_rcpt(out, 451, "4.7.0"), "may, credentials, no TLS offered: 451 4.7.0",
   [str(x) for x in out])
unlike(plain.log(), r"< AUTH", "no credentials sent in plaintext")
d.stop()

# ------------------------------------------------------------- verify
# a certificate from the same CA for another name
wrong = env.subdir("wrongcert")


def ossl(*a):
    subprocess.run(["openssl"] + list(a), check=True, cwd=wrong, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
     "key.pem", "-out", "req.csr", "-subj", "/CN=wrong.example")
with open(os.path.join(wrong, "ext.cnf"), "w") as f:
    f.write("subjectAltName=DNS:wrong.example\nextendedKeyUsage=serverAuth\n")
ossl("x509", "-req", "-in", "req.csr", "-CA", certs.ca, "-CAkey", certs.ca_key, "-CAcreateserial",
     "-out", "cert.pem", "-days", "2", "-extfile", "ext.cnf")
with open(os.path.join(wrong, "chain.pem"), "w") as f:
    f.write(open(os.path.join(wrong, "cert.pem")).read() + open(certs.ca).read())
wrongsink = env.sink("--starttls", os.path.join(wrong, "chain.pem"), os.path.join(wrong, "key.pem"))
d = smarthost([("relayhost", wrongsink.relayhost), ("relay_tls_security_level", "verify"),
               ("relay_tls_ca_file", certs.ca)], "submitd-verify-wrongname")
out, _ = send(d, "alice@example.com", "verify wrong name")
ok(refused_at_rcpt(out, 451, "4.7.5"), "verify, certificate for another name: 451 4.7.5",
   [str(x) for x in out])
like(d.log(), r"certificate not verified for \"127\.0\.0\.1\".*(name|hostname)",
     "log says the name did not match")
unlike(wrongsink.log(), r"< (MAIL|RCPT)", "no MAIL over the unverified session")
is_(wrongsink.count(), 0, "nothing delivered to the wrong-name relay")
d.stop()

d = smarthost([("relayhost", STARTTLS), ("relay_tls_security_level", "verify"),
               ("relay_tls_ca_file", certs.ca), ("relay_password_maps", pw)], "submitd-verify-ok")
out, _ = send(d, "alice@example.com", "verify right name")
is_(codes(out), [250, 250, 354, 250], "verify with the CA file and the right name: delivered")
is_(auth_sender(forwarded_with("verify right name")), "alice@example.com", "as alice")
like(d.log(), r"Verified TLS connection established", "logged as Verified")
d.stop()

d = smarthost([("relayhost", STARTTLS), ("relay_tls_security_level", "secure"),
               ("relay_password_maps", pw)], "submitd-secure-systemtrust")
out, _ = send(d, "alice@example.com", "secure system trust")
ok(refused_at_rcpt(out, 451, "4.7.5"), "secure without our CA (system trust): 451 4.7.5",
   [str(x) for x in out])
like(d.log(), r"certificate not verified.*(issuer|not trusted)", "log says the issuer is unknown")
d.stop()

# ------------------------------------------------------------- per-sender routes and accounts
routes = texthash("sender-relay", [
    ("alice@example.com", STARTTLS),
    ("@example.org", "smtps:" + WRAPPER),
])
accounts = texthash("sender-passwords", [
    ("alice@example.com", "alice@example.com:alice-secret"),
    ("@example.org", "bob@example.com:bob-secret"),
    ("bob@example.com", "bob@example.com:bob-secret"),
])
fallback = env.sink()
d = smarthost([("relayhost", fallback.relayhost), ("relay_tls_security_level", "may"),
               ("sender_relay_maps", routes), ("relay_password_maps", accounts),
               ("sender_dependent_authentication", "yes")], "submitd-per-sender")
out, _ = send(d, "alice@example.com", "route alice")
is_(codes(out), [250, 250, 354, 250], "alice: routed by full address")
m = forwarded_with("route alice")
is_(auth_sender(m), "alice@example.com", "alice went out with alice's account")
out, _ = send(d, "carol@example.org", "route domain")
is_(codes(out), [250, 250, 354, 250], "carol@example.org: routed by @domain")
m = forwarded_with("route domain")
is_(auth_sender(m), "bob@example.com", "@example.org went out with the @domain account")
like(pf.log(), r"client=localhost\[127\.0\.0\.1\], sasl_method=\w+, sasl_username=bob@example\.com",
     "Postfix saw bob's login")
out, _ = send(d, "dave@example.net", "route fallback")
is_(codes(out), [250, 250, 354, 250], "unlisted sender: relayhost")
ok(fallback.wait_count(1), "fallback relayhost got it")
ok(forwarded_with("route fallback", timeout=1) is None, "not through the smarthost")
out, _ = send(d, "", "route null sender")
is_(codes(out), [250, 250, 354, 250], "null sender (<>): relayhost")
ok(fallback.wait_count(2), "fallback relayhost got the null sender's message")
# sender-dependent credentials follow the sender to any relay (as in
# Postfix): carol@example.org's @domain account is never sent in plaintext
d.stop()
routes_dunno = texthash("sender-relay-dunno", [("@example.org", "smtps:" + WRAPPER),
                                               ("dunno@example.org", "DUNNO")])
d = smarthost([("relayhost", fallback.relayhost), ("relay_tls_security_level", "may"),
               ("sender_relay_maps", routes_dunno), ("relay_password_maps", pw)],
              "submitd-dunno")
out, _ = send(d, "dunno@example.org", "route dunno")
is_(codes(out), [250, 250, 354, 250], "DUNNO stops the search before @domain: relayhost")
ok(fallback.wait_count(3), "fallback relayhost got the DUNNO sender's message")
ok(forwarded_with("route dunno", timeout=1) is None, "not through the @domain route")
out, _ = send(d, "erin@example.org", "route domain, destination key")
is_(codes(out), [250, 250, 354, 250], "@domain route with credentials keyed by destination")
is_(auth_sender(forwarded_with("route domain, destination key")), "bob@example.com",
    "the wrapper relay's account")
# two senders, one relay, two accounts: the pool never mixes them
routes2 = texthash("sender-relay2", [("alice@example.com", STARTTLS),
                                     ("bob@example.com", STARTTLS)])
d.stop()
d = smarthost([("relayhost", fallback.relayhost), ("relay_tls_security_level", "encrypt"),
               ("sender_relay_maps", routes2), ("relay_password_maps", accounts),
               ("sender_dependent_authentication", "yes"), ("workers", "1")], "submitd-two-acc")
results = []
for i in range(3):
    for who in ("alice", "bob"):
        subj = "pool %s %d" % (who, i)
        out, _ = send(d, "%s@example.com" % who, subj)
        results.append((who, codes(out), auth_sender(forwarded_with(subj))))
ok(all(c == [250, 250, 354, 250] for _, c, _ in results), "alternating senders all delivered",
   results)
ok(all(a == "%s@example.com" % w for w, _, a in results),
   "each message went out with its sender's account (pool keyed by credentials)", results)
d.stop()

# ------------------------------------------------------------- failover
dead = free_port()
d = smarthost([("relayhost", "[127.0.0.1]:%d, %s" % (dead, STARTTLS)),
               ("relay_tls_security_level", "encrypt"), ("relay_password_maps", pw)],
              "submitd-failover")
out, _ = send(d, "alice@example.com", "failover")
is_(codes(out), [250, 250, 354, 250], "first destination down, second takes the mail")
is_(auth_sender(forwarded_with("failover")), "alice@example.com",
    "with the second destination's credentials")
like(d.log(), r"127\.0\.0\.1\[127\.0\.0\.1\]:%d: connect failed" % dead, "first one logged as down")
d.stop()

d = smarthost([("relayhost", "[127.0.0.1]:%d, [127.0.0.1]:%d" % (dead, free_port())),
               ("relay_tls_security_level", "encrypt")], "submitd-all-down")
out, _ = send(d, "alice@example.com", "all down")
ok(refused_at_rcpt(out, 451, "4.4.1"), "all destinations down: 451 4.4.1", [str(x) for x in out])
d.stop()

# ------------------------------------------------------------- relay_auth_header
hdr_sink = env.sink()
d = smarthost([("relayhost", hdr_sink.relayhost), ("relay_auth_header", "X-AuthUser")],
              "submitd-authheader")
forged = b"X-AuthUser: ceo@example.com\r\nx-AUTHUSER:also@example.com\r\n\tcontinued\r\n" \
         b"X-AuthUser-Other: kept\r\n"
out, msg = send(d, "alice@example.com", "forged header", extra=forged)
is_(codes(out), [250, 250, 354, 250], "message with forged X-AuthUser fields accepted")
ok(hdr_sink.wait_count(1), "stored")
stored = hdr_sink.messages()[0].content if hdr_sink.count() else b""
unlike(stored, r"ceo@example\.com|also@example\.com|continued",
       "the client's X-AuthUser fields (and continuation lines) are removed")
like(stored, r"X-AuthUser-Other: kept\r\n", "a longer field name is kept")
like(stored, r"\r\n\r\nHello\.\r\n$", "body intact")
d.stop()

# ------------------------------------------- a map that cannot be opened
# relay_load() opens the maps after parsing; the refusal still names the
# file, the line and the key, at startup as on reload.
missing = env.path("no-such-passwords")
conf = env.path("bad-relay-map.conf")
with open(conf, "w") as f:
    f.write("listen = 127.0.0.1:2526 plain\nrelayhost = %s\n"
            "relay_password_maps = texthash:%s\n" % (STARTTLS, missing))
r = subprocess.run([env.binary, "-c", conf, "-t"], capture_output=True, text=True, timeout=60)
is_(r.stderr.strip(), "submitd: %s:3: relay_password_maps: %s: No such file or directory"
    % (conf, missing), "a missing relay_password_maps file refuses the configuration by line")
ok(r.returncode == 1, "...with status 1")
with open(conf, "w") as f:
    f.write("listen = 127.0.0.1:2526 plain\nsender_relay_maps = nosuch:x\n")
r = subprocess.run([env.binary, "-c", conf, "-t"], capture_output=True, text=True, timeout=60)
is_(r.stderr.strip(), 'submitd: %s:2: sender_relay_maps: nosuch:x: unsupported table type "nosuch"'
    % conf, "so does an unknown sender_relay_maps type")

done()
