#!/usr/bin/env python3
"""relay_data_timeout: one total deadline for the downstream DATA phase
(docs/design.md §7), on top of relay_timeout per step.

  - a downstream that reads the message a trickle at a time, each read well
    within relay_timeout (a fake, sink.py --slow-data: no real server reads
    slowly on demand), is cut off at relay_data_timeout: the client, held
    by the back-pressure meanwhile, can finish sending and its final dot is
    answered 451 4.4.2; nothing is acknowledged with 250, no final dot
    reaches the downstream, submitd closes that connection at once (a
    graceful stop right after is not held up by it), and the log names the
    deadline;
  - the session goes on after it;
  - the deadline belongs to one message: a downstream that keeps up
    delivers, also on a pooled connection reused after an earlier
    message's deadline would have passed.
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

env = Env()
env.require_binary()
certs = env.certs()
DEADLINE = 3.0

# ---- a downstream that reads 20 kB/s. 8 MB is more than the kernel's socket
# buffers hold on loopback, so submitd's back-pressure holds the client: the
# deadline falls during the content, not after the dot.
slow = env.sink("--slow-data", "20000")
d = env.submitd(standard_config(certs, slow, [("relay_data_timeout", "%gs" % DEADLINE),
                                              ("message_size_limit", "10m"),
                                              ("workers", "1")]))
body = (b"x" * 998 + b"\r\n") * 8000
c = client(d, "plain", certs)
t0 = time.time()
out = c.send_message("a@example.com", ["b@example.net"], stuff(make_message(subject="slow",
                                                                            body=body)))
took = time.time() - t0
diag("slow downstream: replies %s after %.2f s (relay_data_timeout %g s)"
     % ([r.code for r in out], took, DEADLINE))
is_([r.code for r in out], [250, 250, 354, 451], "the final dot is answered 451, not 250")
like(str(out[-1]), r"^451 4\.4\.2 .*timeout", "the client hears a timeout (4.4.2)")
ok(DEADLINE - 0.5 <= took < DEADLINE + 5, "at the deadline, not at the transfer's pace (%.2f s)"
   % took)
ok(d.wait_log(r"timeout \(relay_data_timeout\) during message content", 5),
   "the log names relay_data_timeout", "\n".join(l for l in d.log().splitlines() if "relay" in l))
ok(d.wait_log(r"status=deferred \(451 4\.4\.2", 5), "the delivery line says deferred")
is_(c.cmd("NOOP").code, 250, "the session goes on")
unlike(d.log(), r"status=sent", "nothing is logged as sent")
is_(slow.count(), 0, "nothing was stored downstream (no final dot reached it)")
c.close()
d.stop()

# ---- a downstream that keeps up: the deadline is per message
fast = env.sink()
d = env.submitd(standard_config(certs, fast, [("relay_data_timeout", "%gs" % DEADLINE),
                                              ("relay_idle_timeout", "60s"),
                                              ("workers", "1")]))
c = client(d, "plain", certs)
out = c.send_message("a@example.com", ["b@example.net"], stuff(make_message(subject="one")))
is_([r.code for r in out], [250, 250, 354, 250], "a message to a downstream that keeps up: 250")
time.sleep(DEADLINE + 0.5)
out = c.send_message("a@example.com", ["b@example.net"], stuff(make_message(subject="two",
                                                                            body=body[:2000000])))
is_([r.code for r in out], [250, 250, 354, 250],
    "the next one, past the first one's deadline, on the pooled connection: 250")
ok(fast.wait_count(2, 5), "both are in the sink")
c.close()
rep = d.sanitizer_report()
d.stop()
ok(rep is None, "no sanitizer report", rep)
done()
