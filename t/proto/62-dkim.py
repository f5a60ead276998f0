#!/usr/bin/env python3
"""DKIM signing inside submitd (docs/dkim.md), checked by three independent
verifiers (Debian's python3-dkim, libmail-dkim-perl and OpenDKIM) on what the
downstream stored, with DNS answered by the test:

- a corpus (8-bit body, SMTPUTF8, dot lines, long lines, trailing blank
  lines, empty body, BDAT in many chunks and without a final CRLF, folded
  and repeated headers, a 5 MB attachment) dual-signed RSA-2048 + Ed25519
  from OpenDKIM KeyTable/SigningTable files (refile:, with a pattern that
  matches nothing); what is signed is what the downstream got, Received:,
  Date: and Message-ID: fix-ups included;
- negative controls: the stored copy with one byte changed fails;
- a From: domain without a key streams unsigned; one log line per signature;
- `submitd -t` prints the TXT records (the same p= openssl derives);
- a bad key refuses the reload, naming the file; the old keys keep signing;
- the hold: 50 concurrent 5 MB signed messages stay within the memory
  bound (RSS); the temporary files never have a name in the directory and
  are gone after a disconnect in mid-DATA and after SIGKILL.
The signer alone, with more key sizes and both canonicalisations:
61-dkim-lib.py."""
import os
import re
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: F401,F403,E402
import dkimtest  # noqa: E402

env = Env()
env.require_binary()
why = dkimtest.missing()
if why:
    skip_all(why)
small_asan_quarantine(env.binary)  # RSS is measured below
certs = env.certs()
sink = env.sink()
# a logged-in sender, as the seeds have it: Dovecot checks the password,
# sender_login_maps the From: address
os.chmod(env.dir, 0o711)  # Dovecot's auth process (user dovecot) reads its passwd file in here
dv = private_dovecot(env, "passwd-file", users={
    "alice@example.org": ("alice-secret", "SSHA256", "")}, failure_delay="0")

keys = dkimtest.Keys(env.subdir("keys"))
keys.rsa("r2048", 2048)
keys.ed("e1")
kt = env.path("KeyTable")
with open(kt, "w") as f:
    f.write("rsa\texample.org:r2048:%s\ned example.org:e1:%s\n" % (keys.path["r2048"],
                                                                   keys.path["e1"]))
st = env.path("SigningTable")
with open(st, "w") as f:
    f.write("# refile: patterns, tried in order; every match signs\n"
            "*@nomatch.invalid rsa\n*@example.org rsa\n*@example.org ed\n")
tmpdir = env.subdir("hold")
extra = [("dkim_key_table", kt), ("dkim_signing_table", "refile:" + st),
         ("dkim_hold_memory", "64k"), ("dkim_temp_directory", tmpdir),
         ("dkim_signature_expiry", "7d"), ("dovecot_auth_socket", dv.socket),
         ("sender_login_maps", "inline:{ alice@example.org=alice@example.org }"),
         ("header_from_policy", "reject")]
d = env.submitd(standard_config(certs, sink, extra))

# ---- submitd -t: the TXT records to publish
r = subprocess.run([env.binary, "-t", "-c", d.conf], capture_output=True, timeout=60)
out = r.stdout.decode() + r.stderr.decode()
for name, txt in keys.dns.items():
    ok(('%s. IN TXT "%s"' % (name, txt)) in out.replace('" "', ""),
       "submitd -t prints %s's TXT record, as openssl derives it" % name, out)

# ---- the corpus
BIG = b"".join(b"%06d " % i + b"QUJD" * 18 + b"\r\n" for i in range(68000))  # ~5.2 MB base64-like
def msg(body, subject="dkim", frm="alice@example.org", extra=b""):
    return make_message(subject=subject, body=body, frm=frm, extra=extra)

corpus = [
    ("8-bit body", "alice@example.org", msg("Gr\u00fc\u00dfe \u65e5\u672c\r\n".encode()), "data"),
    ("SMTPUTF8", "j\u00f6rg@example.org",
     "From: J\u00f6rg <j\u00f6rg@example.org>\r\nTo: \u00fcser@example.net\r\nSubject: "
     "\u00fcmlaut\r\n\r\nhi\r\n".encode(), "utf8"),
    ("dot lines", "alice@example.org", msg(b".\r\n..\r\n.x\r\n. \r\nend\r\n"), "data"),
    ("long lines", "alice@example.org", msg(b"a" * 998 + b"\r\n" + b"b \t " * 240 + b"\r\n"), "data"),
    ("trailing blank lines", "alice@example.org", msg(b"text  \r\n\r\n \r\n\t\r\n\r\n"), "data"),
    ("empty body", "alice@example.org", msg(b""), "data"),
    ("no Date:, no Message-ID: (submitd adds them)", "alice@example.org",
     b"From: alice@example.org\r\nTo: b@example.net\r\nSubject: fixups\r\n\r\nbody\r\n", "data"),
    ("folded and repeated headers", "alice@example.org",
     b"From: Alice\r\n <alice@example.org>\r\nTo: a@x.net,\r\n\tb@x.net\r\nTo: c@x.net\r\n"
     b"Subject:   folded\r\n   subject  \r\nCc: one\r\nCc: two\r\nDate: Mon, 1 Jan 2024 "
     b"00:00:00 +0000\r\nContent-Type: text/plain;\r\n charset=us-ascii\r\n\r\nbody\r\n", "data"),
    ("BDAT, 37 chunks", "alice@example.org", msg(b"chunked line\r\n" * 300), "bdat"),
    ("BDAT, no final CRLF", "alice@example.org", msg(b"last line without CRLF"), "bdat"),
    ("5 MB attachment", "alice@example.org",
     msg(b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64"
         b"\r\n\r\n" + BIG + b"--b--\r\n",
         extra=b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n"), "data"),
]


def send(c, frm, content, how):
    params = " SMTPUTF8 BODY=8BITMIME" if how == "utf8" else " BODY=8BITMIME"
    r = c.cmd(("MAIL FROM:<%s>%s\r\n" % (frm, params)).encode())
    if r.code != 250:
        return r
    r = c.cmd("RCPT TO:<rcpt@example.net>")
    if r.code != 250:
        return r
    if how == "bdat":
        n = 37
        step = len(content) // n + 1
        parts = [content[i:i + step] for i in range(0, len(content), step)]
        for i, p in enumerate(parts):
            last = i == len(parts) - 1
            c.send(b"BDAT %d%s\r\n" % (len(p), b" LAST" if last else b"") + p)
            r = c.reply(timeout=60)
            if r.code != 250:
                return r
        return r
    r = c.cmd("DATA")
    if r.code != 354:
        return r
    c.send(stuff(content))
    return c.reply(timeout=120)


c = client(d, "plain", certs)
sent = []
for name, frm, content, how in corpus:
    sink.clear()
    r = send(c, frm, content, how)
    if r.code != 250 or not sink.wait_count(1):
        ok(False, "%s: relayed" % name, str(r))
        continue
    m = sink.messages()[0]
    p = env.path("stored-%d.eml" % len(sent))
    with open(p, "wb") as f:
        f.write(m.content)
    sent.append((name, p, m.content, content))
c.close()

res = dkimtest.verify(keys, [p for _, p, _, _ in sent])
for name, p, stored, content in sent:
    good, text = dkimtest.judge(res[p], 2)
    ok(good, "%s: RSA-2048 and Ed25519 signatures valid for dkimpy, Mail::DKIM, OpenDKIM" % name,
       text)
    fields, _ = header_fields(stored)
    names = [f.split(b":", 1)[0].lower() for f in fields]
    ok(names[:3] == [b"dkim-signature", b"dkim-signature", b"received"],
       "%s: two DKIM-Signature fields, then Received:" % name, names[:4])
    if name.startswith("5 MB"):
        ok(stored.endswith(BIG + b"--b--\r\n"), "5 MB: the body arrived whole after the hold")
    if name.startswith("no Date:"):
        sig = b" ".join(fields[0].split())
        ok(b"date:message-id" in sig.replace(b"\r\n", b"") and
           [n for n in names if n in (b"date", b"message-id")] == [b"date", b"message-id"],
           "the Date: and Message-ID: submitd added are signed", sig)
    if name.startswith("folded"):
        sig = re.sub(rb"\s", b"", fields[0])
        ok(b"h=from:from:to:to:cc:cc:subject:date:message-id:content-type;" in sig,
           "h=: From twice (over-signed), both To: and Cc:, Content-*", sig)
        ok(b"x=" in sig and b"t=" in sig, "t= and x= (dkim_signature_expiry)")

# ---- a logged-in user on the submission port (STARTTLS, AUTH)
sink.clear()
c = client(d, "starttls", certs)
r = c.cmd("AUTH PLAIN " + b64("\0alice@example.org\0alice-secret"))
ok(r.code == 235, "AUTH as alice@example.org", str(r))
r = send(c, "alice@example.org", msg(b"from a logged-in user\r\n"), "data")
ok(r.code == 250 and sink.wait_count(1), "logged in: relayed", str(r))
p = env.path("authenticated.eml")
stored = sink.messages()[0].content if sink.count() else b""
open(p, "wb").write(stored)
good, text = dkimtest.judge(dkimtest.verify(keys, [p])[p], 2)
ok(good and b"(Authenticated sender: alice@example.org)" in stored,
   "logged in: the signature covers the Received: naming the login", text)
r = send(c, "alice@example.org", msg(b"forged\r\n", frm="mallory@example.org"), "data")
ok(r.code == 550, "a From: the login does not own is refused before anything is signed", str(r))
c.close()

# ---- only a From: held to the login is signed: with header_from_policy =
# warn a login may send as a colleague, and that must not carry the domain's
# signature
dw = env.submitd(standard_config(certs, sink, extra + [("header_from_policy", "warn")]),
                 name="warn")
sink.clear()
c = client(dw, "starttls", certs)
r = c.cmd("AUTH PLAIN " + b64("\0alice@example.org\0alice-secret"))
r = send(c, "alice@example.org", msg(b"as the boss\r\n", frm="ceo@example.org"), "data")
ok(r.code == 250 and sink.wait_count(1), "warn: a From: not owned is relayed (and logged)", str(r))
stored = sink.messages()[0].content if sink.count() else b""
ok(b"DKIM-Signature" not in stored, "warn: ... and not signed", stored[:300])
ok(dw.wait_log(r"dkim: not signed: the From: of user alice@example\.org is not enforced"),
   "warn: the log says why it went out unsigned")
c.close()

# ---- the temporary directory gone while a message spills into it: the
# client is read to its end and gets 451, nothing hangs
gone = env.subdir("hold-gone")
dg = env.submitd(standard_config(certs, sink, [x for x in extra if x[0] != "dkim_temp_directory"]
                                 + [("dkim_temp_directory", gone)]), name="tmpgone")
os.rmdir(gone)
c = client(dg, "plain", certs)
t0 = time.time()
out = c.send_message("alice@example.org", ["rcpt@example.net"],
                     stuff(msg((b"z" * 76 + b"\r\n") * 30000)))
ok(out[-1].code == 451 and time.time() - t0 < 20,
   "temporary directory removed: 451 in %.1f s, no hang" % (time.time() - t0), str(out[-1]))
c.close()

# ---- negative controls on a stored copy
name, p, stored, _ = sent[7]
body_at = stored.index(b"\r\n\r\n") + 4
mut = {
    "one body octet": stored[:body_at] + b"X" + stored[body_at + 1:],
    "one octet of a signed header (Subject:)": stored.replace(b"folded\r\n", b"Folded\r\n", 1),
}
paths = []
for k, v in mut.items():
    q = env.path("mutant-%d.eml" % len(paths))
    open(q, "wb").write(v)
    paths.append((k, q))
res = dkimtest.verify(keys, [q for _, q in paths])
for k, q in paths:
    rs = res[q]
    ok(len(rs) == 6 and not [x for x in rs if x[5] == "pass"],
       "control: the stored copy with %s fails in all three verifiers" % k,
       "; ".join("%s %s %s" % (x[0], x[4], x[5]) for x in rs))

# ---- unsigned mail streams as before; log lines
sink.clear()
c = client(d, "plain", certs)
r = send(c, "bob@example.com", msg(b"no key for me\r\n", frm="bob@example.com"), "data")
ok(r.code == 250 and sink.wait_count(1) and b"DKIM-Signature" not in sink.messages()[0].content,
   "From: a domain without a key: sent unsigned")
c.close()
log = d.log()
n_signed = len(re.findall(r"dkim: signed, d=example\.org, s=r2048, a=rsa-sha256, bits=2048", log))
n_ed = len(re.findall(r"dkim: signed, d=example\.org, s=e1, a=ed25519-sha256", log))
ok(n_signed == len(sent) + 1 and n_ed == len(sent) + 1,  # + the logged-in one
   "one log line per signature (domain, selector, algorithm): %d + %d" % (n_signed, n_ed))

# ---- reload: a bad key refuses it, naming the file; the old keys still sign
with open(keys.path["e1"], "rb") as f:
    good_ed = f.read()
with open(keys.path["e1"], "wb") as f:
    f.write(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
os.kill(d.proc.pid, signal.SIGHUP)
ok(d.wait_log(r"reload refused: .*%s" % re.escape(keys.path["e1"]), 10),
   "SIGHUP with a broken key: reload refused, the log names the file",
   d.log()[-600:])
sink.clear()
c = client(d, "plain", certs)
r = send(c, "alice@example.org", msg(b"after the refused reload\r\n"), "data")
ok(r.code == 250 and sink.wait_count(1), "still sending after the refused reload")
p = env.path("after-reload.eml")
open(p, "wb").write(sink.messages()[0].content)
good, text = dkimtest.judge(dkimtest.verify(keys, [p])[p], 2)
ok(good, "and signing with the keys it had", text)
c.close()
with open(keys.path["e1"], "wb") as f:
    f.write(good_ed)


# ---- the hold: temporary files and memory
def hold_fds(pid):
    """submitd's descriptors on files in the hold directory."""
    out = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            t = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if t.startswith(tmpdir):
            out.append(t)
    return out


c = client(d, "plain", certs)
c.cmd("MAIL FROM:<alice@example.org>")
c.cmd("RCPT TO:<rcpt@example.net>")
c.cmd("DATA")
half = stuff(msg(BIG))[:3000000]
c.send(half)
ok(wait_for(lambda: hold_fds(d.proc.pid), 10),
   "mid-DATA, 3 MB in: the hold is a temporary file (%s)" % hold_fds(d.proc.pid))
ok(os.listdir(tmpdir) == [], "which has no name in the directory")
c.close()
ok(wait_for(lambda: not hold_fds(d.proc.pid), 10), "the client hangs up: the file is closed")

# 50 concurrent 5 MB signed messages
def rss_kib(pid, field="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"%s:\s+(\d+)" % field, f.read()).group(1))

sink.clear()
before = rss_kib(d.proc.pid)
big = stuff(msg(BIG))
codes = []
peak = [before]
stop = threading.Event()


def sample():
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], rss_kib(d.proc.pid))
        except OSError:
            pass
        time.sleep(0.02)


def one(i):
    try:
        cl = client(d, "plain", certs)
        out = cl.send_message("alice@example.org", ["rcpt%d@example.net" % i], big)
        codes.append(out[-1].code)
        cl.close()
    except Exception as e:  # noqa: BLE001
        codes.append(str(e))


sampler = threading.Thread(target=sample)
sampler.start()
t0 = time.time()
threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
for t in threads:
    t.start()
for t in threads:
    t.join(300)
stop.set()
sampler.join()
ok(codes == [250] * 50, "50 concurrent 5 MB signed messages: all 250 (%.1f s)" % (time.time() - t0),
   codes)
grow = peak[0] - before
# the bound: per session 2 x dkim_hold_memory (64k) + the header section,
# plus the relay's and the client's 64 KiB buffers; far below 50 x 5 MB
ok(grow < 50 * 1024, "RSS grew by %d KiB (bound 50 MiB; the bodies were 250 MB)" % grow)
ok(wait_for(lambda: sink.count() >= 50, 30), "the sink has all 50")
p = env.path("big-concurrent.eml")
open(p, "wb").write(sink.messages()[-1].content)
good, text = dkimtest.judge(dkimtest.verify(keys, [p])[p], 2)
ok(good, "one of them verifies", text)
ok(not hold_fds(d.proc.pid) and os.listdir(tmpdir) == [], "no temporary file is left")

# A downstream that hangs up, or stops reading, while the held message goes
# out: the client gets 451 4.4.2 (relay_timeout), nothing hangs, the file goes.
import socketserver  # noqa: E402


class BadDownstream(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        self.mode = "close"
        super().__init__(("127.0.0.1", 0), BadSession)
        threading.Thread(target=self.serve_forever, daemon=True).start()


class BadSession(socketserver.StreamRequestHandler):
    timeout = 30

    def handle(self):
        try:
            self.wfile.write(b"220 bad.test ESMTP\r\n")
            for raw in self.rfile:
                verb = raw[:4].upper()
                if verb == b"EHLO":
                    self.wfile.write(b"250-bad.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
                elif verb == b"DATA":
                    self.wfile.write(b"354 go\r\n")
                    self.rfile.read(200000)
                    if self.server.mode == "stall":
                        time.sleep(8)
                    return
                elif verb == b"QUIT":
                    self.wfile.write(b"221 bye\r\n")
                    return
                else:
                    self.wfile.write(b"250 ok\r\n")
        except OSError:
            pass


bad = BadDownstream()
d3 = env.submitd(standard_config(certs, None, extra + [
    ("relayhost", "[127.0.0.1]:%d" % bad.server_address[1]), ("relay_timeout", "2s")]),
    name="baddownstream")
for mode in ("close", "stall"):
    bad.mode = mode
    c = client(d3, "plain", certs)
    t0 = time.time()
    out = c.send_message("alice@example.org", ["rcpt@example.net"], big)
    took = time.time() - t0
    ok(out[-1].code == 451 and out[-1].enhanced == "4.4.2" and took < 7,
       "downstream %s in mid-content of a held message: 451 4.4.2 in %.1f s" % (
           "hangs up" if mode == "close" else "stops reading", took), str(out[-1]))
    c.close()
    ok(wait_for(lambda: not hold_fds(d3.proc.pid), 10), "%s: the temporary file is closed" % mode)

# SIGKILL in mid-DATA: nothing of the hold survives (the file never had a name)
d2 = env.submitd(standard_config(certs, sink, extra), name="killed")
c = client(d2, "plain", certs)
c.cmd("MAIL FROM:<alice@example.org>")
c.cmd("RCPT TO:<rcpt@example.net>")
c.cmd("DATA")
c.send(half)
ok(wait_for(lambda: hold_fds(d2.proc.pid), 10), "second submitd: holding in a temporary file")
d2.proc.kill()
d2.proc.wait()
d2.proc = None
c.close()
ok(os.listdir(tmpdir) == [], "killed with SIGKILL: the hold directory is empty")
done()
