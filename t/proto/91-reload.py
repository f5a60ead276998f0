#!/usr/bin/env python3
"""Reload without dropping anyone (docs/design.md §3: "reload builds a new snapshot
and swaps it in; sessions in flight keep the snapshot they started with").

- Certificate renewal the way certbot does it (new files in archive/, the
  symlinks in live/ swapped): picked up by itself, without SIGHUP; a client
  before the swap sees the old certificate, a client after it the new one
  (by SHA-256 fingerprint, on both the STARTTLS and the implicit-TLS port);
  a session open across the swap completes its mail; a new pair that does not
  match is refused with a log line and the old one is still served.
- SIGHUP with a broken configuration: refused with a log line naming file
  and line, the old configuration keeps serving; a changed value
  (message_size_limit) is used by sessions that start after the reload while
  a session opened before keeps its own.
- SIGTERM during a transaction: the transaction completes (250, and the
  downstream has it) or gets a 4xx (and the downstream has nothing): never
  lost; new connections are no longer accepted; the process exits.

sd_notify(3) and sd_listen_fds(3) (RELOADING/READY, STOPPING)."""
import hashlib
import os
import re
import signal
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

env, certs, sink = setup()


def make_pair(d, name, cn=MYHOST, sans=(MYHOST, "localhost")):
    """A new key and certificate from the test CA; returns (fullchain, key)."""
    return certs.issue(d, name, "ec", cn, sans)


def pem_fingerprint(path):
    text = open(path).read()
    first = text[:text.index("-----END CERTIFICATE-----") + 25]
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(first)).hexdigest()


def served_fingerprint(d, mode):
    if mode == "tls":
        c = SMTP(*d.addr("tls"), tls=True, certs=certs)
    else:
        c = SMTP(*d.addr("starttls"))
        c.ehlo()
        c.starttls()
    fp = hashlib.sha256(c.sock.getpeercert(binary_form=True)).hexdigest()
    c.cmd("QUIT")
    c.close()
    return fp


def relink(link, target):
    """Replaces a symlink atomically, as certbot does in live/."""
    tmp = link + ".new"
    os.symlink(target, tmp)
    os.rename(tmp, link)


# ---------------------------------------------------------------- certbot layout
archive = env.subdir("archive")
live = env.subdir("live")
crt1, key1 = make_pair(archive, "cert1")
crt2, key2 = make_pair(archive, "cert2")
crt3, key3 = make_pair(archive, "cert3")
fp1, fp2, fp3 = pem_fingerprint(crt1), pem_fingerprint(crt2), pem_fingerprint(crt3)
ok(len({fp1, fp2, fp3}) == 3, "three different certificates")
live_crt = os.path.join(live, "fullchain.pem")
live_key = os.path.join(live, "privkey.pem")
os.symlink(crt1, live_crt)
os.symlink(key1, live_key)

d = env.submitd(standard_config(certs, sink, [("tls_cert_file", live_crt),
                                              ("tls_key_file", live_key),
                                              ("message_size_limit", "1000000")]))
ok(d.wait_log(r"ready: .*SHA-256", 10), "ready; the log names the certificate", d.log())
is_(served_fingerprint(d, "starttls"), fp1, "before the swap: STARTTLS serves the first certificate")
is_(served_fingerprint(d, "tls"), fp1, "before the swap: implicit TLS serves the first certificate")

# A session that starts before the swap and finishes after it.
old = client(d, "starttls", certs)
old_fp = hashlib.sha256(old.sock.getpeercert(binary_form=True)).hexdigest()
msg = make_message(subject="across the swap", body=b"part one\r\n" * 50 + b"part two\r\n" * 50)
wire = stuff(msg)
is_(old.cmd("MAIL FROM:<a@example.com>").code, 250, "open session: MAIL")
is_(old.cmd("RCPT TO:<b@example.net>").code, 250, "open session: RCPT")
is_(old.cmd("DATA").code, 354, "open session: DATA")
old.send(wire[:len(wire) // 2])

# Renewal: new files, symlinks swapped (certificate first, then key: the
# half-way state does not match and must not be served or logged as fatal).
relink(live_crt, crt2)
time.sleep(0.3)
relink(live_key, key2)
ok(d.wait_log(r"configuration reloaded", 12), "the changed files were picked up without SIGHUP",
   d.log()[-2000:])
like(d.log(), r"reloading .* \(.*(fullchain|privkey)\.pem changed\)", "the log says which file changed")
is_(served_fingerprint(d, "starttls"), fp2, "after the swap: STARTTLS serves the new certificate")
is_(served_fingerprint(d, "tls"), fp2, "after the swap: implicit TLS serves the new certificate")

old.send(wire[len(wire) // 2:])
r = old.reply(timeout=30)
is_(r.code, 250, "the session open across the swap completes its mail")
is_(old_fp, fp1, "... on the connection that still uses the first certificate")
is_(old.cmd("QUIT").code, 221, "... and quits normally")
old.close()
ok(sink.wait_count(1), "the downstream has that message")
msgs = sink.messages()
ok(msgs and split_added(msgs[-1].content, msg)[1] == msg, "byte for byte")

# A mismatched pair: certificate 3 with key 2 -> refused, certificate 2 kept.
n_refused = len(re.findall(r"reload refused", d.log()))
relink(live_crt, crt3)
ok(wait_for(lambda: len(re.findall(r"reload refused", d.log())) > n_refused, 12),
   "a certificate that does not match its key: refused with a log line", d.log()[-1500:])
refused = [l for l in d.log().splitlines() if "reload refused" in l][-1:]
like(refused[0] if refused else "", r"fullchain\.pem|privkey\.pem|key", "the refusal names the files")
time.sleep(2.5)
is_(served_fingerprint(d, "starttls"), fp2, "the old pair is still served (STARTTLS)")
is_(served_fingerprint(d, "tls"), fp2, "the old pair is still served (implicit TLS)")
# The key arrives: now the pair matches and is taken.
n_reloaded = len(re.findall(r"configuration reloaded", d.log()))
relink(live_key, key3)
ok(wait_for(lambda: len(re.findall(r"configuration reloaded", d.log())) > n_reloaded, 12),
   "the matching key arrives: reloaded")
is_(served_fingerprint(d, "tls"), fp3, "the third certificate is served")
c = client(d, "tls", certs)
out = c.send_message("a@example.com", ["b@example.net"], stuff(make_message(subject="after")))
is_([x.code for x in out], [250, 250, 354, 250], "delivery with the renewed certificate")
c.close()

# ---------------------------------------------------------------- SIGHUP: configuration


def ehlo_size(d):
    c = SMTP(*d.addr("plain"))
    r = c.ehlo()
    c.cmd("QUIT")
    c.close()
    m = re.search(r"^250[ -]SIZE (\d+)", "\n".join(r.lines), re.M)
    return int(m.group(1)) if m else None


is_(ehlo_size(d), 1000000, "SIZE before the reload")
early = SMTP(*d.addr("plain"))
early.ehlo()
good_conf = open(d.conf).read()
with open(d.conf, "a") as f:
    f.write("message_size_limit = lots\n")
n_refused = len(re.findall(r"reload refused", d.log()))
os.kill(d.proc.pid, signal.SIGHUP)
ok(wait_for(lambda: len(re.findall(r"reload refused", d.log())) > n_refused, 10),
   "SIGHUP with a broken configuration: refused")
nlines = len(good_conf.splitlines()) + 1
like(d.log(), r"reload refused: %s:%d: message_size_limit" % (re.escape(d.conf), nlines),
     "the log line names file, line and key")
like(d.log(), r"still serving with the previous configuration", "the log line says the old one stays")
ok(d.running(), "still running")
is_(ehlo_size(d), 1000000, "the old configuration keeps serving")

with open(d.conf, "w") as f:
    f.write(good_conf.replace("message_size_limit = 1000000", "message_size_limit = 2000000"))
n_reloaded = len(re.findall(r"configuration reloaded", d.log()))
os.kill(d.proc.pid, signal.SIGHUP)
ok(wait_for(lambda: len(re.findall(r"configuration reloaded", d.log())) > n_reloaded, 10),
   "SIGHUP with a good configuration: reloaded")
time.sleep(0.3)
is_(ehlo_size(d), 2000000, "a new session sees the changed message_size_limit")
r = early.ehlo()
like("\n".join(r.lines), r"SIZE 1000000\b", "a session opened before the reload keeps its own")
early.cmd("QUIT")
early.close()

# A changed listen line is ignored with a warning (no new sockets after the
# privilege drop); everything else of that configuration is taken.
with open(d.conf, "w") as f:
    f.write(good_conf.replace("message_size_limit = 1000000", "message_size_limit = 3000000")
            + "listen = 127.0.0.1:%d plain\n" % free_port())
os.kill(d.proc.pid, signal.SIGHUP)
ok(d.wait_log(r"the \"listen\" lines changed; keeping the current listeners", 10),
   "new listen lines on reload: warned about, ignored")
ok(wait_for(lambda: ehlo_size(d) == 3000000, 5), "... the rest of that configuration is used")
d.stop()

# ---------------------------------------------------------------- SIGTERM mid-transaction


def sigterm_during(delay_data, label):
    """A transaction in DATA when SIGTERM arrives: completes or 4xx, never
    lost."""
    s = env.sink(args=["--delay-data", str(delay_data)] if delay_data else [])
    d = env.submitd(standard_config(certs, s))
    c = client(d, "starttls", certs)
    m = make_message(subject=label)
    w = stuff(m)
    c.cmd("MAIL FROM:<a@example.com>")
    c.cmd("RCPT TO:<b@example.net>")
    c.cmd("DATA")
    c.send(w[:40])
    time.sleep(0.2)
    os.kill(d.proc.pid, signal.SIGTERM)
    ok(d.wait_log(r"SIGTERM received", 5), "%s: SIGTERM received" % label)
    time.sleep(0.3)
    refused = True
    try:
        t = SMTP(*d.addr("starttls"), timeout=3)
        refused = t.greeting.code != 220
        t.close()
    except OSError:
        pass
    ok(refused, "%s: no new connection is served after SIGTERM" % label)
    c.send(w[40:])
    r = c.reply(timeout=30)
    ok(r.code == 250 or (r.code is not None and 400 <= r.code < 500),
       "%s: the transaction completes (250) or gets 4xx: %s" % (label, r))
    if r.code == 250:
        ok(s.wait_count(1, 5) and split_added(s.messages()[0].content, m)[1] == m,
           "%s: 250, and the downstream has the message byte for byte" % label)
    else:
        # submitd's verdict line for the transaction: it is over, downstream too
        ok(d.wait_log(r"status=deferred \(%d " % r.code, 10), "%s: logged as deferred" % label)
        is_(s.count(), 0, "%s: 4xx, and the downstream has nothing" % label)
    nxt = c.reply(timeout=10)
    ok(nxt.code == 421, "%s: then 421 (%s)" % (label, nxt))
    c.close()
    try:
        st = d.proc.wait(15)
    except subprocess.TimeoutExpired:
        st = None
    is_(st, 0, "%s: the process exits by itself, status 0" % label)
    ok(d.sanitizer_report() is None, "%s: no sanitizer report" % label, d.sanitizer_report())
    d.proc = None


sigterm_during(0, "SIGTERM in DATA")
sigterm_during(2, "SIGTERM in DATA, slow downstream")
done()
