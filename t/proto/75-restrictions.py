#!/usr/bin/env python3
"""sender_restrictions and recipient_restrictions (Postfix's
smtpd_sender_restrictions and smtpd_recipient_restrictions), VRFY, HELO and
envelope syntax, compared reply by reply with a real Postfix given the same
lines (docs/restrictions.md).

The test Postfix (t/lib/postfix.py) gets one more smtpd service, plain, with
smtpd_delay_reject = no (so sender restrictions answer at MAIL, as
submitd's do), mynetworks = 127.0.0.1, the same restriction lists, the same
texthash: access and sender-login tables, disable_vrfy_command,
smtpd_helo_required and strict_rfc821_envelopes. submitd gets the same lines
on a trusted plain listener. Each MAIL and RCPT then gets the same reply,
code, enhanced code and text, from both; a few addresses that submitd's
parser refuses before any restriction (RFC 6409 §4.2) are listed apart.
Then the defaults (RFC 6409 §4.2 on every listener), a permitted message
delivered, the reject log line, the resumption after an ownership check,
and what is refused at load (a restriction not built yet, unknown names,
a non-memory table).

docs/design.md invariant 10; RFC 6409 §4.2; RFC 5321 §4.5.1."""
import os
import re
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403
import postfix as postfixmod  # noqa: E402

if not postfixmod.available():
    skip_all("needs root and postfix (scripts/deps.sh)")

env = Env()
env.require_binary()
certs = env.certs()
sink = env.sink()

ACCESS = env.path("access")
with open(ACCESS, "w") as f:
    f.write("""# the same file for Postfix and submitd
blocked@example.com      REJECT
tagged+x@example.com     REJECT tagged
example.org              550 5.7.0 go away
deferred.example         DEFER
partial.example          451 4.3.2 come back later
ok@example.net           OK
nobody@                  REJECT no such user
<>                       REJECT no bounces here
bad.example              FROBNICATE
""")
LOGINS = env.path("logins")
with open(LOGINS, "w") as f:
    f.write("owned@example.com alice@example.com\n")

SENDER = "reject_sender_login_mismatch, check_sender_access texthash:%s, reject_non_fqdn_sender" % ACCESS
RCPT = ("reject_non_fqdn_recipient, reject_non_fqdn_sender, check_recipient_access texthash:%s, "
        "permit_mynetworks, reject" % ACCESS)

PF_PORT = free_port()
EXTRA = """127.0.0.1:{port} inet n - n - - smtpd
  -o syslog_name=postfix/restrictions
  -o smtpd_sasl_auth_enable=no
  -o smtpd_tls_security_level=none
  -o smtpd_delay_reject=no
  -o mynetworks=127.0.0.1/32
  -o smtpd_client_restrictions=
  -o smtpd_helo_restrictions=
  -o smtpd_helo_required=yes
  -o strict_rfc821_envelopes=yes
  -o disable_vrfy_command=yes
  -o smtpd_sender_login_maps=texthash:{logins}
  -o {{ smtpd_sender_restrictions = {sender} }}
  -o smtpd_relay_restrictions=permit_mynetworks,reject
  -o {{ smtpd_recipient_restrictions = {rcpt} }}
""".format(port=PF_PORT, logins=LOGINS, sender=SENDER, rcpt=RCPT)

pf = postfixmod.Postfix(env, certs, env.path("no-dovecot"), sink, name="postfix-restr",
                        extra_master=EXTRA)
try:
    pf.start()
except Exception as e:  # noqa: BLE001
    print("Bail out! private Postfix did not start: %s" % e, flush=True)
    done()

cfg = standard_config(certs, sink, extra=[
    ("mynetworks", "127.0.0.1/32"),
    ("sender_login_maps", "texthash:" + LOGINS),
    ("sender_restrictions", SENDER),
    ("recipient_restrictions", RCPT),
    ("disable_vrfy_command", "yes"),
])
d = env.submitd(cfg)
SUB = d.addr("plain")


def session(addr):
    c = SMTP(addr[0], addr[1])
    return c


def both(steps):
    """Runs the same command lines against Postfix and submitd; returns the
    two lists of replies as "code text" strings."""
    out = []
    for addr in (("127.0.0.1", PF_PORT), SUB):
        c = session(addr)
        got = []
        for line in steps:
            r = c.cmd(line)
            if not line.startswith("EHLO"):  # the capabilities differ, by design
                got.append(str(r))
        c.cmd("QUIT")
        c.close()
        out.append(got)
    return out


def same(steps, name, want=None):
    pfr, sdr = both(steps)
    is_(sdr, pfr, "same as Postfix: " + name)
    if want is not None:
        like(sdr[-1], want, "... " + name + ": " + want)


# HELO, VRFY, envelope syntax
same(["MAIL FROM:<a@example.com>"], "MAIL before HELO/EHLO", r"^503 5\.5\.1 Error: send HELO/EHLO first$")
same(["EHLO client.test.example", "VRFY postmaster"], "disable_vrfy_command",
     r"^502 5\.5\.1 VRFY command is disabled$")
same(["EHLO client.test.example", "MAIL FROM:a@example.com"], "strict_rfc821_envelopes: no <>",
     r"^501 5\.1\.7 Bad sender address syntax$")

# sender_restrictions, at MAIL
SENDERS = [
    ("a@example.com", r"^250 "),
    ("a@localhost", r"^504 5\.5\.2 <a@localhost>: Sender address rejected: need fully-qualified address$"),
    ("a@[192.0.2.1]", r"^250 "),
    ("blocked@example.com", r"^554 5\.7\.1 <blocked@example\.com>: Sender address rejected: Access denied$"),
    ("Blocked@Example.COM", r"^554 5\.7\.1 <Blocked@Example\.COM>: Sender address rejected: Access denied$"),
    ("tagged+x@example.com", r"^554 5\.7\.1 .*: tagged$"),
    ("someone@example.org", r"^550 5\.7\.0 <someone@example\.org>: Sender address rejected: go away$"),
    ("someone@sub.example.org", r"^550 5\.7\.0 "),
    ("x@deferred.example", r"^450 4\.7\.1 <x@deferred\.example>: Sender address rejected: Access denied$"),
    ("x@partial.example", r"^451 4\.3\.2 .*: come back later$"),
    ("nobody@example.net", r"^554 5\.7\.1 .*: no such user$"),
    ("x@bad.example", r"^451 4\.3\.5 Server configuration error$"),
    ("", r"^554 5\.7\.1 <>: Sender address rejected: no bounces here$"),
    # quoted localparts are looked up unquoted, as Postfix does
    ('"blocked"@example.com', r"^554 5\.7\.1 .*Sender address rejected: Access denied$"),
    ('"bl\\ocked"@example.com', r"^554 5\.7\.1 .*Sender address rejected: Access denied$"),
    ('"Blocked"@Example.COM', r"^554 5\.7\.1 .*Sender address rejected: Access denied$"),
    ('"tagged+x"@example.com', r"^554 5\.7\.1 .*: tagged$"),
    ('"nobody"@example.net', r"^554 5\.7\.1 .*: no such user$"),
    ('"no body"@example.net', r"^250 "),
]
for addr, want in SENDERS:
    same(["EHLO client.test.example", "MAIL FROM:<%s>" % addr], "MAIL FROM:<%s>" % addr, want)

# recipient_restrictions, at RCPT
RCPTS = [
    ("bob@example.net", r"^250 "),
    ("bob@localhost", r"^504 5\.5\.2 <bob@localhost>: Recipient address rejected: need fully-qualified address$"),
    ("blocked@example.com", r"^554 5\.7\.1 <blocked@example\.com>: Recipient address rejected: Access denied$"),
    ("tagged+x@example.com", r"^554 5\.7\.1 .*Recipient address rejected: tagged$"),
    ("tagged+y@example.com", r"^250 "),
    ("x@a.b.example.org", r"^550 5\.7\.0 <x@a\.b\.example\.org>: Recipient address rejected: go away$"),
    ("ok@example.net", r"^250 "),
    ("nobody@elsewhere.example", r"^554 5\.7\.1 .*: no such user$"),
    ("postmaster", r"^250 "),
    # Postfix's smtpd_check_rcpt() skips every restriction for the bare,
    # case-insensitive "postmaster" only: with a domain it is checked
    ("PostMaster", r"^250 "),
    ("postmaster@localhost", r"^504 5\.5\.2 <postmaster@localhost>: Recipient address rejected: "
     r"need fully-qualified address$"),
    ("postmaster@example.org", r"^550 5\.7\.0 "),
    # quoted localparts are looked up unquoted, as Postfix does
    ('"blocked"@example.com', r"^554 5\.7\.1 .*Recipient address rejected: Access denied$"),
    ('"bl\\ocked"@Example.com', r"^554 5\.7\.1 .*Recipient address rejected: Access denied$"),
    ('"tagged+x"@example.com', r"^554 5\.7\.1 .*Recipient address rejected: tagged$"),
    ('"nobody"@elsewhere.example', r"^554 5\.7\.1 .*: no such user$"),
    # part quoted string, part atom (RFC 5321 §4.1.2 has one or the other)
    ('"tagged"+x@example.com', r"^501 5\.1\.3 Bad recipient address syntax$"),
]
for addr, want in RCPTS:
    same(["EHLO client.test.example", "MAIL FROM:<a@example.com>", "RCPT TO:<%s>" % addr],
         "RCPT TO:<%s>" % addr, want)
same(["EHLO client.test.example", "MAIL FROM:<a@example.com>", "RCPT TO:<bob@example.net>",
      "RCPT TO:<bob@localhost>", "RCPT TO:<ok@example.net>"], "three recipients in one transaction")

# Where the two differ, by design (docs/restrictions.md): submitd's parser
# refuses an address without a domain and a domain ending in a dot (Postfix
# drops the dot and accepts it) before any restriction; Postfix's parser
# refuses an all-numeric domain that submitd's restriction refuses.
for addr, pf_want, sd_want in [
        ("nodomain", r"^504 5\.5\.2 <nodomain>: Sender address rejected: need fully-qualified address$",
         r"^501 5\.1\.7 Error: sender address must be a fully qualified address$"),
        ("a@example.com.", r"^250 ", r"^501 5\.1\.7 "),
        ("a@123.45", r"^501 5\.1\.7 Bad sender address syntax$",
         r"^504 5\.5\.2 <a@123\.45>: Sender address rejected: need fully-qualified address$")]:
    pfr, sdr = both(["EHLO client.test.example", "MAIL FROM:<%s>" % addr])
    like(pfr[-1], pf_want, "Postfix: MAIL FROM:<%s>" % addr)
    like(sdr[-1], sd_want, "submitd: MAIL FROM:<%s>" % addr)

# <"postmaster">: Postfix unquotes it and skips the restrictions; submitd's
# parser takes only the literal <Postmaster> of RFC 5321 §4.1.1.3 without a
# domain, and refuses this one before any restriction.
pfr, sdr = both(["EHLO client.test.example", "MAIL FROM:<a@example.com>", 'RCPT TO:<"postmaster">'])
like(pfr[-1], r"^250 ", 'Postfix: RCPT TO:<"postmaster"> 250')
like(sdr[-1], r"^501 5\.1\.3 ", 'submitd: RCPT TO:<"postmaster"> refused by the parser')

# The ownership check inside the list: Postfix skips the *_login_mismatch
# restrictions on a service without SASL; submitd applies them wherever the
# list names them. A listed address without a login:
c = session(SUB)
c.ehlo()
like(str(c.cmd("MAIL FROM:<owned@example.com>")),
     r"^553 5\.7\.1 <owned@example\.com>: Sender address rejected: not logged in$",
     "reject_sender_login_mismatch in sender_restrictions: listed, not logged in: 553")
like(str(c.cmd("MAIL FROM:<blocked@example.com>")), r"^554 5\.7\.1 ",
     "an unlisted address goes on to the next restriction (check_sender_access)")
is_(c.cmd("MAIL FROM:<free@example.com>").code, 250, "... and the end of the list permits")
c.cmd("QUIT")
c.close()

# A permitted message is delivered; a refusal is logged as Postfix logs it.
mark = "restr-%s" % os.urandom(3).hex()
c = session(SUB)
c.ehlo()
is_(c.cmd("MAIL FROM:<a@example.com>").code, 250, "MAIL")
is_(c.cmd("RCPT TO:<bob@localhost>").code, 504, "a refused recipient")
is_(c.cmd("RCPT TO:<bob@example.net>").code, 250, "a permitted one")
is_(c.cmd("DATA").code, 354, "DATA")
c.send(make_message(subject=mark) + b".\r\n")
r = c.reply()
is_(r.code, 250, "DATA: the permitted recipient's message relayed")
c.cmd("QUIT")
c.close()
ok(wait_for(lambda: any(mark.encode() in m.content for m in sink.messages()), 10), "delivered to the sink")
ok(d.wait_log(r"reject: RCPT from \[127\.0\.0\.1\]:\d+: 504 5\.5\.2 <bob@localhost>: Recipient address "
              r"rejected: need fully-qualified address; from=<a@example\.com>"),
   "the reject log line carries Postfix's text")

# The defaults: RFC 6409 §4.2 on the submission listeners (starttls, tls);
# a plain listener (local programs) is left as Postfix's port 25 is.
d2 = env.submitd(standard_config(certs, sink, extra=[("mynetworks", "127.0.0.1/32")]), name="submitd-default")
c = session(d2.addr("plain"))
c.ehlo()
is_(c.cmd("MAIL FROM:<root@localhost>").code, 250, "default, plain listener: MAIL FROM:<root@localhost> 250")
is_(c.cmd("RCPT TO:<root@localhost>").code, 250, "... RCPT TO:<root@localhost> 250")
c.cmd("QUIT")
c.close()
for mode in ("starttls", "tls"):
    c = client(d2, mode, certs)
    like(str(c.cmd("MAIL FROM:<a@localhost>")), r"^504 5\.5\.2 ", "default, %s listener: non-FQDN sender 504" % mode)
    c.cmd("QUIT")
    c.close()
c = client(d2, "starttls", certs)
like(str(c.cmd("MAIL FROM:<a@localhost>")), r"^504 5\.5\.2 <a@localhost>: Sender address rejected: "
     r"need fully-qualified address$", "default sender_restrictions = reject_non_fqdn_sender")
is_(c.cmd("MAIL FROM:<a@example.com>").code, 250, "... an FQDN sender passes")
like(str(c.cmd("RCPT TO:<b@localhost>")), r"^504 5\.5\.2 <b@localhost>: Recipient address rejected: "
     r"need fully-qualified address$", "default recipient_restrictions = reject_non_fqdn_recipient")
is_(c.cmd("RCPT TO:<postmaster>").code, 250, "<postmaster> is exempt")
like(str(c.cmd("VRFY x@example.com")), r"^252 ", "VRFY by default: 252, nothing looked up")
c.cmd("QUIT")
c.close()

# Refused at load, naming the problem.
def check_conf(extra):
    path = env.path("bad-%s.conf" % os.urandom(3).hex())
    with open(path, "w") as f:
        for k, v in standard_config(certs, sink, extra=extra):
            f.write("%s = %s\n" % (k, v))
    return run([env.binary, "-c", path, "-t"], timeout=30)


rc, out = check_conf([("recipient_restrictions",
                       "reject_non_fqdn_recipient,reject_rbl_client,permit_sasl_authenticated,reject")])
ok(rc != 0 and "reject_rbl_client is not supported yet" in out,
   "reject_rbl_client (not built): refused at load, named", out)
rc, out = check_conf([("sender_restrictions", "permit_frobnicate")])
ok(rc != 0 and 'unknown restriction "permit_frobnicate"' in out, "an unknown name: refused", out)
rc, out = check_conf([("sender_restrictions", "reject_sender_login_mismatch")])
ok(rc != 0 and "need sender_login_maps" in out, "an ownership check without sender_login_maps: refused", out)
rc, out = check_conf([("recipient_restrictions",
                       "reject_non_fqdn_recipient,permit_sasl_authenticated,reject")])
ok(rc == 0, "the ISPmail guide's line without its DNS restriction: accepted", out)
rc, out = check_conf([("listen", "127.0.0.1:%d plain trusted sender_restrictions=reject" % free_port())])
ok(rc == 0, "sender_restrictions on a listen line", out)

for dd in (d, d2):
    ok(not unsafe_log_lines(dd.logfile), "%s: every log line escaped" % dd.name)
done()
