#!/usr/bin/env python3
"""Bounded input (docs/design.md invariant 5): SIZE, message size at end of data,
over-long command lines, binary garbage, error limit, recipient limit,
header section size, connections per IP."""
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

LIMIT = 100000
env, certs, sink = setup()
d = env.submitd(standard_config(certs, sink, [("message_size_limit", str(LIMIT)),
                                              ("error_limit", "10"),
                                              ("recipient_limit", "100"),
                                              ("header_size_limit", "10240"),
                                              ("max_connections_per_ip", "5"),
                                              # 127.0.0.1 is in mynetworks, exempt by default
                                              ("client_limit_exceptions", "")]))


def plain():
    return client(d, "plain", certs)


# -- SIZE
c = plain()
r = c.ehlo()
size_lines = [l for l in r.lines[1:] if l[4:].upper().startswith("SIZE")]
ok(len(size_lines) == 1, "EHLO advertises SIZE", str(r))
if size_lines:
    parts = size_lines[0][4:].split()
    ok(len(parts) == 2 and parts[1].isdigit() and 0 < int(parts[1]) <= LIMIT,
       "SIZE value is the limit (got %s)" % parts[1:], size_lines[0])
r = c.cmd("MAIL FROM:<a@example.com> SIZE=%d" % (LIMIT * 10))
ok(r.code == 552 and r.enhanced == "5.3.4", "MAIL SIZE= over the limit: 552 5.3.4", str(r))
r = c.cmd("MAIL FROM:<a@example.com> SIZE=99999999999999999999999999")
is_(r.code, 501, "MAIL SIZE=huge (not a number submitd can hold): 501")
r = c.cmd("MAIL FROM:<a@example.com> SIZE=abc")
is_(r.code, 501, "MAIL SIZE=abc: 501")
r = c.cmd("MAIL FROM:<a@example.com> SIZE=1000")
is_(r.code, 250, "MAIL SIZE= under the limit: 250")
c.cmd("RCPT TO:<b@example.net>")
is_(c.cmd("DATA").code, 354, "DATA")
big = make_message(subject="too big", body=b"".join(b"%078d\r\n" % i for i in range(LIMIT // 80 + 100)))
c.send(stuff(big))
r = c.reply(timeout=30)
ok(r.code == 552 and r.enhanced == "5.3.4",
   "message over message_size_limit (declared SIZE=1000): 552 5.3.4 at end of data", str(r))
is_(c.cmd("NOOP").code, 250, "session survives an over-size message")
c.close()
c1 = c

c = plain()
out = c.send_message("a@example.com", ["b@example.net"], stuff(big))
ok(out[-1].code == 552 and out[-1].enhanced == "5.3.4",
   "message over message_size_limit without SIZE=: 552 5.3.4 at end of data", str(out[-1]))
is_(c.cmd("RSET").code, 250, "RSET after 552")
ok_msg = make_message(subject="just fits", body=b"x" * (LIMIT - 2000) + b"\r\n")
out = c.send_message("a@example.com", ["b@example.net"], stuff(ok_msg))
is_(out[-1].code, 250, "message under the limit (with Received: added) delivered")
c.close()
ok(d.wait_closed(c1, c), "submitd logged the end of both sessions")
ms = sink.messages()
is_(len(ms), 1, "only the message under the limit reached the downstream")
like(sink.log(), r"abort: (RSET|QUIT|connection closed)", "downstream saw the over-size transactions aborted")
ok(all(b"too big" not in m.content for m in ms), "no over-size message delivered")

# -- over-long command lines
c = plain()
r = c.cmd("NOOP " + "x" * 10000)
ok(r.code == 500 and r.enhanced == "5.5.2", "10000-byte command line: 500 5.5.2", str(r))
is_(c.cmd("NOOP").code, 250, "session survives an over-long line (NOOP 250)")
r = c.cmd("MAIL FROM:<" + "a" * 3000 + "@example.com>")
is_(r.code, 500, "over-long MAIL line: 500")
is_(c.cmd("NOOP").code, 250, "still in step")
r = c.cmd("MAIL FROM:<" + "a" * 65 + "@example.com>")
is_(r.code, 501, "local-part > 64 octets (RFC 5321 4.5.3.1.1): 501")
c.cmd("RSET")
r = c.cmd("NOOP " + "y" * 400)
is_(r.code, 250, "a 405-byte line is not 'too long' (< 512)")
c.cmd("QUIT")
c.close()

c = plain()
c.send(b"NOOP " + b"z" * 1000000 + b"\r\n")
r = c.reply(timeout=20)
is_(r.code, 500, "1 MB command line: 500")
c.close()
c = plain()
is_(c.cmd("NOOP").code, 250, "server alive after a 1 MB line")
c.close()

# -- binary garbage
rnd = random.Random(4711)
c = plain()
bad = 0
for i in range(5):
    junk = bytes(rnd.choice([b for b in range(256) if b not in (10, 13)]) for _ in range(60))
    junk = b"\x00" + junk
    r = c.cmd(junk + b"\r\n")
    if r.code is not None and 500 <= r.code < 600:
        bad += 1
    else:
        diag("garbage line %d answered %s" % (i, r))
is_(bad, 5, "5 lines of binary garbage (with NUL): 5 x 5xx")
is_(c.cmd("NOOP").code, 250, "session survives binary garbage")
c.close()
c = plain()
try:
    c.send(bytes(rnd.randrange(256) for _ in range(100000)))
    c.send(b"\r\nQUIT\r\n")
except OSError as e:
    diag("server closed while we were sending garbage: %r" % e)
ok(c.is_closed(10), "100 KB of random bytes: answered and closed (error limit or QUIT)")
c.close()
c = plain()
is_(c.cmd("NOOP").code, 250, "server alive after garbage")
c.close()

# -- error limit
c = plain()
codes = []
for i in range(30):
    r = c.cmd("XYZZY %d" % i)
    codes.append(r.code)
    if r.code in (421, None):
        break
is_(codes, [500] * 10 + [421], "error_limit (10): ten 500s, then 421 for the next command")
ok(c.is_closed(3), "connection closed after 421")
c.close()

# -- recipient limit
c = plain()
c.cmd("MAIL FROM:<a@example.com>")
codes = [c.cmd("RCPT TO:<r%d@example.net>" % i).code for i in range(101)]
is_(codes[:100], [250] * 100, "100 recipients accepted")
is_(codes[100], 452, "recipient 101 over recipient_limit: 452")
is_(c.cmd("DATA").code, 354, "DATA with 100 recipients")
c.send(stuff(make_message(subject="hundred")))
is_(c.reply(timeout=30).code, 250, "message to 100 recipients accepted")
c.close()
m = [x for x in sink.messages() if b"hundred" in x.content]
ok(len(m) == 1 and len(m[0].rcpts) == 100, "downstream got one message for 100 recipients")

# -- header section size (sent in one write, and in pieces)
hdr = b"".join(b"X-Filler-%04d: %s\r\n" % (i, b"h" * 60) for i in range(400))
hmsg = stuff(make_message(subject="hdr", extra=hdr))
ended = []
for how in ("one write", "4000-byte pieces"):
    c = plain()
    ended.append(c)
    c.cmd("MAIL FROM:<a@example.com>")
    c.cmd("RCPT TO:<b@example.net>")
    c.cmd("DATA")
    if how == "one write":
        c.send(hmsg)
    else:
        for i in range(0, len(hmsg), 4000):
            c.send(hmsg[i:i + 4000])
            time.sleep(0.02)
    r = c.reply(timeout=30)
    ok(r.code == 552 and r.enhanced == "5.3.4",
       "32 KB header section over header_size_limit (10240), %s: 552 5.3.4" % how, str(r))
    is_(c.cmd("NOOP").code, 250, "session survives (%s)" % how)
    c.close()
ok(d.wait_closed(*ended), "submitd logged the end of both sessions")
ok(all(b"X-Filler-0000" not in x.content for x in sink.messages()), "over-size header not delivered")

# -- connections per IP
conns = []
for i in range(5):
    conns.append(SMTP(*d.addr("plain")))
ok(all(x.greeting.code == 220 for x in conns), "5 connections from one IP: greeted")
x = SMTP(*d.addr("plain"))
ok(x.greeting.code == 421, "6th connection over max_connections_per_ip: 421", str(x.greeting))
x.close()
for x in conns:
    x.close()
time.sleep(0.5)
x = SMTP(*d.addr("plain"))
is_(x.greeting.code, 220, "after closing, a new connection is served again")
x.close()

# -- connections in total (max_connections), from different addresses
d.stop()
d = env.submitd(standard_config(certs, sink, [("max_connections", "3"),
                                              ("max_connections_per_ip", "100")]),
                name="submitd-total")
# The harness's readiness probes (one connection per listener) must be gone.
ok(wait_for(lambda: d.log().count("disconnect from") >= 3, 5), "start-up probes closed")
time.sleep(0.2)
conns = [SMTP(*d.addr("plain"), source="127.0.0.%d" % i) for i in (1, 2, 3)]
ok(all(x.greeting.code == 220 for x in conns), "3 clients from 3 addresses: greeted")
x = SMTP(*d.addr("plain"), source="127.0.0.4")
like(str(x.greeting), r"^421 4\.7\.0 .*too many connections",
     "a 4th client over max_connections: 421 4.7.0 (%s)" % x.greeting)
ok(x.is_closed(), "... and the connection is closed")
conns[0].close()
time.sleep(0.5)
x = SMTP(*d.addr("plain"), source="127.0.0.5")
is_(x.greeting.code, 220, "once one leaves, the next client is served")
x.close()
for x in conns[1:]:
    x.close()
d.stop()
done()
