#!/usr/bin/env python3
"""The downstream side: relay refused to untrusted clients (invariant 10);
250 only after the downstream's 250 (invariant 2); downstream down -> 451
4.4.1 and recovery without restart (invariant 4); per-recipient rejects
passed through; downstream data rejects passed through; client gone
mid-DATA -> nothing delivered; LMTP over UNIX and TCP; failover."""
import os
import smtplib
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

env = Env()
env.require_binary()
certs = env.certs()

# ------------------------------------------------------------- relay refused
sink = env.sink()
p1, p2, p3 = free_port(), free_port(), free_port()
d = env.submitd([("myhostname", MYHOST),
                 ("listen", "127.0.0.1:%d starttls" % p1),         # not trusted
                 ("listen", "127.0.0.1:%d tls" % p2),              # not trusted
                 ("listen", "127.0.0.1:%d plain" % p3),            # not trusted
                 ("tls_cert_file", certs.fullchain), ("tls_key_file", certs.key),
                 ("mynetworks", "127.0.0.0/8, ::1/128"),
                 ("relayhost", sink.relayhost)], name="submitd-untrusted")
p4, p5, p6 = free_port(), free_port(), free_port()
d2 = env.submitd([("myhostname", MYHOST),
                  ("listen", "127.0.0.1:%d starttls trusted" % p4),
                  ("listen", "127.0.0.1:%d tls trusted" % p5),
                  ("listen", "127.0.0.1:%d plain trusted" % p6),
                  ("tls_cert_file", certs.fullchain), ("tls_key_file", certs.key),
                  ("mynetworks", "10.0.0.0/8"),                     # 127.0.0.1 is outside
                  ("relayhost", sink.relayhost)], name="submitd-foreign")
for dd, what in [(d, "untrusted listener"), (d2, "client outside mynetworks")]:
    for mode in ("starttls", "tls", "plain"):
        name = "%s/%s" % (what, mode)
        c = client(dd, mode, certs)
        r = c.cmd("MAIL FROM:<a@example.com>")
        ok(r.code == 530 and r.enhanced == "5.7.0", "%s: MAIL -> 530 5.7.0" % name, str(r))
        like(str(r), r"(?i)authentication required", "%s: 'Authentication required'" % name)
        r = c.cmd("RCPT TO:<victim@example.net>")
        is_(r.code, 503, "%s: RCPT refused: 503" % name)
        r = c.cmd("DATA")
        is_(r.code, 503, "%s: DATA refused: 503" % name)
        c.send(stuff(make_message(subject="relay attempt")))
        c.cmd("QUIT")
        c.close()
        # smtplib, the way a script would try
        try:
            with smtplib.SMTP(*dd.addr("plain"), timeout=10) as s:
                s.sendmail("a@example.com", ["victim@example.net"], make_message())
            ok(False, "%s: smtplib sendmail refused" % name)
        except smtplib.SMTPException as e:
            ok(True, "%s: smtplib sendmail refused (%s)" % (name, type(e).__name__))
ok(d.wait_idle() and d2.wait_idle(), "relay attempts: submitd logged the end of every session")
is_(sink.count(), 0, "relay attempts: downstream stored nothing")
unlike(sink.log(), r"< (MAIL|RCPT|DATA)", "relay attempts: no MAIL/RCPT/DATA reached the downstream")
like(d.log(), r"530", "log records the refusal")
d.stop()
d2.stop()

# ------------------------------------------------------------- downstream down, then up
dead = free_port()
conf = standard_config(certs, None, [("relayhost", "[127.0.0.1]:%d" % dead)])
d = env.submitd(conf, name="submitd-down")
c = client(d, "plain", certs)
r1 = c.cmd("MAIL FROM:<a@example.com>")
r2 = c.cmd("RCPT TO:<b@example.net>") if r1.code == 250 else None
fail = r1 if r1.code != 250 else r2
ok(fail is not None and fail.code == 451 and fail.enhanced == "4.4.1",
   "downstream down: 451 4.4.1 (at MAIL or RCPT)", "%s / %s" % (r1, r2))
r = c.cmd("DATA")
ok(r.code != 354, "downstream down: DATA not accepted", str(r))
is_(c.cmd("RSET").code, 250, "downstream down: RSET 250")
is_(c.cmd("NOOP").code, 250, "downstream down: session alive")
like(d.log(), r"(?i)deferred|refused|connect", "log mentions the downstream failure")
sink_late = env.sink(port=dead)
out = c.send_message("a@example.com", ["b@example.net"], stuff(make_message(subject="retry same session")))
is_([x.code for x in out], [250, 250, 354, 250], "downstream back: retry on the same session succeeds")
c.close()
c = client(d, "tls", certs)
out = c.send_message("a@example.com", ["b@example.net"], stuff(make_message(subject="retry new session")))
is_([x.code for x in out], [250, 250, 354, 250], "downstream back: a new session succeeds")
c.close()
is_(sink_late.count(), 2, "both retries stored, nothing else")
# downstream goes away again while submitd may hold pooled connections
sink_late.stop()
c = client(d, "plain", certs)
out = c.send_message("a@example.com", ["b@example.net"], stuff(make_message(subject="down again")))
ok(any(x.code == 451 for x in out) and out[-1].code != 250,
   "downstream gone again (stale pooled connection): 451, never 250", [str(x) for x in out])
c.close()
ok(d.running(), "submitd survived the downstream outages")
d.stop()

# ------------------------------------------------------------- downstream verdicts passed through
sink = env.sink("--reject-rcpt", "bad@example.net", "--reject-rcpt",
                "busy@example.net=452 4.2.2 <busy@example.net>: mailbox full")
d = env.submitd(standard_config(certs, sink), name="submitd-verdicts")
c = client(d, "starttls", certs)
is_(c.cmd("MAIL FROM:<a@example.com>").code, 250, "MAIL")
r_good1 = c.cmd("RCPT TO:<good1@example.net>")
r_bad = c.cmd("RCPT TO:<bad@example.net>")
r_busy = c.cmd("RCPT TO:<busy@example.net>")
r_good2 = c.cmd("RCPT TO:<good2@example.net>")
is_(r_good1.code, 250, "good recipient 1: 250")
ok(r_bad.code == 550 and r_bad.enhanced == "5.1.1", "downstream-rejected recipient: 550 5.1.1 passed through",
   str(r_bad))
ok(r_busy.code == 452 and r_busy.enhanced == "4.2.2", "downstream 452 4.2.2 passed through", str(r_busy))
is_(r_good2.code, 250, "good recipient 2: 250")
is_(c.cmd("DATA").code, 354, "DATA")
c.send(stuff(make_message(subject="partial rcpts")))
is_(c.reply(timeout=30).code, 250, "message accepted for the good recipients")
c.close()
ms = sink.messages()
ok(len(ms) == 1 and ms[0].rcpts == ["good1@example.net", "good2@example.net"],
   "downstream envelope holds only the accepted recipients", ms)
like(d.log(), r"reject: RCPT from \S*\[127\.0\.0\.1\].*550 5\.1\.1", "log: reject: RCPT ... 550 5.1.1")
d.stop()

for args, want_code, name in [(["--reject-data", "554", "5.7.1 Spam detected"], 554, "554 5.7.1"),
                              (["--reject-data", "451", "4.3.0 Try later"], 451, "451 4.3.0")]:
    sink = env.sink(*args)
    d = env.submitd(standard_config(certs, sink), name="submitd-data-%d" % want_code)
    c = client(d, "tls", certs)
    out = c.send_message("a@example.com", ["b@example.net"], stuff(make_message(subject="rejected data")))
    ok(out[-1].code == want_code and str(out[-1]).startswith("%d %s" % (want_code, name.split()[1])),
       "downstream data reject %s passed through at end of data" % name, str(out[-1]))
    c.close()
    is_(sink.count(), 0, "downstream %s: nothing stored" % name)
    d.stop()

# 250 only after the downstream's 250
sink = env.sink("--delay-data", "2")
d = env.submitd(standard_config(certs, sink), name="submitd-delay")
c = client(d, "plain", certs)
c.cmd("MAIL FROM:<a@example.com>")
c.cmd("RCPT TO:<b@example.net>")
c.cmd("DATA")
t0 = time.time()
c.send(stuff(make_message(subject="slow downstream")))
r = c.reply(timeout=30)
el = time.time() - t0
is_(r.code, 250, "slow downstream: 250")
ok(el >= 1.8, "250 only after the downstream answered (%.2fs >= 2s delay)" % el)
like(str(r), r"250 2\.\d\.\d", "end-of-data reply has an enhanced code")
c.close()
d.stop()

# ------------------------------------------------------------- client gone mid-DATA
sink = env.sink()
d = env.submitd(standard_config(certs, sink), name="submitd-abort")
for mode in ("plain", "tls"):
    c = client(d, mode, certs)
    c.cmd("MAIL FROM:<a@example.com>")
    c.cmd("RCPT TO:<b@example.net>")
    is_(c.cmd("DATA").code, 354, "%s: DATA 354" % mode)
    c.send(b"Subject: half\r\n\r\n" + b"partial line\r\n" * 5000 + b"no end")
    time.sleep(0.3)
    c.sock.close()
ok(wait_for(lambda: len(re.findall(r"abort: ", sink.log())) >= 2, 10),
   "client gone mid-DATA: downstream transactions aborted without the final dot", sink.log()[-2000:])
is_(sink.count(), 0, "client gone mid-DATA: nothing delivered")
# RSET and QUIT inside a transaction after recipients: nothing delivered
c = client(d, "plain", certs)
c.cmd("MAIL FROM:<a@example.com>")
c.cmd("RCPT TO:<b@example.net>")
is_(c.cmd("RSET").code, 250, "RSET with an open downstream transaction")
c.cmd("QUIT")
c.close()
ok(d.wait_idle(), "RSET: submitd logged the end of the session")
is_(sink.count(), 0, "RSET: nothing delivered")
c = client(d, "plain", certs)
out = c.send_message("a@example.com", ["b@example.net"], stuff(make_message(subject="after aborts")))
is_(out[-1].code, 250, "delivery works after aborted transactions (pooled connection reset)")
c.close()
ok(sink.wait_count(1, 5) and sink.count() == 1, "exactly that message stored")
d.stop()

# ------------------------------------------------------------- LMTP
for label, kw in [("LMTP over UNIX socket", dict(lmtp=True, unix=env.path("lmtp.sock"))),
                  ("LMTP over TCP", dict(lmtp=True))]:
    sink = env.sink(**kw)
    d = env.submitd(standard_config(certs, sink), name="submitd-lmtp")
    c = client(d, "tls", certs)
    msg = make_message(subject="lmtp")
    out = c.send_message("a@example.com", ["x@example.net", "y@example.net"], stuff(msg))
    is_([x.code for x in out], [250, 250, 250, 354, 250], "%s: delivered" % label)
    c.close()
    ms = sink.messages()
    if ok(len(ms) == 1, "%s: one message stored" % label):
        is_(ms[0].env["protocol"], "LMTP", "%s: spoken as LMTP (LHLO)" % label)
        is_(ms[0].rcpts, ["x@example.net", "y@example.net"], "%s: recipients" % label)
        _, rest = split_added(ms[0].content, msg)
        ok(rest == msg, "%s: content byte-exact" % label)
    d.stop()
    sink.stop()

# ------------------------------------------------------------- failover
sink = env.sink()
dead = free_port()
d = env.submitd(standard_config(certs, sink, [("relayhost", "[127.0.0.1]:%d, %s" % (dead, sink.relayhost))]),
                name="submitd-failover")
c = client(d, "plain", certs)
out = c.send_message("a@example.com", ["b@example.net"], stuff(make_message(subject="failover")))
is_([x.code for x in out], [250, 250, 354, 250], "failover: first relay dead, delivered via the second")
c.close()
is_(sink.count(), 1, "failover: stored by the second relay")
d.stop()

# ------------------------------------------------------------- downstream envelope is passed verbatim
sink = env.sink()
d = env.submitd(standard_config(certs, sink), name="submitd-envelope")
c = client(d, "plain", certs)
c.cmd("MAIL FROM:<Mixed.Case+tag@Example.COM> BODY=8BITMIME")
c.cmd("RCPT TO:<Rcpt.Case@Example.NET>")
c.cmd("DATA")
c.send(stuff(make_message(subject="env")))
c.reply(timeout=30)
c.close()
ms = sink.messages()
if ok(len(ms) == 1, "envelope test: delivered"):
    is_(ms[0].mail_from, "Mixed.Case+tag@Example.COM", "sender passed verbatim (case kept)")
    is_(ms[0].rcpts, ["Rcpt.Case@Example.NET"], "recipient passed verbatim (case kept)")
    like(ms[0].env["mail"], r"(?i)BODY=8BITMIME", "BODY=8BITMIME passed downstream")
# ------------------------------------------------------------- STARTTLS toward the downstream
for level, want_tls in [("may", True), ("none", False)]:
    sink = env.sink(starttls=True)
    d = env.submitd(standard_config(certs, sink, [("relay_tls_security_level", level)]),
                    name="submitd-relaytls-%s" % level)
    c = client(d, "plain", certs)
    msg = make_message(subject="relay tls %s" % level)
    out = c.send_message("a@example.com", ["b@example.net"], stuff(msg))
    is_(out[-1].code, 250, "relay_tls_security_level=%s: delivered" % level)
    c.close()
    ms = sink.messages()
    if ok(len(ms) == 1, "relay_tls_security_level=%s: stored" % level):
        is_(ms[0].env["tls"] is not None, want_tls,
            "relay_tls_security_level=%s: downstream STARTTLS %s" % (level, "used" if want_tls else "not used"))
        is_(ms[0].env["helo"], MYHOST, "relay EHLO names myhostname")
        _, rest = split_added(ms[0].content, msg)
        ok(rest == msg, "relay_tls_security_level=%s: content byte-exact" % level)
    is_(sink.violations(), [], "relay_tls_security_level=%s: downstream saw no protocol violation" % level)
    d.stop()
    sink.stop()
done()
