#!/usr/bin/env python3
"""Downstream faults, named for what they are:

  - a downstream that stalls (SIGSTOP) behind a pooled connection holds the
    client for at most relay_timeout in total (no second relay_timeout on a
    fresh connection to the same stalled server, and no failover to the next
    destination once relay_timeout has passed);
  - a timeout after the final dot is answered and logged as a timeout, not
    as a lost connection;
  - a downstream 5xx for the message is logged status=refused (submitd sends
    no bounce; the client hears the 5xx);
  - a graceful stop logs what it waits for: the sessions in DATA and the
    oldest one's age; the message still ends with 250 or 4xx, never lost.
"""
import os
import re
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

env = Env()
env.require_binary()
certs = env.certs()
TIMEOUT = 2.0


def send(d, subject):
    c = client(d, "plain", certs)
    t0 = time.time()
    out = c.send_message("a@example.com", ["b@example.net"], stuff(make_message(subject=subject)))
    took = time.time() - t0
    c.close()
    return out, took


# ---- a stalled downstream behind a pooled connection
sink = env.sink()
d = env.submitd(standard_config(certs, sink, [("relay_timeout", "%gs" % TIMEOUT),
                                              ("relay_connect_timeout", "%gs" % TIMEOUT),
                                              ("relay_idle_timeout", "60s"),
                                              ("workers", "1")]))
out, _ = send(d, "first")
is_([r.code for r in out], [250, 250, 354, 250], "delivered while the downstream answers")
os.kill(sink.proc.pid, signal.SIGSTOP)
try:
    out, took = send(d, "stalled")
finally:
    os.kill(sink.proc.pid, signal.SIGCONT)
diag("stalled downstream: replies %s after %.2f s (relay_timeout %g s)"
     % ([r.code for r in out], took, TIMEOUT))
is_(out[1].code, 451, "a stalled downstream gives 451 (to RCPT: MAIL goes downstream with it)")
ok(took < TIMEOUT + 1.0, "the client waits at most relay_timeout in total (%.2f s)" % took)
like(str(out[1]), r"timeout", "the client hears that it was a timeout")
d.stop()

# ---- two stalled destinations: no failover once relay_timeout has passed
s1, s2 = env.sink(), env.sink()
d = env.submitd(standard_config(certs, None, [("relayhost", "%s, %s" % (s1.relayhost,
                                                                      s2.relayhost)),
                                              ("relay_timeout", "%gs" % TIMEOUT),
                                              ("relay_connect_timeout", "%gs" % TIMEOUT),
                                              ("workers", "1")]))
time.sleep(0.5)   # the start-up probe is done
for s in (s1, s2):
    os.kill(s.proc.pid, signal.SIGSTOP)
try:
    out, took = send(d, "two stalled")
finally:
    for s in (s1, s2):
        os.kill(s.proc.pid, signal.SIGCONT)
diag("two stalled destinations: replies %s after %.2f s" % ([r.code for r in out], took))
is_(out[1].code, 451, "two stalled destinations: 451")
ok(took < TIMEOUT + 1.0, "the client waits relay_timeout, not once per destination (%.2f s)" % took)
d.stop()

# ---- a timeout after the final dot; a 5xx for the message
slow = env.sink("--delay-data", "4")
d = env.submitd(standard_config(certs, slow, [("relay_timeout", "%gs" % TIMEOUT)]))
out, took = send(d, "slow dot")
is_(out[-1].code, 451, "no reply to the final dot within relay_timeout: 451")
like(str(out[-1]), r"4\.4\.2 .*timeout waiting for the downstream's reply to end of data",
     "the client hears a timeout after end of data")
ok(d.wait_log(r"status=deferred \(451 4\.4\.2 Error: timeout waiting", 5),
   "the delivery line says timeout")
unlike(d.log(), r"lost connection with downstream", "nothing claims a lost connection")
d.stop()

refuse = env.sink("--reject-data", "554", "5.7.1 No thanks")
d = env.submitd(standard_config(certs, refuse))
out, _ = send(d, "refused")
is_(out[-1].code, 554, "the downstream's 5xx is passed on")
ok(d.wait_log(r"status=refused \(554 5\.7\.1 No thanks\)", 5),
   "a downstream 5xx is logged status=refused")
unlike(d.log(), r"status=bounced", "and not status=bounced (no bounce is sent)")
d.stop()

# ---- a graceful stop logs the sessions in DATA it waits for
slow2 = env.sink("--delay-data", "3")
d = env.submitd(standard_config(certs, slow2, [("workers", "1")]))
res = {}


def sender():
    res["out"], res["took"] = send(d, "during stop")


th = threading.Thread(target=sender)
th.start()
ok(wait_for(lambda: slow2.log().count("< ") >= 4 and "354" in slow2.log(), 5), "DATA under way")
time.sleep(1.2)
p = d.proc
p.terminate()
th.join(20)
p.wait(20)
log = d.log()
like(log, r"worker 0: stopping, waiting for: 1 session in DATA \(oldest \S+, [12] s\), "
     r"0 others", "the stop names the session in DATA and its age")
is_(res.get("out", [None])[-1].code if res.get("out") else None, 250,
    "the message in DATA still ends with 250")
ok(slow2.wait_count(1, 5), "and it is in the sink")
d.proc = None
rep = d.sanitizer_report()
ok(rep is None, "no sanitizer report", rep)
done()
