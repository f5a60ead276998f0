#!/usr/bin/env python3
"""Basic commands and sequencing: greeting, EHLO/HELO, VRFY, HELP, NOOP, RSET,
QUIT, unknown verbs, out-of-order commands, argument syntax; every reply
after EHLO carries an enhanced status code."""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

env, certs, sink = setup()
d = env.submitd(standard_config(certs, sink))
ph, pp = d.addr("plain")

replies_after_ehlo = []


def cmd(c, line):
    r = c.cmd(line)
    replies_after_ehlo.append((line, r))
    return r


c = SMTP(ph, pp)
like(str(c.greeting), r"^220 mail\.test\.example\b", "greeting: 220 mail.test.example")
ok(c.greeting.enhanced is None, "greeting carries no enhanced code", str(c.greeting))
r = c.cmd("MAIL FROM:<a@example.com>")
is_(r.code, 503, "MAIL before EHLO: 503")
r = c.cmd("EHLO")
is_(r.code, 501, "EHLO without a name: 501")
r = c.ehlo("client.test.example")
is_(r.code, 250, "EHLO: 250")
like(r.lines[0], r"^250-mail\.test\.example\b", "EHLO: first line names the server")
caps = [l[4:].split()[0].upper() for l in r.lines[1:] if len(l) > 4]
for cap in ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SIZE"):
    ok(cap in caps, "EHLO advertises %s" % cap, caps)
for cap in ("STARTTLS", "AUTH", "ETRN", "ATRN", "EXPN", "TURN"):
    ok(cap not in caps, "plain listener: EHLO does not advertise %s" % cap, caps)

r = cmd(c, "NOOP")
is_(r.code, 250, "NOOP: 250")
r = cmd(c, "NOOP ignored arguments")
is_(r.code, 250, "NOOP with arguments: 250")
r = cmd(c, "VRFY postmaster")
is_(r.code, 252, "VRFY: 252")
unlike(r.text, r"(?i)postmaster", "VRFY reveals nothing about the address")
r = cmd(c, "VRFY nosuchuser@example.com")
is_(r.code, 252, "VRFY of an unknown user: same 252")
r = cmd(c, "HELP")
is_(r.code, 214, "HELP: 214")
r = cmd(c, "EXPN staff")
ok(r.code == 502 and r.enhanced == "5.5.1", "EXPN: 502 5.5.1 (not implemented)", str(r))
r = cmd(c, "XYZZY plugh")
is_(r.code, 500, "unknown verb: 500")
is_(r.enhanced, "5.5.2", "unknown verb: 5.5.2")
r = cmd(c, "RCPT TO:<b@example.net>")
is_(r.code, 503, "RCPT before MAIL: 503")
r = cmd(c, "DATA")
is_(r.code, 503, "DATA before MAIL/RCPT: 503")
r = cmd(c, "RSET")
is_(r.code, 250, "RSET: 250")
r = cmd(c, "RSET now")
is_(r.code, 501, "RSET with arguments: 501")
r = cmd(c, "MAIL FROM:<a@example.com>")
is_(r.code, 250, "MAIL: 250")
r = cmd(c, "MAIL FROM:<a@example.com>")
is_(r.code, 503, "second MAIL in a transaction: 503")
r = cmd(c, "DATA")
is_(r.code, 554, "DATA before RCPT: 554 (no valid recipients)")
r = cmd(c, "RCPT TO:<b@example.net>")
is_(r.code, 250, "RCPT: 250")
r = cmd(c, "DATA now")
is_(r.code, 501, "DATA with arguments: 501")
r = cmd(c, "RSET")
is_(r.code, 250, "RSET ends the transaction")
r = cmd(c, "RCPT TO:<b@example.net>")
is_(r.code, 503, "RCPT after RSET: 503")
r = cmd(c, "MAIL FROM:a@example.com")
ok(r.code == 501 or r.code == 250, "MAIL without angle brackets: 501 (or tolerated)", str(r))
if r.code == 250:
    cmd(c, "RSET")
r = cmd(c, "MAIL FROM:<a@@example..com>")
is_(r.code, 501, "MAIL with a broken address: 501")
r = cmd(c, "MAIL FROM:<a@example.com> FROBNICATE=1")
is_(r.code, 555, "MAIL with an unknown parameter: 555")
r = cmd(c, "MAIL FROM:<>")
is_(r.code, 250, "null sender MAIL FROM:<> accepted")
r = cmd(c, "RCPT TO:<>")
is_(r.code, 501, "RCPT TO:<> refused: 501")
r = cmd(c, "RCPT TO:<postmaster>")
is_(r.code, 250, "RCPT TO:<postmaster> (RFC 5321 4.5.1): 250")
cmd(c, "RSET")
r = cmd(c, "mail from:<MixedCase@Example.COM>")
is_(r.code, 250, "verbs are case-insensitive")
r = cmd(c, "EHLO again.test.example")
is_(r.code, 250, "second EHLO: 250")
r = cmd(c, "RCPT TO:<b@example.net>")
is_(r.code, 503, "EHLO resets the transaction (RCPT now 503)")

bad = [(l, str(r)) for l, r in replies_after_ehlo
       if r.code and not l.upper().startswith("EHLO") and r.enhanced is None]
is_(bad, [], "every reply after EHLO (except to EHLO) has an enhanced status code")
r = c.cmd("QUIT")
is_(r.code, 221, "QUIT: 221")
ok(c.is_closed(3), "connection closed after QUIT")

# HELO gets a single-line reply
c = SMTP(ph, pp)
r = c.cmd("HELO old.test.example")
ok(r.code == 250 and len(r.lines) == 1, "HELO: single-line 250", str(r))
r = c.cmd("MAIL FROM:<a@example.com>")
is_(r.code, 250, "MAIL after HELO: 250")
r = c.cmd("QUIT foo")
is_(r.code, 501, "QUIT with arguments: 501")
c.close()

# delivery check over the plain listener with the minimal dialogue
c = SMTP(ph, pp)
c.ehlo()
out = c.send_message("a@example.com", ["b@example.net"], stuff(make_message()))
is_([r.code for r in out], [250, 250, 354, 250], "minimal transaction: 250 250 354 250")
like(str(out[-1]), r"^250 2\.\d\.\d", "end of data: 250 with enhanced code")
is_(c.cmd("QUIT").code, 221, "QUIT")
is_(sink.count(), 1, "one message delivered")

# shutdown: SIGTERM with a session open -> 421 to that client (or close)
c = SMTP(ph, pp)
c.ehlo()
d.stop()
r = c.reply(timeout=3)
is_(r.code, 421, "open session at shutdown: 421")
if r.code == 421:
    like(str(r), r"^421 4\.3\.2", "shutdown: 421 4.3.2")
done()
