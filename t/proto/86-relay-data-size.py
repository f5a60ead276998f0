#!/usr/bin/env python3
"""The relay's DATA and SIZE (issue 11 §6): a downstream that answers DATA
with 250 instead of 354 is a protocol error: the client gets 451 4.4.2, the
content never follows, and that connection is dropped (the next message
opens a new one). The SIZE= declared downstream is the size that will be
sent, the client's declared size plus what submitd adds (RFC 1870 §6)."""
import os
import re
import socketserver
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

env = Env()
env.require_binary()
certs = env.certs()


class OddDownstream(socketserver.ThreadingTCPServer):
    """Answers DATA with `data_reply`, everything else as a plain MTA would;
    records every line (connection number, line) and the connections that
    ended."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, data_reply):
        self.data_reply = data_reply
        self.conns = 0
        self.seen = []
        self.closed = []
        super().__init__(("127.0.0.1", 0), OddSession)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()


class OddSession(socketserver.StreamRequestHandler):
    timeout = 10

    def handle(self):
        srv = self.server
        srv.conns += 1
        n = srv.conns
        answers = [(b"EHLO", b"250-odd.test\r\n250-SIZE 100000000\r\n250 8BITMIME\r\n"),
                   (b"DATA", srv.data_reply), (b"QUIT", b"221 bye\r\n")]
        try:
            self.wfile.write(b"220 odd.test ESMTP\r\n")
            for raw in self.rfile:
                l = raw.rstrip(b"\r\n")
                srv.seen.append((n, l))
                reply = next((r for verb, r in answers if l.upper().startswith(verb)),
                             b"250 2.0.0 ok\r\n")
                self.wfile.write(reply)
                if l.upper().startswith(b"QUIT"):
                    break
        except OSError:
            pass
        srv.closed.append(n)


fake = OddDownstream(b"250 2.0.0 whatever\r\n")
d = env.submitd(standard_config(certs, None, [("relayhost", "[127.0.0.1]:%d" % fake.port),
                                              ("relay_timeout", "3s")]), name="data250")
c = client(d, "plain", certs)
out = c.send_message("a@example.com", ["b@example.net"], stuff(make_message(subject="data250")))
ok(len(out) == 3 and out[-1].code == 451 and out[-1].enhanced == "4.4.2",
   "downstream's 250 to DATA: the client gets 451 4.4.2", [str(x) for x in out])
data_conn = next((n for n, l in fake.seen if l.upper() == b"DATA"), None)
ok(data_conn is not None and wait_for(lambda: data_conn in fake.closed, 5),
   "that downstream connection is dropped")
ok(not any(l.startswith(b"Subject:") or l == b"." for _, l in fake.seen),
   "no content was sent downstream", fake.seen[-5:])
like(d.log(), r"protocol error: reply 250", "logged as a downstream protocol error")
is_(c.cmd("RSET").code, 250, "the client's session goes on")
out = c.send_message("a@example.com", ["b@example.net"], stuff(make_message(subject="again")))
ok(out[-1].code == 451, "a second message fails the same way", [str(x) for x in out])
data_conns = [n for n, l in fake.seen if l.upper() == b"DATA"]
ok(len(data_conns) == 2 and data_conns[0] != data_conns[1],
   "on a new downstream connection, not the dropped one (%s)" % data_conns)
c.close()
ok(d.running(), "submitd running")
d.stop()

# -- SIZE: the client's declared size plus what submitd adds.
sink = env.sink()
d = env.submitd(standard_config(certs, sink), name="size")
for mode in ("plain", "starttls"):
    sink.clear()
    c = client(d, mode, certs)
    msg = make_message(subject="size " + mode, date=False, msgid=False,
                       body=b"".join(b"line %d\r\n" % i for i in range(200)))
    r = c.cmd("MAIL FROM:<a@example.com> SIZE=%d" % len(msg))
    is_(r.code, 250, "%s: MAIL with SIZE=%d" % (mode, len(msg)))
    c.cmd("RCPT TO:<b@example.net>")
    is_(c.cmd("DATA").code, 354, "%s: DATA" % mode)
    c.send(stuff(msg))
    is_(c.reply(timeout=30).code, 250, "%s: delivered" % mode)
    c.close()
    ok(sink.wait_count(1), "%s: the downstream stored it" % mode)
    m = sink.messages()[0]
    mail = m.env.get("mail", "")
    g = re.search(r"(?i)\bSIZE=(\d+)", mail)
    ok(g is not None, "%s: SIZE= passed downstream (%s)" % (mode, mail))
    declared = int(g.group(1)) if g else 0
    sent = len(m.content)
    diag("%s: client declared %d, submitd sent %d octets, declared %d downstream"
         % (mode, len(msg), sent, declared))
    ok(sent > len(msg), "%s: submitd added header fields (Received:, Date:, Message-ID:)" % mode)
    ok(declared >= sent, "%s: the declared size covers what was sent (%d >= %d)"
       % (mode, declared, sent))
    ok(declared <= len(msg) + 1500, "%s: and stays close to it (%d <= %d + 1500)"
       % (mode, declared, len(msg)))
d.stop()
done()
