#!/usr/bin/env python3
"""Delivery over starttls, tls and plain listeners: byte-exact content (8-bit
UTF-8, a 998-octet line, dot lines, 20 MB), the Received: header, Date: and
Message-ID: fix-ups, real clients (smtplib, swaks, curl, openssl s_client,
gnutls-cli, msmtp) and an IPv6 listener."""
import os
import re
import smtplib
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

env, certs, sink = setup()
v6port = free_port("::1")
conf = standard_config(certs, sink) + [("listen", "[::1]:%d starttls trusted" % v6port)]
d = env.submitd(conf)

DATE_RE = r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), +\d{1,2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|" \
          r"Nov|Dec) \d{4} \d\d:\d\d(:\d\d)? [+-]\d{4}"


def smtplib_client(mode, host=None, port=None):
    h, p = d.addr(mode)
    h, p = host or h, port or p
    ctx = certs.client_context()
    if mode == "tls":
        c = smtplib.SMTP_SSL(h, p, context=ctx, timeout=120)
    else:
        c = smtplib.SMTP(h, p, timeout=120)
    c.ehlo("smtplib-%s.test.example" % mode)
    if mode == "starttls":
        c.starttls(context=ctx)
        c.ehlo("smtplib-%s.test.example" % mode)
    return c


def newest_since(n):
    ms = sink.messages()
    return ms[n:] if len(ms) > n else []


def check_exact(m, client_msg, name, expect_added=("received",)):
    """m: stored message; the content must be the client's message with only
    the expected headers added."""
    added, rest = split_added(m.content, client_msg)
    names = sorted(f.split(b":", 1)[0].decode().lower() for f in added)
    is_(names, sorted(expect_added), "%s: submitd added exactly %s" % (name, ", ".join(expect_added)))
    if rest == client_msg:
        ok(True, "%s: content byte-exact" % name)
    else:
        i = next((k for k in range(min(len(rest), len(client_msg))) if rest[k] != client_msg[k]),
                 min(len(rest), len(client_msg)))
        ok(False, "%s: content byte-exact" % name,
           "first difference at offset %d (stored %d bytes, sent %d): stored %r sent %r"
           % (i, len(rest), len(client_msg), rest[max(0, i - 40):i + 40],
              client_msg[max(0, i - 40):i + 40]))
    ok(not m.env["violations"], "%s: no bare CR/LF reached the downstream" % name,
       m.env["violations"])


# ------------------------------------------------------------- contents
utf8 = make_message(subject="=?UTF-8?B?w6l0w6k=?=",
                    extra=b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n"
                          b"Content-Transfer-Encoding: 8bit\r\n",
                    body="Grüße aus Köln — ½ € ✓ 日本語 🙂\r\nñ\r\n".encode("utf-8"))
long_line = make_message(subject="998", body=b"A" * 998 + b"\r\n" + b"b" * 997 + b"\r\nend\r\n")
dots = make_message(subject="dots", body=b".\r\n..\r\n...\r\n.leading\r\n..double\r\n"
                                          b" .not at start\r\n.\r\n.x.\r\nlast\r\n")
no_final_crlf = make_message(subject="noeol", body=b"no newline at the end")
CASES = [("8-bit UTF-8 body", utf8, ["BODY=8BITMIME"]),
         ("998-octet line", long_line, []),
         ("dot lines", dots, []),
         ]

for mode in ("starttls", "tls", "plain"):
    before = sink.count()
    try:
        c = smtplib_client(mode)
        for label, msg, opts in CASES:
            refused = c.sendmail("sender@example.com", ["rcpt@example.net"], msg, mail_options=opts)
            is_(refused, {}, "%s/%s: accepted" % (mode, label))
        c.quit()
    except (smtplib.SMTPException, OSError) as e:
        ok(False, "%s: smtplib session" % mode, repr(e))
    got = newest_since(before)
    is_(len(got), len(CASES), "%s: downstream stored %d messages" % (mode, len(CASES)))
    for (label, msg, _), m in zip(CASES, got):
        check_exact(m, msg, "%s/%s" % (mode, label))
        is_(m.rcpts, ["rcpt@example.net"], "%s/%s: envelope recipient" % (mode, label))
        is_(m.mail_from, "sender@example.com", "%s/%s: envelope sender" % (mode, label))
    if got:
        rcv = first_header(got[0].content)
        like(rcv, r"^Received: from smtplib-%s\.test\.example\b" % mode,
             "%s: Received: first, names the EHLO name" % mode)
        like(rcv, r"\[127\.0\.0\.1\]", "%s: Received: names [127.0.0.1]" % mode)
        like(rcv, r"\bby mail\.test\.example\b", "%s: Received: by mail.test.example" % mode)
        if mode == "plain":
            like(rcv, r"\bwith ESMTP\b", "%s: Received: with ESMTP" % mode)
            unlike(rcv, r"TLS", "%s: Received: no TLS details" % mode)
        else:
            like(rcv, r"\bwith ESMTPS\b", "%s: Received: with ESMTPS" % mode)
            like(rcv, r"TLS ?v?1\.[23]", "%s: Received: TLS version" % mode)
            like(rcv, r"(?i)cipher|AES|CHACHA", "%s: Received: cipher" % mode)
        like(rcv, r"\bid [A-Za-z0-9.]+", "%s: Received: id" % mode)
        like(rcv, r"\bfor <rcpt@example\.net>", "%s: Received: for <rcpt> (one recipient)" % mode)
        like(rcv, r";\s*" + DATE_RE + r"(\s*\([^)]*\))?\s*\r\n$", "%s: Received: ends in a date" % mode)
        is_(len(headers_named(got[0].content, "Received")), 1, "%s: one Received: added" % mode)

# message without a final CRLF (smtplib adds the CRLF, that is what is sent)
c = smtplib_client("plain")
before = sink.count()
c.sendmail("sender@example.com", ["rcpt@example.net"], no_final_crlf)
c.quit()
got = newest_since(before)
if ok(len(got) == 1, "message without final CRLF delivered"):
    check_exact(got[0], no_final_crlf + b"\r\n", "no final CRLF")

# ------------------------------------------------------------- 20 MB
big_body = b"".join(b"%08d %s\r\n" % (i, b"x" * 66) for i in range(20 * 1024 * 1024 // 77))
big = make_message(subject="20MB", body=big_body)
ok(len(big) >= 20 * 1024 * 1024 - 200, "20 MB message built (%d bytes)" % len(big))
for mode in ("starttls", "tls", "plain"):
    before = sink.count()
    t0 = time.time()
    try:
        c = smtplib_client(mode)
        is_(c.sendmail("big@example.com", ["rcpt@example.net"], big), {}, "%s/20 MB: accepted" % mode)
        c.quit()
    except (smtplib.SMTPException, OSError) as e:
        ok(False, "%s/20 MB: accepted" % mode, repr(e))
    diag("%s: 20 MB in %.1fs" % (mode, time.time() - t0))
    got = newest_since(before)
    if ok(len(got) == 1, "%s/20 MB: stored" % mode):
        check_exact(got[0], big, "%s/20 MB" % mode)
    sink.clear()
del big, big_body

# ------------------------------------------------------------- Received: details
c = smtplib_client("starttls")
before = sink.count()
c.sendmail("sender@example.com", ["a@example.net", "b@example.net"], make_message(subject="two"))
c.quit()
got = newest_since(before)
if ok(len(got) == 1, "two recipients: stored once"):
    is_(got[0].rcpts, ["a@example.net", "b@example.net"], "two recipients in the envelope")
    unlike(first_header(got[0].content), r"\bfor <", "two recipients: Received: has no 'for'")

# ------------------------------------------------------------- Date:/Message-ID: fix-ups
for label, msg, want_added in [
        ("neither Date: nor Message-ID:", make_message(subject="nodate", date=False, msgid=False),
         ["date", "message-id", "received"]),
        ("no Date:", make_message(subject="nodate2", date=False), ["date", "received"]),
        ("no Message-ID:", make_message(subject="nomsgid", msgid=False), ["message-id", "received"]),
        ("both present", make_message(subject="both"), ["received"])]:
    before = sink.count()
    c = smtplib_client("tls")
    c.sendmail("sender@example.com", ["rcpt@example.net"], msg)
    c.quit()
    got = newest_since(before)
    if not ok(len(got) == 1, "%s: delivered" % label):
        continue
    check_exact(got[0], msg, label, want_added)
    dates = headers_named(got[0].content, "Date")
    mids = headers_named(got[0].content, "Message-ID")
    is_(len(dates), 1, "%s: exactly one Date:" % label)
    is_(len(mids), 1, "%s: exactly one Message-ID:" % label)
    if dates:
        like(dates[0], r"^Date: " + DATE_RE, "%s: Date: is an RFC 5322 date" % label)
    if mids:
        like(mids[0], r"^Message-ID: <[^<>@\s]+@[^<>@\s]+>\r\n$", "%s: Message-ID: is <id@domain>"
             % label, re.I)

# ------------------------------------------------------------- real clients
MARK = "mark-%d" % os.getpid()


def delivered_with(subject_mark, timeout=5):
    def f():
        for m in sink.messages():
            if ("Subject: " + subject_mark).encode() in m.content:
                return m
        return None
    return wait_for(f, timeout)


def interactive(argv, data, until, timeout=30):
    """Runs an interactive client: feeds it data, keeps stdin open until
    `until` (regex) shows in its output, then closes stdin."""
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    out = b""
    try:
        import select
        p.stdin.write(data)
        p.stdin.flush()
        deadline = time.time() + timeout
        while time.time() < deadline:
            r, _, _ = select.select([p.stdout], [], [], 0.2)
            if r:
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    break
                out += chunk
                if re.search(until, out):
                    break
        p.stdin.close()
        p.stdin = None
        try:
            out += p.communicate(timeout=5)[0]
        except subprocess.TimeoutExpired:
            p.kill()
            out += p.communicate()[0]
    except (BrokenPipeError, OSError):
        p.kill()
        out += p.communicate()[0] or b""
    return p.returncode, out.decode("utf-8", "replace")


sh, sp = d.addr("starttls")
th, tp = d.addr("tls")
ph, pp = d.addr("plain")

# swaks
for label, args, port in [("swaks STARTTLS", ["--tls"], sp), ("swaks implicit TLS", ["--tls-on-connect"], tp),
                          ("swaks plain", [], pp)]:
    subj = "%s %s" % (MARK, label.replace(" ", "-"))
    st, out = run(["swaks", "--server", "127.0.0.1:%d" % port, "--ehlo", "swaks.test.example",
                   "--from", "swaks@example.com", "--to", "rcpt@example.net",
                   "--header", "Subject: " + subj, "--body", "hello from swaks"] + args)
    ok(st == 0, "%s: exit 0" % label, out[-2500:])
    like(out, r"(?m)^ [-~]> \.\r?\n<[-~]\s+250 2\.\d\.\d", "%s: 250 after the final dot" % label)
    m = delivered_with(subj)
    if ok(m is not None, "%s: delivered" % label, out[-2500:]):
        like(first_header(m.content), r"with ESMTPS" if args else r"with ESMTP\b",
             "%s: Received: protocol" % label)

# curl (the file's bytes must arrive exactly)
for label, url, extra in [("curl STARTTLS", "smtp://127.0.0.1:%d" % sp, ["--ssl-reqd"]),
                          ("curl smtps", "smtps://127.0.0.1:%d" % tp, []),
                          ("curl plain", "smtp://127.0.0.1:%d" % pp, [])]:
    subj = "%s %s" % (MARK, label.replace(" ", "-"))
    msg = make_message(subject=subj, body=b"curl body\r\n.dot line\r\n")
    path = env.path("%s.eml" % label.replace(" ", "_"))
    with open(path, "wb") as f:
        f.write(msg)
    st, out = run(["curl", "-sS", "-v", "--cacert", certs.ca, url + "/curl.test.example",
                   "--mail-from", "curl@example.com", "--mail-rcpt", "rcpt@example.net",
                   "--upload-file", path] + extra)
    ok(st == 0, "%s: exit 0" % label, out[-2500:])
    m = delivered_with(subj)
    if ok(m is not None, "%s: delivered" % label):
        check_exact(m, msg, label)

# openssl s_client, pipelining everything after TLS
for label, argv in [("openssl s_client -starttls smtp",
                     ["openssl", "s_client", "-starttls", "smtp", "-connect", "127.0.0.1:%d" % sp]),
                    ("openssl s_client (465)", ["openssl", "s_client", "-connect", "127.0.0.1:%d" % tp])]:
    subj = "%s %s" % (MARK, label.split()[0] + ("-starttls" if "starttls" in label else "-tls"))
    msg = make_message(subject=subj)
    data = (b"EHLO openssl.test.example\r\nMAIL FROM:<ossl@example.com>\r\nRCPT TO:<rcpt@example.net>\r\n"
            b"DATA\r\n" + stuff(msg) + b"QUIT\r\n")
    st, out = interactive(argv + ["-CAfile", certs.ca, "-verify_return_error", "-quiet", "-ign_eof",
                                  "-servername", MYHOST], data, rb"221 ")
    like(out, r"(?m)^250 2\.\d\.\d.*\r?\n(.*\r?\n)*221 ", "%s: 250 for the message, then 221" % label)
    m = delivered_with(subj)
    if ok(m is not None, "%s: delivered" % label, out[-2500:]):
        check_exact(m, msg, label)

# gnutls-cli
subj = "%s gnutls-cli" % MARK
msg = make_message(subject=subj)
data = (b"EHLO gnutls.test.example\r\nMAIL FROM:<gnutls@example.com>\r\nRCPT TO:<rcpt@example.net>\r\n"
        b"DATA\r\n" + stuff(msg) + b"QUIT\r\n")
st, out = interactive(["gnutls-cli", "--starttls-proto=smtp", "--x509cafile", certs.ca,
                       "--port", str(sp), "localhost"], data, rb"221 ")
m = delivered_with(subj)
if ok(m is not None, "gnutls-cli --starttls-proto=smtp: delivered", out[-2500:]):
    check_exact(m, msg, "gnutls-cli")
st, out = interactive(["gnutls-cli", "--x509cafile", certs.ca, "--port", str(tp), "localhost"],
                      data.replace(b"gnutls-cli", b"gnutls-cli-465"), rb"221 ")
ok(delivered_with("%s gnutls-cli-465" % MARK) is not None, "gnutls-cli implicit TLS: delivered",
   out[-2500:])

# msmtp
for label, args in [("msmtp STARTTLS", ["--port=%d" % sp, "--tls=on", "--tls-starttls=on"]),
                    ("msmtp implicit TLS", ["--port=%d" % tp, "--tls=on", "--tls-starttls=off"])]:
    subj = "%s %s" % (MARK, label.replace(" ", "-"))
    msg = make_message(subject=subj)
    st, out = run(["msmtp", "--host=localhost", "--auth=off", "--tls-trust-file=" + certs.ca,
                   "--domain=msmtp.test.example", "--from=msmtp@example.com",
                   ] + args + ["rcpt@example.net"], input=msg)
    ok(st == 0, "%s: exit 0" % label, out[-2500:])
    ok(delivered_with(subj) is not None, "%s: delivered" % label)

# ------------------------------------------------------------- IPv6
try:
    c = smtplib_client("starttls", host="::1", port=v6port)
    before = sink.count()
    msg = make_message(subject="ipv6")
    is_(c.sendmail("v6@example.com", ["rcpt@example.net"], msg), {}, "IPv6 [::1] listener: accepted")
    c.quit()
    got = newest_since(before)
    if ok(len(got) == 1, "IPv6: delivered"):
        like(first_header(got[0].content), r"::1", "IPv6: Received: names ::1")
except (OSError, smtplib.SMTPException) as e:
    ok(False, "IPv6 [::1] listener", repr(e))

# ------------------------------------------------------------- log lines
log = d.log()
like(log, r"connect from \S*\[127\.0\.0\.1\]", "log: connect from HOST[IP]")
like(log, r"status=sent", "log: status=sent")
like(log, r"disconnect from \S*\[127\.0\.0\.1\].*\bcommands=\d+", "log: disconnect with counters")
unlike(log, r"(?i)\b(panic|fatal|assert)", "log: no panic/fatal/assert")
done()
