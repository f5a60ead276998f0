#!/usr/bin/env python3
"""check_client_access and check_helo_access (docs/restrictions.md),
compared reply by reply with a real Postfix given the same lines and the
same texthash: tables.

The test Postfix (t/lib/postfix.py) gets two more plain smtpd services with
smtpd_delay_reject = no and smtpd_peername_lookup = no: submitd looks up no
client names, so every client is "unknown" to both. Clients connect from
several 127/8 source addresses. Each MAIL and RCPT gets the same code,
enhanced code and text from both: the full address, the shorter prefixes,
the HELO name and its parent domains, an address literal, an entry for
"unknown", the access(5) actions (REJECT, DEFER, 5NN text, OK, DUNNO)."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403
import postfix as postfixmod  # noqa: E402

if not postfixmod.available():
    skip_all("needs root and postfix (scripts/deps.sh)")

env = Env()
env.require_binary()
certs = env.certs()
sink = env.sink()

CLIENTS = env.path("clients")
with open(CLIENTS, "w") as f:
    f.write("""# the same file for Postfix and submitd
127.0.0.2      REJECT
127.0.1        550 5.7.0 go away
127.0.2        DEFER
127.0.3.4      OK
127.0.3        REJECT not this one
127.0.4        DUNNO
127.0.4.1      REJECT too late
127.0.5        451 4.3.2 come back later
""")
HELOS = env.path("helos")
with open(HELOS, "w") as f:
    f.write("""bad.example          REJECT
example.net          550 5.7.1 forged HELO
[192.0.2.1]          REJECT literal
ok.example.org       OK
example.org          REJECT parent
2.7                  REJECT numeric parent
[ipv6:2001:db8::1]   REJECT v6 literal
""")
UNKNOWN = env.path("unknown")
with open(UNKNOWN, "w") as f:
    f.write("unknown   REJECT no reverse name\n")

SENDER = "check_client_access texthash:%s, check_helo_access texthash:%s" % (CLIENTS, HELOS)
RCPT = "check_client_access texthash:%s, permit_mynetworks, reject" % UNKNOWN
PF_PORT, PF_PORT2 = free_port(), free_port()
SERVICE = """127.0.0.1:{port} inet n - n - - smtpd
  -o syslog_name=postfix/access{n}
  -o smtpd_sasl_auth_enable=no
  -o smtpd_tls_security_level=none
  -o smtpd_delay_reject=no
  -o smtpd_peername_lookup=no
  -o mynetworks=127.0.0.0/8
  -o smtpd_client_restrictions=
  -o smtpd_helo_restrictions=
  -o {{ smtpd_sender_restrictions = {sender} }}
  -o smtpd_relay_restrictions=permit_mynetworks,reject
  -o {{ smtpd_recipient_restrictions = {rcpt} }}
"""
EXTRA = SERVICE.format(port=PF_PORT, n=1, sender=SENDER, rcpt="permit") + \
    SERVICE.format(port=PF_PORT2, n=2, sender="", rcpt=RCPT)
pf = postfixmod.Postfix(env, certs, env.path("no-dovecot"), sink, name="postfix-access",
                        extra_master=EXTRA)
try:
    pf.start()
except Exception as e:  # noqa: BLE001
    print("Bail out! private Postfix did not start: %s" % e, flush=True)
    done()

d1 = env.submitd(standard_config(certs, sink, extra=[
    ("mynetworks", "127.0.0.0/8"), ("sender_restrictions", SENDER),
    ("recipient_restrictions", "permit")]), name="submitd-access")
d2 = env.submitd(standard_config(certs, sink, extra=[
    ("mynetworks", "127.0.0.0/8"), ("sender_restrictions", ""),
    ("recipient_restrictions", RCPT)]), name="submitd-unknown")


def both(source, pf_port, d, steps):
    out = []
    for addr in (("127.0.0.1", pf_port), d.addr("plain")):
        t0 = time.time()
        c = SMTPFrom(source, addr[0], addr[1])
        if time.time() - t0 > 5:
            diag("slow greeting from %s: Postfix log:\n%s" % (addr, pf.log()[-3000:]))
        got = [str(c.cmd(line)) for line in steps]
        c.cmd("QUIT")
        c.close()
        out.append([g for g, line in zip(got, steps) if not line.startswith("EHLO")])
    return out


def same(source, helo, want, pf_port=PF_PORT, d=d1, rcpt=None):
    steps = ["EHLO " + helo, "MAIL FROM:<a@example.com>"] + (["RCPT TO:<%s>" % rcpt] if rcpt else [])
    pfr, sdr = both(source, pf_port, d, steps)
    name = "client %s, HELO %s%s" % (source, helo, ", RCPT" if rcpt else "")
    is_(sdr, pfr, "same as Postfix: " + name)
    like(sdr[-1], want, "... " + name + ": " + want)


# check_client_access: the address, then its shorter prefixes
same("127.0.0.2", "client.test.example",
     r"^554 5\.7\.1 <unknown\[127\.0\.0\.2\]>: Client host rejected: Access denied$")
same("127.0.0.3", "client.test.example", r"^250 ")
same("127.0.1.5", "client.test.example",
     r"^550 5\.7\.0 <unknown\[127\.0\.1\.5\]>: Client host rejected: go away$")
same("127.0.2.9", "client.test.example",
     r"^450 4\.7\.1 <unknown\[127\.0\.2\.9\]>: Client host rejected: Access denied$")
same("127.0.3.4", "bad.example", r"^250 ")  # OK: the HELO check is not reached
same("127.0.3.5", "client.test.example", r"^554 5\.7\.1 .*Client host rejected: not this one$")
same("127.0.4.1", "client.test.example", r"^554 5\.7\.1 .*Client host rejected: too late$")
same("127.0.4.2", "client.test.example", r"^250 ")  # DUNNO on the prefix: the next restriction
same("127.0.5.1", "client.test.example",
     r"^451 4\.3\.2 <unknown\[127\.0\.5\.1\]>: Client host rejected: come back later$")
# check_helo_access: the name, then its parent domains
same("127.0.9.1", "bad.example", r"^554 5\.7\.1 <bad\.example>: Helo command rejected: Access denied$")
same("127.0.9.1", "mail.sub.example.net",
     r"^550 5\.7\.1 <mail\.sub\.example\.net>: Helo command rejected: forged HELO$")
same("127.0.9.1", "Mail.Example.NET", r"^550 5\.7\.1 <Mail\.Example\.NET>: Helo command rejected: forged HELO$")
same("127.0.9.1", "[192.0.2.1]", r"^554 5\.7\.1 <\[192\.0\.2\.1\]>: Helo command rejected: literal$")
same("127.0.9.1", "ok.example.org", r"^250 ")
same("127.0.9.1", "x.ok.example.org", r"^250 ")
same("127.0.9.1", "other.example.org", r"^554 5\.7\.1 <other\.example\.org>: Helo command rejected: parent$")
same("127.0.9.1", "good.example", r"^250 ")
# a bare address as HELO name is looked up whole, never by its "parent domains"
same("127.0.9.1", "192.0.2.7", r"^250 ")
same("127.0.9.1", "mail.example.net.", r"^250 ")  # a trailing dot: example.net. is not example.net
same("127.0.9.1", "[IPv6:2001:DB8::1]",
     r"^554 5\.7\.1 <\[IPv6:2001:DB8::1\]>: Helo command rejected: v6 literal$")
# a HELO name longer than submitd keeps (255 bytes) is refused, never looked up
# cut short: Postfix would find example.net at its end, the first 255 bytes
# alone would pass
LONG = ("x" * 60 + ".") * 5 + "example.net"
c = SMTPFrom("127.0.9.1", *d1.addr("plain"))
c.cmd("EHLO " + LONG)
like(str(c.cmd("MAIL FROM:<a@example.com>")), r"^5\d\d ", "a %d-byte HELO name is refused, not cut" % len(LONG))
c.close()
# an entry for "unknown", as Postfix reads it without a reverse name
same("127.0.0.9", "client.test.example",
     r"^554 5\.7\.1 <unknown\[127\.0\.0\.9\]>: Client host rejected: no reverse name$",
     pf_port=PF_PORT2, d=d2, rcpt="bob@example.net")
done()
