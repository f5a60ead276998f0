#!/usr/bin/env python3
"""Logs that neither a client nor a downstream can write into: envelope
addresses, EHLO names and a downstream's multi-line reply carrying terminal
escapes, C1 controls (NEL), LINE SEPARATOR, bidi overrides (CVE-2021-42574)
and invalid UTF-8 reach submitd's log escaped, one line per event; and lines
on stderr start with a timestamp."""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

env = Env()
env.require_binary()
certs = env.certs()

RLO, LRI, PDI, NEL, LSEP, PSEP, ALM = "\u202e", "\u2066", "\u2069", "\u0085", "\u2028", "\u2029", "\u061c"
CSI = "\u009b"
ESC = "\x1b"


def u8(s):
    return s.encode("utf-8")


def submitd_lines(d):
    """submitd's log as its own lines (bytes), split only at LF."""
    return [l for l in open(d.logfile, "rb").read().split(b"\n") if l]


def escaped(s):
    """How src/core/log.c writes s (the characters this test uses)."""
    out = []
    for ch in s:
        o = ord(ch)
        if o < 0x20 or o == 0x7f:
            out.append("\\x%02x" % o)
        elif 0x80 <= o <= 0x9f or o in (0x61c, 0x200e, 0x200f) or 0x2028 <= o <= 0x202e \
                or 0x2066 <= o <= 0x2069:
            out.append("\\u%04x" % o)
        else:
            out.append(ch)
    return "".join(out)


# ---------------------------------------------------------------- a hostile downstream
# Its reply to the end of data: four lines, with bidi controls, C1 controls, a
# LINE SEPARATOR, invalid UTF-8 (\udcff: the byte 0xff through argv) and a
# line made to look like one of submitd's own.
reply = ("550-5.7.1 first line " + RLO + "gnp.exe\r\n"
         "550-5.7.1 second " + NEL + "line " + LSEP + " " + CSI + "31m\r\n"
         "550-5.7.1 submitd[1]: warning: ABC: [192.0.2.66]:25: SASL PLAIN authentication failed: \r\n"
         "550 5.7.1 last " + LRI + "isolated" + PDI + " \udcff\udcfe end")
down = env.sink("--reject-data", *reply.split(" ", 1))
d = env.submitd(standard_config(certs, down), name="submitd-down")
c = client(d, "plain", certs)
out = c.send_message("a@example.com", ["b@example.net"], stuff(make_message(subject="hostile reply")))
c.close()
ok(out[-1].code == 550, "downstream's multi-line 550 is passed on", [str(x) for x in out])
d.wait_log(r"status=refused", 5)
lines = submitd_lines(d)
deliv = [l for l in lines if b"status=refused" in l]
ok(len(deliv) == 1, "one delivery line for the refused message", lines[-8:])
line = deliv[0].decode("utf-8", "replace") if deliv else ""
for frag, what in (("first line \\u202egnp.exe", "RLO (U+202E)"),
                   ("second \\u0085line \\u2028 \\u009b31m", "NEL, LINE SEPARATOR, CSI (C1)"),
                   ("last \\u2066isolated\\u2069", "bidi isolates (U+2066, U+2069)"),
                   ("\\xff\\xfe end", "invalid UTF-8 as \\xNN")):
    ok(frag in line, "downstream reply in the log: %s escaped" % what, line)
ok("first line" in line and "last" in line and "\\x0a" in line,
   "the reply's four lines on one log line (line breaks as \\x0a)", line)
forged = [l for l in lines if re.match(rb"^(\S+ )?submitd\[1\]", l)]
is_(forged, [], "the reply's text cannot start a log line of its own")
d.stop()

# ---------------------------------------------------------------- client text
sink = env.sink()
d = env.submitd(standard_config(certs, sink), name="submitd-client")
odd_from = "al" + RLO + "moc.elpmaxe" + PSEP + "x" + NEL + "@example.com"
odd_rcpts = ["b" + LSEP + "ob" + ALM + "@example.net", "c" + CSI + "2J" + LRI + "@example.net"]
ehlo_name = "ex" + RLO + "ample" + NEL + ".test"
c = client(d, "plain", certs, ehlo=ehlo_name)
r = c.cmd(b"MAIL FROM:<" + u8(odd_from) + b"> SMTPUTF8\r\n")
accepted = r.code == 250
rs = [c.cmd(b"RCPT TO:<" + u8(x) + b">\r\n") for x in odd_rcpts]
if accepted and all(x.code == 250 for x in rs):
    r2 = c.cmd("DATA")
    if r2.code == 354:
        c.send(stuff(make_message(subject="odd addresses")))
        r2 = c.reply(timeout=30)
    ok(r2.code == 250, "UTF-8 addresses with bidi, NEL and separators: delivered", str(r2))
    d.wait_log(r"status=sent", 5)
    log = d.log()
    m = re.search(r"from=<([^\n]*?)>, to=<([^\n]*?)>", log)
    ok(m and m.group(1) == escaped(odd_from), "from=<...> escaped in the delivery line",
       m.group(0) if m else log[-2000:])
    ok(m and m.group(2) == escaped(odd_rcpts[0]), "to=<...> escaped in the delivery line",
       m.group(0) if m else log[-2000:])
else:
    ok(False, "MAIL/RCPT with UTF-8 addresses accepted (SMTPUTF8)", [str(r)] + [str(x) for x in rs])
c.cmd("RSET")
# raw controls and invalid UTF-8: refused, and whatever is logged stays one clean line
for bad in (b"MAIL FROM:<a" + ESC.encode() + b"]0;title\x07@example.com>\r\n",
            b"MAIL FROM:<\xff\xfe\xc0\xaf@example.com> SMTPUTF8\r\n",
            b"MAIL FROM:<a\r@example.com>\r\n",
            b"MAIL FROM:<a\x00b@example.com>\r\n",
            b"EHLO a" + ESC.encode() + b"[2J\xe2\x80\xae\r\n",
            b"MAIL FROM:<x@example.com> X-" + u8(RLO) + b"=1\r\n"):
    c.cmd(bad)
    c.cmd("RSET")
# a refusal after an odd EHLO name: the reject line names the helo
c2 = client(d, "starttls", certs, ehlo=ehlo_name, starttls=False)
r = c2.cmd("MAIL FROM:<x@example.com>")
c2.close()
c.cmd("QUIT")
c.close()
d.wait_log(r"reject: MAIL", 5)
lines = submitd_lines(d)
unsafe = unsafe_log_lines(d.logfile)
is_(unsafe, [], "no log line holds a control, bidi control or invalid UTF-8")
stray = [l for l in lines if not re.match(rb"^\S+ submitd\[\d+\]: ", l)]
is_(stray, [], "every log line is a whole submitd line (nothing broke a line)")
stamp = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[-+]\d\d:\d\d submitd\[\d+\]: ")
ok(lines and all(stamp.match(l) for l in lines),
   "stderr lines start with an RFC 3339 timestamp (no JOURNAL_STREAM)", lines[:3])
d.stop()

# under systemd stderr is the journal, which stamps each line itself
d = env.submitd(standard_config(certs, sink), start=False, name="submitd-journal")
open(d.logfile, "ab").close()
st = os.stat(d.logfile)
os.environ["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
d.start()
d.wait_log(r"submitd\[\d+\]: ", 5)
lines = submitd_lines(d)
ok(lines and all(re.match(rb"^submitd\[\d+\]: ", l) for l in lines),
   "stderr is the journal (JOURNAL_STREAM = its device:inode): no timestamp", lines[:2])
d.stop()
os.environ["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino + 1)  # inherited, stderr elsewhere
d = env.submitd(standard_config(certs, sink), name="submitd-elsewhere")
d.wait_log(r"submitd\[\d+\]: ", 5)
lines = submitd_lines(d)
ok(lines and all(stamp.match(l) for l in lines),
   "JOURNAL_STREAM naming another stream: stamped", lines[:2])
d.stop()
del os.environ["JOURNAL_STREAM"]

done()
