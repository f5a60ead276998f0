#!/usr/bin/env python3
"""Nothing hangs and the loop never blocks (docs/design.md invariants 1 and 9;
RFC 5321 §4.5.3.2, RFC 6409 §5.3):
- a downstream slower than relay_timeout after the final dot -> 451 4.4.2,
  while another session on the same worker is answered at once;
- a downstream that accepts the connection but never greets -> 451 4.4.1;
- a silent client -> 421 4.4.2 after command_timeout; a client stalling
  inside DATA -> 421 after data_timeout, nothing delivered; a session past
  session_timeout -> 421 even while it keeps talking."""
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

env = Env()
env.require_binary()
certs = env.certs()

# ------------------------------------------- slow downstream after the final dot
sink = env.sink("--delay-data", "4")
d = env.submitd(standard_config(certs, sink, extra=[("workers", "1"), ("relay_timeout", "1s")]),
                name="submitd-slowdown")
c = client(d, "plain", certs)
is_(c.cmd("MAIL FROM:<a@example.com>").code, 250, "slow downstream: MAIL 250")
is_(c.cmd("RCPT TO:<b@example.net>").code, 250, "slow downstream: RCPT 250")
is_(c.cmd("DATA").code, 354, "slow downstream: DATA 354")
c.send(stuff(make_message(subject="slow")))
t0 = time.time()
# Meanwhile the single worker must keep serving others (invariant 1).
c2 = client(d, "plain", certs)
t1 = time.time()
r2 = c2.cmd("NOOP")
el2 = time.time() - t1
is_(r2.code, 250, "another session on the same worker is served while one waits")
ok(el2 < 0.5, "... promptly (%.3fs)" % el2)
r = c.reply(timeout=10)
el = time.time() - t0
is_(r.code, 451, "downstream silent after the dot: 451 (%s)" % r)
like(str(r), r"^451 4\.4\.2", "... 4.4.2 (connection with the downstream lost)")
ok(el < 3.5, "... after relay_timeout, not after the downstream's delay (%.2fs)" % el)
is_(c.cmd("NOOP").code, 250, "the client's session goes on")
c.close()
c2.close()
d.stop()

# ------------------------------------------- own time excludes the waits
# The delivery line reports own=Nms: the time submitd's handlers spent on the
# message, without the downstream's (here 1 s) wait (docs/benchmarks.md).
sink = env.sink("--delay-data", "1")
d = env.submitd(standard_config(certs, sink), name="submitd-own")
c = client(d, "plain", certs)
out = c.send_message("a@example.com", ["b@example.net"], stuff(make_message(subject="own time")))
is_([x.code for x in out], [250, 250, 354, 250], "own time: delivered through a 1 s downstream")
ok(d.wait_log(r"own=\d+\.\d{3}ms", 3), "the delivery line reports submitd's own time")
m = re.search(r"own=(\d+\.\d{3})ms", d.log())
ok(m and float(m.group(1)) < 200, "... without the downstream's 1 s wait (%s ms)" % (m.group(1) if m else "?"))
c.close()
d.stop()

# ------------------------------------------- downstream that never greets
mute = socket.socket()
mute.bind(("127.0.0.1", 0))
mute.listen(16)
mport = mute.getsockname()[1]
d = env.submitd(standard_config(certs, None, extra=[("relayhost", "[127.0.0.1]:%d" % mport),
                                                    ("relay_timeout", "1s")]),
                name="submitd-mute")
c = client(d, "plain", certs)
c.cmd("MAIL FROM:<a@example.com>")
t0 = time.time()
r = c.cmd("RCPT TO:<b@example.net>", timeout=10)
el = time.time() - t0
like(str(r), r"^451 4\.4\.1", "downstream never greets: 451 4.4.1 at RCPT (%s)" % r)
ok(el < 3.5, "... within about relay_timeout (%.2fs)" % el)
c.close()
d.stop()
mute.close()

# ------------------------------------------- silent client, stalled DATA, session limit
sink = env.sink()
d = env.submitd(standard_config(certs, sink, extra=[("command_timeout", "1s"),
                                                    ("data_timeout", "1s"),
                                                    ("session_timeout", "3s")]),
                name="submitd-client-timeouts")
for mode in ("plain", "tls"):
    c = SMTP(*d.addr(mode), tls=(mode == "tls"), certs=certs)
    t0 = time.time()
    r = c.reply(timeout=5)
    el = time.time() - t0
    like(str(r), r"^421 4\.4\.2", "%s: silent client gets 421 4.4.2 (%s)" % (mode, r))
    ok(0.8 < el < 2.5, "%s: ... after command_timeout (%.2fs)" % (mode, el))
    ok(c.is_closed(), "%s: ... and the connection is closed" % mode)

c = client(d, "plain", certs)
c.cmd("MAIL FROM:<a@example.com>")
c.cmd("RCPT TO:<b@example.net>")
is_(c.cmd("DATA").code, 354, "stalled DATA: 354")
c.send(b"Subject: half a message\r\n\r\nand then nothing")
t0 = time.time()
r = c.reply(timeout=5)
el = time.time() - t0
like(str(r), r"^421 4\.4\.2", "client stalls inside DATA: 421 4.4.2 (%s)" % r)
ok(el < 2.5, "... after data_timeout (%.2fs)" % el)
ok(d.wait_idle(), "submitd logged the end of the session")
is_(sink.count(), 0, "stalled DATA: nothing delivered")

c = client(d, "plain", certs)
t0 = time.time()
codes = []
while time.time() - t0 < 6:
    r = c.cmd("NOOP", timeout=2)
    codes.append(r.code)
    if r.code != 250:
        break
    time.sleep(0.4)
el = time.time() - t0
is_(codes[-1], 421, "a session that keeps talking still ends at session_timeout")
ok(2.0 < el < 4.5, "... after about 3s (%.2fs)" % el)
ok("session time limit" in d.log(), "the log says why")
c.close()
d.stop()
done()
