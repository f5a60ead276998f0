#!/usr/bin/env python3
"""The harness checks itself: the recording sink against real clients
(smtplib, swaks, curl), byte-exact storage, STARTTLS, LMTP over a UNIX
socket, strict end-of-data, violation and abort logging. No submitd needed."""
import os
import smtplib
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

env = Env()
certs = env.certs()
ok(os.path.exists(certs.fullchain) and os.path.exists(certs.key), "certificates generated")

# -- plain SMTP sink, smtplib, byte-exact
s = env.sink()
msg = make_message(body=b"caf\xc3\xa9\r\n.leading dot\r\n..two dots\r\n.\r\nx" + b"y" * 996 + b"\r\n")
with smtplib.SMTP(s.host, s.port) as c:
    c.ehlo("harness.test")
    refused = c.sendmail("a@example.com", ["b@example.net", "c@example.net"], msg)
is_(refused, {}, "smtplib: all recipients accepted by sink")
m = s.messages()
is_(len(m), 1, "sink stored one message")
if m:
    is_(m[0].content, msg, "stored content (un-dot-stuffed) equals the message byte for byte")
    is_(m[0].raw, stuff(msg)[:-3], "stored raw bytes are the dot-stuffed wire form")
    is_(m[0].rcpts, ["b@example.net", "c@example.net"], "envelope recipients")
    is_(m[0].mail_from, "a@example.com", "envelope sender")
    is_(m[0].env["helo"], "harness.test", "EHLO name recorded")
    is_(m[0].env["violations"], [], "no violations recorded")

# -- swaks and curl against the sink
st, out = run(["swaks", "--server", s.listen, "--from", "sw@example.com", "--to", "x@example.net",
               "--body", "swaks body"])
is_(st, 0, "swaks delivers to sink") or diag(out)
mf = os.path.join(env.dir, "curl.eml")
with open(mf, "wb") as f:
    f.write(make_message(subject="curl"))
st, out = run(["curl", "-sS", "smtp://%s" % s.listen, "--mail-from", "cu@example.com",
               "--mail-rcpt", "y@example.net", "--upload-file", mf])
is_(st, 0, "curl delivers to sink") or diag(out)
is_(s.count(), 3, "sink has three messages")

# -- raw: strict end of data, violations, pipelining, aborts
c = SMTP(s.host, s.port)
is_(c.greeting.code, 220, "raw client reads greeting")
r = c.ehlo()
ok(r.code == 250 and "PIPELINING" in r.text, "EHLO multi-line reply parsed", str(r))
c.send(b"MAIL FROM:<x@y.example>\r\nRCPT TO:<z@w.example>\r\nDATA\r\n")
rs = [c.reply(), c.reply(), c.reply()]
is_([x.code for x in rs], [250, 250, 354], "pipelined MAIL/RCPT/DATA replies in order")
c.send(b"a\n.\nb\r.\rc\r\n.\nd\r\n.\r\n")
r = c.reply()
is_(r.code, 250, "only CRLF.CRLF ends the data")
last = s.messages()[-1]
is_(last.raw, b"a\n.\nb\r.\rc\r\n.\nd\r\n", "bare CR/LF content stored untouched")
ok(len(last.env["violations"]) >= 4, "violations recorded in envelope", last.env["violations"])
ok(any("bare LF" in v for v in s.violations()), "violation logged in sink log")
c.send(b"MAIL FROM:<x@y.example>\r\nRCPT TO:<z@w.example>\r\nDATA\r\n")
rs = [c.reply(), c.reply(), c.reply()]
c.send(b"partial data\r\n")
c.close()
ok(wait_for(lambda: "abort: connection closed during DATA" in s.log(), 5),
   "abort logged when the client closes mid-DATA")
n = s.count()
c = SMTP(s.host, s.port)
c.ehlo()
c.cmd("MAIL FROM:<x@y.example>")
c.cmd("RCPT TO:<z@w.example>")
is_(c.cmd("RSET").code, 250, "RSET")
is_(c.cmd("QUIT").code, 221, "QUIT")
ok(wait_for(lambda: "abort: RSET with open transaction" in s.log(), 5), "RSET abort logged")
is_(s.count(), n, "nothing stored for aborted transactions")

# -- reject options, SIZE
s2 = env.sink("--reject-rcpt", "bad@example.net", "--reject-rcpt",
              "worse@example.net=551 5.7.1 go away", "--size", "1000")
c = SMTP(s2.host, s2.port)
r = c.ehlo()
ok("SIZE 1000" in r.text, "sink advertises --size")
c.cmd("MAIL FROM:<a@example.com>")
is_(c.cmd("RCPT TO:<bad@example.net>").code, 550, "--reject-rcpt default 550")
r = c.cmd("RCPT TO:<worse@example.net>")
is_(str(r), "551 5.7.1 go away", "--reject-rcpt with custom reply")
is_(c.cmd("RCPT TO:<good@example.net>").code, 250, "other recipient accepted")
c.cmd("DATA")
c.send(stuff(b"x" * 2000 + b"\r\n"))
is_(c.reply().code, 552, "message over --size refused at end of data")
is_(s2.count(), 0, "nothing stored")
is_(c.cmd("MAIL FROM:<a@example.com> SIZE=5000").code, 552, "MAIL SIZE= over --size refused")
c.close()

# -- STARTTLS sink
s3 = env.sink(starttls=True)
c = SMTP(s3.host, s3.port, certs=certs)
r = c.ehlo()
ok("STARTTLS" in r.text, "sink offers STARTTLS with a cert")
c.send(b"STARTTLS\r\nNOOP\r\n")
r = c.reply()
is_(r.code, 220, "STARTTLS 220")
c._wrap(MYHOST)
r = c.ehlo()
ok(r.code == 250 and "STARTTLS" not in r.text, "after TLS: EHLO without STARTTLS")
ok(wait_for(lambda: "plaintext pipelined after STARTTLS" in s3.log(), 3),
   "sink logs plaintext pipelined after STARTTLS")
out = c.send_message("t@example.com", ["u@example.net"], stuff(make_message()))
is_(out[-1].code, 250, "delivery over TLS")
ok(s3.messages() and s3.messages()[0].env["tls"] is not None, "TLS recorded in envelope")
c.close()

# -- LMTP over a UNIX socket
s4 = env.sink(lmtp=True, unix=env.path("lmtp.sock"), args=["--reject-rcpt", "no@example.net"])
import socket as _socket  # noqa: E402
u = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
u.connect(s4.unix)
c = SMTP.__new__(SMTP)
c.sock, c.buf, c.transcript, c.timeout, c.tls, c.closed, c.certs = u, bytearray(), [], 10, False, False, None
is_(c.reply().code, 220, "LMTP greeting")
is_(c.cmd("EHLO x").code, 500, "LMTP sink refuses EHLO")
is_(c.cmd("LHLO x").code, 250, "LHLO")
c.cmd("MAIL FROM:<a@example.com>")
c.cmd("RCPT TO:<one@example.net>")
is_(c.cmd("RCPT TO:<no@example.net>").code, 550, "LMTP RCPT rejected")
c.cmd("RCPT TO:<two@example.net>")
c.cmd("DATA")
c.send(stuff(make_message()))
rs = [c.reply(), c.reply()]
is_([x.code for x in rs], [250, 250], "LMTP: one reply per accepted recipient")
is_(s4.messages()[0].env["protocol"], "LMTP", "LMTP recorded")
is_(s4.relayhost, "lmtp:unix:" + s4.unix, "relayhost string for an LMTP UNIX sink")

# -- helpers
added, rest = split_added(b"Received: from x\r\n\tby y; date\r\nDate: d\r\nSubject: s\r\n\r\nbody\r\n",
                          b"Subject: s\r\n\r\nbody\r\n")
is_(rest, b"Subject: s\r\n\r\nbody\r\n", "split_added strips Received and added Date")
is_(len(added), 2, "split_added finds two added fields")
done()
