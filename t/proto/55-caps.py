#!/usr/bin/env python3
"""What submitd offers never exceeds what the downstream path supports
(docs/design.md §7; RFC 6152 §3: no 8-bit data to a server
without 8BITMIME; RFC 1870: SIZE is the smaller of the two limits). submitd
learns the downstream's capabilities from a probe at start."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

env = Env()
env.require_binary()
certs = env.certs()


def ehlo_keywords(d):
    c = client(d, "plain", certs)
    r = c.ehlo()
    c.close()
    return {l[4:].split()[0].upper(): l[4:] for l in r.lines[1:]}, r


# A full-featured downstream: everything is offered, SIZE is ours.
sink = env.sink()
d = env.submitd(standard_config(certs, sink, extra=[("message_size_limit", "30000000")]),
                name="submitd-full")
time.sleep(0.5)  # the start-up probe
kw, r = ehlo_keywords(d)
for k in ("8BITMIME", "SMTPUTF8", "DSN", "PIPELINING", "CHUNKING", "ENHANCEDSTATUSCODES"):
    ok(k in kw, "full downstream: %s offered" % k)
is_(kw.get("SIZE"), "SIZE 30000000", "full downstream (no SIZE limit): our message_size_limit")
d.stop()

# A poorer downstream: no 8BITMIME, no SMTPUTF8, no DSN, a smaller SIZE.
sink = env.sink("--without", "8BITMIME", "--without", "SMTPUTF8", "--without", "DSN",
                "--size", "1000000")
d = env.submitd(standard_config(certs, sink, extra=[("message_size_limit", "30000000")]),
                name="submitd-poor")
ok(wait_for(lambda: "EHLO" in d.log() or sink.log().count("EHLO") > 0, 5), "the start-up probe ran")
time.sleep(0.5)
kw, r = ehlo_keywords(d)
for k in ("8BITMIME", "SMTPUTF8", "DSN"):
    ok(k not in kw, "poor downstream: %s not offered (%s)" % (k, " ".join(kw)))
is_(kw.get("SIZE"), "SIZE 1000000", "poor downstream: SIZE is the smaller limit")
c = client(d, "plain", certs)
r = c.cmd("MAIL FROM:<a@example.com> BODY=8BITMIME")
is_(r.code, 555, "BODY=8BITMIME refused when not offered (%s)" % r)
r = c.cmd("MAIL FROM:<a@example.com> SMTPUTF8")
is_(r.code, 555, "SMTPUTF8 refused when not offered (%s)" % r)
r = c.cmd("MAIL FROM:<a@example.com> SIZE=2000000")
like(str(r), r"^552 5\.3\.4", "SIZE above the downstream's limit: 552 5.3.4 at MAIL")
r = c.cmd("MAIL FROM:<a@example.com> RET=HDRS")
is_(r.code, 555, "DSN's RET= refused when DSN is not offered (%s)" % r)
c.close()
d.stop()
done()
