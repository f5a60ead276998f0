#!/usr/bin/env python3
"""SMTP smuggling (CVE-2023-51764 class) and pipelining: only CRLF.CRLF ends
DATA; bare CR/LF is rejected (default) or normalised (bare_newline =
normalize) and never reaches the downstream; a smuggled second transaction
is never executed. A whole transaction pipelined in one write."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

env, certs, sink = setup()
d = env.submitd(standard_config(certs, sink), name="submitd-reject")
sink2 = env.sink()
d2 = env.submitd(standard_config(certs, sink2, [("bare_newline", "normalize")]),
                 name="submitd-normalize")

VARIANTS = [
    ("<LF>.<LF>", b"\n.\n"),
    ("<CR>.<CR>", b"\r.\r"),
    ("<LF>.<CR><LF>", b"\n.\r\n"),
    ("<CR><LF>.<CR>", b"\r\n.\r"),
    ("<CR><LF>.<LF>", b"\r\n.\n"),
    ("<CR>.<CR><LF>", b"\r.\r\n"),
    ("<LF>.<CR>", b"\n.\r"),
]
SMUGGLED = (b"MAIL FROM:<smuggler@evil.example>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n"
            b"From: <ceo@example.com>\r\nSubject: SMUGGLED\r\n\r\nSMUGGLED BODY\r\n")


def payload(seq):
    """Message whose body holds a fake end of data followed by a whole
    second transaction; ends with the only real CRLF.CRLF."""
    return (b"From: <sender@example.com>\r\nTo: <rcpt@example.net>\r\nSubject: legit\r\n"
            b"Date: Sat, 22 Nov 2025 12:00:00 +0000\r\nMessage-ID: <legit@client.example>\r\n\r\n"
            b"legit body" + seq + SMUGGLED + b".\r\n")


def all_replies(c, wait=1.0):
    """Every complete reply that arrives within `wait` seconds."""
    data = c.pending(wait) or b""
    out = []
    for line in data.split(b"\r\n"):
        if line:
            out.append(line.decode("utf-8", "replace"))
    return out


def attempt(dd, mode, seq):
    """One smuggling attempt; returns (reply to the end of data, replies
    that followed it unasked, reply to a later NOOP, client)."""
    c = client(dd, mode, certs)
    for line in ("MAIL FROM:<sender@example.com>", "RCPT TO:<rcpt@example.net>"):
        r = c.cmd(line)
        if r.code != 250:
            return r, [], None, c
    r = c.cmd("DATA")
    if r.code != 354:
        return r, [], None, c
    c.send(payload(seq))
    end = c.reply(timeout=30)
    extra = all_replies(c, 0.5)
    noop = c.cmd("NOOP")
    return end, extra, noop, c


for mode in ("plain", "starttls"):
    for label, seq in VARIANTS:
        name = "reject/%s %s" % (mode, label)
        before = sink.count()
        end, extra, noop, c = attempt(d, mode, seq)
        ok(end.code == 550 and end.enhanced == "5.5.2", "%s: 550 5.5.2 at end of data" % name,
           str(end) + "\n" + c.dump())
        is_(extra, [], "%s: no reply to the smuggled commands" % name)
        is_(noop.code if noop else None, 250, "%s: session in step afterwards (NOOP 250)" % name)
        c.close()
        time.sleep(0.1)
        is_(sink.count() - before, 0, "%s: nothing delivered" % name)
ms = sink.messages()
ok(all("victim@example.net" not in m.rcpts for m in ms), "reject: smuggled recipient never seen downstream")
like(d.log(), r"(?i)bare", "reject: the log names the bare newline")

# the session can still deliver after a rejected message
c = client(d, "plain", certs)
out = c.send_message("sender@example.com", ["rcpt@example.net"], stuff(make_message(subject="after")))
is_(out[-1].code, 250, "reject: a clean message on the same kind of session still gets 250")
c.close()

# normalize mode: exactly one message, no bare CR/LF downstream
import time as _t  # noqa: E402
for mode in ("plain", "tls"):
    for label, seq in VARIANTS:
        name = "normalize/%s %s" % (mode, label)
        before = sink2.count()
        end, extra, noop, c = attempt(d2, mode, seq)
        ok(end.code == 250, "%s: 250 at end of data" % name, str(end) + "\n" + c.dump())
        is_(extra, [], "%s: no reply to the smuggled commands" % name)
        is_(noop.code if noop else None, 250, "%s: NOOP 250 afterwards" % name)
        c.close()
        _t.sleep(0.1)
        got = sink2.messages()[before:]
        is_(len(got), 1, "%s: exactly one message delivered" % name)
        for m in got:
            is_(m.env["violations"], [], "%s: no bare CR/LF downstream" % name)
            is_(m.rcpts, ["rcpt@example.net"], "%s: only the real recipient" % name)
            ok(b"legit body" in m.content and b"SMUGGLED BODY" in m.content,
               "%s: the whole text arrived as one message" % name)
ok(all("victim@example.net" not in m.rcpts for m in sink2.messages()),
   "normalize: smuggled recipient never seen downstream")
is_(sink2.violations(), [], "normalize: sink saw no protocol violation at all")

# bare LF in the header section, and a bare-LF-only message
for dd, sk, want, name in [(d, sink, 550, "reject"), (d2, sink2, 250, "normalize")]:
    before = sk.count()
    c = client(dd, "plain", certs)
    out = c.send_message("sender@example.com", ["rcpt@example.net"],
                         b"Subject: lf only\nFrom: <a@example.com>\n\nline one\nline two\n\r\n.\r\n")
    is_(out[-1].code, want, "%s: LF-only message gets %d" % (name, want))
    c.close()
    _t.sleep(0.1)
    got = sk.messages()[before:]
    is_(len(got), 1 if want == 250 else 0, "%s: LF-only message delivered %s" %
        (name, "once" if want == 250 else "never"))
    for m in got:
        is_(m.env["violations"], [], "%s: LF-only message normalised to CRLF" % name)
        ok(b"line one\r\nline two\r\n" in m.content, "%s: LF lines became CRLF lines" % name)

# -- a whole transaction pipelined in one write
msg = make_message(subject="pipelined")
for mode in ("plain", "tls", "starttls"):
    before = sink.count()
    host, port = d.addr(mode)
    c = SMTP(host, port, tls=(mode == "tls"), certs=certs)
    if mode == "starttls":
        c.ehlo()
        c.starttls()
    c.send(b"EHLO pipe.test.example\r\nMAIL FROM:<p@example.com>\r\nRCPT TO:<r1@example.net>\r\n"
           b"RCPT TO:<r2@example.net>\r\nDATA\r\n" + stuff(msg) +
           b"NOOP\r\nMAIL FROM:<p2@example.com>\r\nRCPT TO:<r3@example.net>\r\nRSET\r\nQUIT\r\n")
    codes = []
    for _ in range(11):
        r = c.reply(timeout=30)
        codes.append(r.code)
        if r.code in (None, 221):
            break
    is_(codes, [250, 250, 250, 250, 354, 250, 250, 250, 250, 250, 221],
        "pipelined %s: all replies, in order" % mode)
    ok(c.is_closed(3), "pipelined %s: closed after QUIT" % mode)
    got = sink.messages()[before:]
    if ok(len(got) == 1, "pipelined %s: one message delivered" % mode):
        is_(got[0].rcpts, ["r1@example.net", "r2@example.net"], "pipelined %s: recipients" % mode)
        _, rest = split_added(got[0].content, msg)
        ok(rest == msg, "pipelined %s: content byte-exact" % mode)

# -- BDAT (RFC 3030), when offered: content re-sent downstream with DATA
c = client(d, "plain", certs)
r = c.ehlo()
if "CHUNKING" not in [l[4:].split()[0].upper() for l in r.lines[1:] if len(l) > 4]:
    skip("BDAT tests", "CHUNKING not advertised")
else:
    before = sink.count()
    msg = make_message(subject="bdat", body=b".dot first\r\nline two\r\n.\r\n")
    c.cmd("MAIL FROM:<b@example.com>")
    c.cmd("RCPT TO:<r@example.net>")
    half = len(msg) // 2
    c.send(b"BDAT %d\r\n" % half + msg[:half])
    is_(c.reply().code, 250, "BDAT chunk 1: 250")
    c.send(b"BDAT %d LAST\r\n" % (len(msg) - half) + msg[half:])
    is_(c.reply(timeout=30).code, 250, "BDAT LAST: 250")
    got = sink.messages()[before:]
    if ok(len(got) == 1, "BDAT: delivered"):
        _, rest = split_added(got[0].content, msg)
        ok(rest == msg, "BDAT: content byte-exact (dot-stuffed on the way down)")
        is_(got[0].env["violations"], [], "BDAT: no bare CR/LF downstream")
    before = sink.count()
    c.cmd("MAIL FROM:<b@example.com>")
    c.cmd("RCPT TO:<r@example.net>")
    body = b"Subject: bdat lf\r\n\r\nsmuggle\n.\nMAIL FROM:<x@evil.example>\r\n"
    c.send(b"BDAT %d LAST\r\n" % len(body) + body)
    r = c.reply(timeout=30)
    ok(r.code == 550 and r.enhanced == "5.5.2", "BDAT with bare LF: 550 5.5.2", str(r))
    is_(sink.count() - before, 0, "BDAT with bare LF: nothing delivered")
    is_(c.cmd("RSET").code, 250, "RSET after BDAT")
    r = c.cmd("BDAT x")
    is_(r.code, 501, "BDAT with a bad count: 501")
c.close()
done()
