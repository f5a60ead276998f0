#!/usr/bin/env python3
"""generic_maps (docs/generic.md): addresses rewritten as mail leaves,
compared byte for byte with Postfix's smtp_generic_maps.

  * the same table (the SOHO seed's, plus @domain -> @domain and a
    user@domain entry for recipient_delimiter) is Postfix's
    smtp_generic_maps and submitd's generic_maps; each message goes once
    through the test Postfix (a plain smtpd, relaying to one sink) and once
    through submitd (relaying to another sink); the address header fields
    and the envelope must come out the same, byte for byte;
  * a field with no matching address passes untouched;
  * swaks, logged in: sender ownership (sender_login_maps, header_from_policy
    = reject) is checked on the addresses as written; envelope and From:
    leave rewritten;
  * routing (transport_maps) uses the recipient as the client gave it (with
    relay_pipelining = no; the comparison above runs pipelined);
  * a DKIM signature is made on the rewritten From: (its domain picks the
    key) and verifies with dkimpy and Mail::DKIM;
  * a field that grows beyond header_size_limit is refused (552), and a
    table with a bad value or of a type that cannot answer at once is
    refused at load."""
import os
import re
import smtplib
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403
import dkimtest  # noqa: E402
import postfix as pfmod  # noqa: E402

env = Env()
env.require_binary()
if not pfmod.available():
    skip_all("needs root and Debian's postfix package (scripts/deps.sh)")
why = dkimtest.missing()
if why:
    skip_all(why)
os.chmod(env.dir, 0o711)
certs = env.certs()
dv = private_dovecot(env, "sql", failure_delay="0")

TABLE = [
    ("his@localdomain.local", "hisaccount@hisisp.example"),
    ("her@localdomain.local", "heraccount@herisp.example"),
    ("@localdomain.local", "hisaccount+local@hisisp.example"),
    ("ext@ex.example", "stripped@ex.example"),
    ("@keep.example", "@other.example"),
    ("alice@signed.local", "alice@example.org"),
]
generic = pfmod.texthash(env, "generic", TABLE)
os.chmod(generic[len("texthash:"):], 0o644)

pf_sink = env.sink()
plain_port = free_port()


class GenericPostfix(pfmod.Postfix):
    def write_config(self):
        super().write_config()
        with open(os.path.join(self.config_dir, "main.cf"), "a") as f:
            f.write("smtp_generic_maps = %s\nrecipient_delimiter = +\n"
                    "local_header_rewrite_clients =\n" % generic)


pf = GenericPostfix(env, certs, dv.socket, pf_sink, name="postfix-generic",
                    extra_master="127.0.0.1:%d inet n - n - - smtpd\n" % plain_port)
pf.start()
ok(wait_port("127.0.0.1", plain_port, 20), "the test Postfix listens (smtp_generic_maps)")

sd_sink = env.sink()
other = env.sink()
transports = pfmod.texthash(env, "transport", [("localdomain.local", "smtp:[127.0.0.1]:%d"
                                                 % other.port)])
d = env.submitd(standard_config(certs, sd_sink, [("generic_maps", generic),
                                                  ("recipient_delimiter", "+")]))

# The shapes, one field each, in messages whose other fields match nothing.
SHAPES = [
    ("name-addr", b"To: His Name <his@localdomain.local>"),
    ("bare", b"To: his@localdomain.local"),
    ("quoted phrase", b'To: "Quoted, Name" <her@localdomain.local>'),
    ("comment", b"To: his@localdomain.local (His Name)"),
    ("comment inside", b"To: his(c)@localdomain.local"),
    ("dots in phrase", b"To: John Q. Public <his@localdomain.local>"),
    ("list", b"To: a@x.example,his@localdomain.local,  b@y.example"),
    ("list, quoted other", b'To: "a"@x.example, her@localdomain.local'),
    ("folded list", b"To: aaaaaaaaaaaaaaaaaaaa@x.example,\r\n bbbbbbbbbbbbbbbbbbbbbbbb@x.example,"
                    b"\r\n\this@localdomain.local"),
    ("long list", b"Cc: " + b", ".join(b"user%02d@x.example" % i for i in range(12)) +
                  b", bob@localdomain.local"),
    ("group", b"To: friends: his@localdomain.local, b@x.example;"),
    ("empty group", b"To: undisclosed-recipients:;"),
    ("group and more", b"Cc: undisclosed-recipients:;, her@localdomain.local"),
    ("@domain", b"Cc: Bob <bob@localdomain.local>"),
    ("@domain keeps local part", b"Cc: joe+y@keep.example"),
    ("delimiter", b"Cc: ext+foo@ex.example"),
    ("unmatched", b"Cc: Nobody <nobody@elsewhere.example>, x@y.example (Comment)"),
    ("unmatched odd spacing", b"Cc:   a @ x.example ,b@y.example"),
    ("route-addr", b"Reply-To: <@hop.example:his@localdomain.local>"),
    ("angle only", b"Reply-To: <his@localdomain.local>"),
    ("quoted local", b'Reply-To: "his"@localdomain.local'),
    ("Sender", b"Sender: her@localdomain.local"),
    ("From", b"From: His <his@localdomain.local>"),
    ("trailing comma", b"To: his@localdomain.local,"),
    ("trailing comma, long", b"To: " + b", ".join(b"someone%02d@x.example" % i for i in range(3))
                             + b", his@localdomain.local,"),
    ("comment with fold", b"To: his@localdomain.local (a comment\r\n folded)"),
    ("backslash pair", b"To: a\\ b@x.example, \"c\\\"d\"@x.example, his@localdomain.local"),
    ("domain literal", b"To: x@[192.0.2.1], his@localdomain.local"),
    ("empty angle", b"Reply-To: <>, his@localdomain.local"),
    ("adjacent angles", b"To: <a@x.example> <his@localdomain.local>"),
    ("long phrase", b"To: " + b"word " * 60 + b"<his@localdomain.local>, b@x.example"),
    ("Resent-From", b"Resent-From: Her <her@localdomain.local>"),
    ("Resent-To", b"Resent-To: his@localdomain.local, her@localdomain.local"),
    ("Resent-Cc", b"Resent-Cc: his@localdomain.local"),
    ("Resent-Sender", b"Resent-Sender: his@localdomain.local"),
    ("Resent-Reply-To", b"Resent-Reply-To: his@localdomain.local"),
    ("Mail-Followup-To", b"Mail-Followup-To: his@localdomain.local"),
    ("Errors-To", b"Errors-To: his@localdomain.local"),
    ("Disposition-Notification-To", b"Disposition-Notification-To: his@localdomain.local"),
    ("Return-Receipt-To", b"Return-Receipt-To: his@localdomain.local"),
    ("not an address field", b"X-Address: his@localdomain.local"),
    ("Subject", b"Subject-Like: his@localdomain.local"),
]


def field(content, name):
    fields, _ = header_fields(content)
    got = [f for f in fields if f.split(b":", 1)[0].lower() == name.lower()]
    return got


def message(i, shape):
    name = shape.split(b":", 1)[0]
    frm = b"From: Sender <nobody@elsewhere.example>\r\n" if name.lower() != b"from" else b""
    return (frm + shape + b"\r\nSubject: shape %d\r\nMessage-ID: <shape%d@test.example>\r\n"
            b"Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n\r\nbody\r\n" % (i, i))


def through_postfix(sender, rcpts, content):
    with smtplib.SMTP("127.0.0.1", plain_port, timeout=30) as s:
        s.sendmail(sender, rcpts, content)


def through_submitd(sender, rcpts, content, daemon=None):
    c = client(daemon or d, "plain", certs)
    rs = c.send_message(sender, rcpts, stuff(content))
    c.cmd("QUIT")
    c.close()
    return rs


def find(sink, subject):
    for m in sink.messages():
        if b"\r\nSubject: " + subject + b"\r\n" in m.content:
            return m
    return None


for i, (label, shape) in enumerate(SHAPES):
    content = message(i, shape)
    through_postfix("his@localdomain.local", ["ext+foo@ex.example", "x@y.example"], content)
    through_submitd("his@localdomain.local", ["ext+foo@ex.example", "x@y.example"], content)

subjects = [b"shape %d" % i for i in range(len(SHAPES))]
wait_for(lambda: all(find(pf_sink, s) for s in subjects) or None, 60)
wait_for(lambda: all(find(sd_sink, s) for s in subjects) or None, 30)
for i, (label, shape) in enumerate(SHAPES):
    a, b = find(pf_sink, subjects[i]), find(sd_sink, subjects[i])
    if a is None or b is None:
        ok(False, "%s: relayed by both (postfix %s, submitd %s)" % (label, a is not None,
                                                                     b is not None))
        continue
    name = shape.split(b":", 1)[0]
    fa, fb = field(a.content, name), field(b.content, name)
    is_(fb, fa, "%s: %r as Postfix writes it: %r" % (label, shape, fa))
    if i == 0:
        is_(b.mail_from, a.mail_from, "envelope sender as Postfix: %s" % a.mail_from)
        is_(b.rcpts, a.rcpts, "envelope recipients as Postfix: %s" % a.rcpts)
        is_(a.rcpts, ["stripped@ex.example", "x@y.example"], "user+ext@domain via user@domain")

# untouched means untouched: odd spacing survives where nothing matched
m = find(sd_sink, subjects[[l for l, _ in SHAPES].index("unmatched odd spacing")])
ok(m is not None and b"Cc:   a @ x.example ,b@y.example\r\n" in m.content,
   "a field with no matching address is passed on byte for byte")
d.stop()

# ---- routing uses the recipient as the client gave it
d2 = env.submitd(standard_config(certs, sd_sink, [("generic_maps", generic),
                                                   ("transport_maps", transports),
                                                   ("relay_pipelining", "no")]),
                 name="submitd-route")
rs = through_submitd("x@y.example", ["her@localdomain.local"], make_message(subject="route"),
                     d2)
ok(rs[-1].code == 250, "relayed with transport_maps", str(rs[-1]))
ok(other.wait_count(1), "the route of the original recipient domain was taken")
ms = other.messages()
is_(ms[0].rcpts if ms else None, ["heraccount@herisp.example"], "then the recipient rewritten")
d2.stop()

# ---- swaks, logged in: ownership is checked on the addresses as written
own_sink = env.sink()
d5 = env.submitd(standard_config(certs, own_sink, [
    ("generic_maps", generic), ("dovecot_auth_socket", dv.socket),
    ("sender_login_maps", "inline:{ his@localdomain.local=alice@example.com }"),
    ("header_from_policy", "reject")]), name="submitd-swaks")


def swaks(frm, subject):
    return run(["swaks", "--server", "127.0.0.1:%d" % d5.port("starttls"), "--tls",
                "--auth", "PLAIN", "--auth-user", "alice@example.com", "--auth-password",
                "alice-secret", "--from", frm, "--to", "friend@x.example",
                "--header", "From: Him <%s>" % frm, "--header", "Subject: %s" % subject,
                "--body", "hello"], timeout=60)


st, outp = swaks("his@localdomain.local", "owned")
ok(st == 0 and own_sink.wait_count(1), "swaks: the login's own address is accepted", outp[-600:])
m = own_sink.messages()[0] if own_sink.messages() else None
is_(m.mail_from if m else None, "hisaccount@hisisp.example", "swaks: envelope sender rewritten")
ok(m is not None and b"From: Him <hisaccount@hisisp.example>\r\n" in m.content,
   "swaks: From: rewritten")
st, outp = swaks("her@localdomain.local", "not owned")
ok(st != 0 and re.search(r"<~?\* +553 5\.7\.1", outp) is not None,
   "swaks: an address the login does not own is refused before any rewriting", outp[-600:])
ok(own_sink.count() == 1, "nothing more delivered")
d5.stop()

# ---- DKIM signs the rewritten From:
keys = dkimtest.Keys(env.subdir("keys"))
keys.rsa("r2048", 2048)
kt = env.path("KeyTable")
with open(kt, "w") as f:
    f.write("rsa\texample.org:r2048:%s\n" % keys.path["r2048"])
st = env.path("SigningTable")
with open(st, "w") as f:
    f.write("*@example.org rsa\n")
dk_sink = env.sink()
d3 = env.submitd(standard_config(certs, dk_sink, [
    ("generic_maps", generic), ("dkim_key_table", kt), ("dkim_signing_table", "refile:" + st),
    ("dkim_temp_directory", env.subdir("hold"))]), name="submitd-dkim")
rs = through_submitd("alice@signed.local", ["x@y.example"],
                     make_message(subject="dkim", frm="alice@signed.local", to="x@y.example"),
                     d3)
ok(rs[-1].code == 250 and dk_sink.wait_count(1), "signed message relayed", str(rs[-1]))
stored = dk_sink.messages()[0].content if dk_sink.messages() else b""
ok(b"From: <alice@example.org>\r\n" in stored, "From: rewritten before signing")
p = env.path("dkim.eml")
with open(p, "wb") as f:
    f.write(stored)
good, text = dkimtest.judge(dkimtest.verify(keys, [p])[p], 1, verifiers=("dkimpy", "Mail::DKIM"))
ok(good, "d=example.org (the rewritten From:'s domain) verifies with dkimpy and Mail::DKIM", text)
d3.stop()

# ---- growing beyond header_size_limit: refused, never cut
grow_sink = env.sink()
d4 = env.submitd(standard_config(certs, grow_sink, [("generic_maps", generic),
                                                     ("header_size_limit", "2000")]),
                 name="submitd-grow")
many = b"To: " + b", ".join([b"bob@localdomain.local"] * 60) + b"\r\n"
content = many + b"From: x@y.example\r\nSubject: grow\r\n\r\nbody\r\n"
ok(len(content) < 2000, "the client's header section fits header_size_limit (%d)" % len(content))
rs = through_submitd("x@y.example", ["x@y.example"], content, d4)
ok(rs[-1].code == 552, "the rewritten one does not: 552", str(rs[-1]))
ok(grow_sink.count() == 0, "nothing delivered")
ok(wait_for(lambda: "no final dot" in grow_sink.log(), 5) and "stored" not in grow_sink.log(),
   "the downstream transaction was abandoned without the final dot", grow_sink.log()[-600:])
# a rebuilt field joins what the client folded: no line past 998 octets
# leaves (RFC 5322 2.1.1); every line the client sent is short
folded = b"To: bob@localdomain.local, a@b" + b"".join(
    b".\r\n label" if i % 8 == 0 else b".label" for i in range(300)) + b"\r\n"
content = folded + b"From: x@y.example\r\nSubject: long line\r\n\r\nbody\r\n"
ok(max(len(line) for line in content.split(b"\r\n")) < 100, "the client's lines are short")
rs = through_submitd("x@y.example", ["x@y.example"], content, d4)
ok(rs[-1].code == 552, "a rebuilt line past 998 octets: 552", str(rs[-1]))
ok(grow_sink.count() == 0, "nothing delivered")
like(d4.log(), r"hold a line longer than 998 octets: refused", "logged")
d4.stop()

# ---- an envelope address whose rewritten form is longer than the client's
# may be (@otherdomain on a long local part): sent rewritten, never the
# address the table was there to hide
longdom = ".".join(["d" * 60] * 4) + ".example"
longtab = pfmod.texthash(env, "generic-long", [("@long.example", "@" + longdom)])
long_sink = env.sink()
d6 = env.submitd(standard_config(certs, long_sink, [("generic_maps", longtab)]),
                 name="submitd-long")
local = "l" * 60
rs = through_submitd(local + "@long.example", [local + "@long.example"],
                     make_message(subject="long path", frm="x@y.example"), d6)
ok(rs[-1].code == 250 and long_sink.wait_count(1), "relayed", str(rs[-1]))
m = long_sink.messages()[0] if long_sink.messages() else None
is_(m.mail_from if m else None, local + "@" + longdom, "envelope sender rewritten")
is_(m.rcpts if m else None, [local + "@" + longdom], "envelope recipient rewritten")
unlike(long_sink.log(), r"@long\.example", "the internal address never went downstream")
d6.stop()

# ---- refused at load
for spec, want in (("mysql:" + env.path("x.cf"), "generic_maps"),
                   ("inline:{a@b.example=c@d.example,e@f.example}", "generic_maps"),
                   ("inline:{{a@b.example=Name <c@d.example>}}", "generic_maps")):
    if spec.startswith("mysql:"):
        with open(spec[6:], "w") as f:
            f.write("hosts = 127.0.0.1\nuser = u\npassword = p\ndbname = d\n"
                    "query = SELECT 1 WHERE '%s' = ''\n")
    conf = env.path("bad.conf")
    with open(conf, "w") as f:
        for k, v in standard_config(certs, None, [("generic_maps", spec)]):
            f.write("%s = %s\n" % (k, v))
    r = subprocess.run([env.binary, "-t", "-c", conf], capture_output=True, timeout=60)
    out = (r.stdout + r.stderr).decode(errors="replace")
    ok(r.returncode != 0 and want in out, "refused at load: %s" % spec, out[-400:])

done()
