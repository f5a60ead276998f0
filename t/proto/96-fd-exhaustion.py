#!/usr/bin/env python3
"""Running out of file descriptors (RLIMIT_NOFILE 256, hard, so submitd cannot
raise it) with 400 idle connections opened gradually:

  - start-up warns with numbers that max_connections does not fit the limit;
  - while descriptors are short, submitd pauses accepting instead of spinning:
    little CPU, a few log lines per episode (not one per failed accept), and a
    session opened before keeps being answered;
  - once the idle connections are gone, new clients are greeted and mail is
    delivered again, and the end of the episode is logged with its length;
  - SIGTERM while descriptors are short ends the process promptly.
"""
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

LIMIT = 256
IDLE = 400

env = Env()
env.require_binary()
raise_nofile(4096)
certs = env.certs()
sink = env.sink()

# A wrapper that lowers both limits, so submitd cannot raise the soft one.
wrapper = env.path("limited-submitd")
with open(wrapper, "w") as f:
    f.write("#!/bin/sh\nulimit -Sn %d && ulimit -Hn %d || exit 111\nexec \"$SUBMITD_REAL\" \"$@\"\n"
            % (LIMIT, LIMIT))
os.chmod(wrapper, 0o755)
os.environ["SUBMITD_REAL"] = os.path.abspath(env.binary)
env.binary = wrapper

d = env.submitd(standard_config(certs, sink, [("max_connections", "1000"),
                                              ("max_connections_per_ip", "1000")]))
pid = d.proc.pid

like(d.log(), r"max_connections 1000 needs about \d+ file descriptors .* the limit is 256 "
     r"\(hard limit 256\): about \d+ sessions fit", "start-up warns that max_connections does "
     "not fit the descriptor limit, with numbers")


def cpu_seconds():
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def deliver(tag):
    c = client(d, "plain", certs)
    out = c.send_message("a@example.com", ["b@example.net"], stuff(make_message(subject=tag)))
    c.close()
    return [r.code for r in out]


is_(deliver("before"), [250, 250, 354, 250], "a message is delivered before the shortage")

early = client(d, "plain", certs)   # opened before the shortage; must stay served

host, port = d.addr("plain")
idle = []
for i in range(IDLE):
    s = socket.create_connection((host, port), timeout=5)
    idle.append(s)
    if i % 20 == 19:
        time.sleep(0.05)
ok(d.wait_log(r"pausing new connections", 10), "the shortage is noticed and logged")
log_before = len(d.log())
cpu0 = cpu_seconds()
time.sleep(3)
cpu = cpu_seconds() - cpu0
growth = len(d.log()) - log_before
diag("during the shortage: %.2f s CPU in 3 s, log grew by %d bytes" % (cpu, growth))
ok(cpu < 0.6, "submitd does not spin while descriptors are short (%.2f s CPU in 3 s)" % cpu)
ok(growth < 20000, "the log does not flood (%d bytes in 3 s)" % growth)
pauses = len(re.findall(r"pausing new connections", d.log()))
ok(pauses <= 12, "one line per listener and worker per episode, not per accept (%d)" % pauses)
r = early.cmd("NOOP")
is_(r.code, 250, "a session opened before the shortage is still answered")
like(d.log(), r"worker \d: accept on [\d.]+:%d: Too many open files; pausing new connections "
     r"\(sessions open: \d+ here, \d+ in all; descriptor limit 256\)" % port,
     "the line gives the counts")

for s in idle:
    s.close()
idle = []
t0 = time.time()
codes = None
for attempt in range(40):
    try:
        codes = deliver("after")
        break
    except Exception:  # noqa: BLE001
        time.sleep(0.25)
recovery = time.time() - t0
is_(codes, [250, 250, 354, 250], "mail is delivered again after the idle connections closed")
diag("recovery after the idle connections closed: %.2f s" % recovery)
ok(recovery < 5, "recovered within 5 s (%.2f s)" % recovery)
ok(d.wait_log(r"accepting on \S+ again after [\d.]+ s \(\d+ attempts failed\)", 5),
   "the end of the episode is logged with its length")
ok(sink.wait_count(2, 10), "both messages reached the sink")
r = early.cmd("NOOP")
is_(r.code, 250, "the early session is still served after the episode")
early.close()

# Short again, then SIGTERM: the process ends promptly.
for i in range(IDLE):
    idle.append(socket.create_connection((host, port), timeout=5))
ok(d.wait_log(r"(pausing new connections[\s\S]*){%d}" % (pauses + 1), 10),
   "a second shortage is noticed")
p = d.proc
t0 = time.time()
p.terminate()
try:
    st = p.wait(15)
except Exception:  # noqa: BLE001
    p.kill()
    st = p.wait()
took = time.time() - t0
diag("SIGTERM during the shortage: exit status %s after %.2f s" % (st, took))
ok(st == 0 and took < 10, "SIGTERM during a shortage ends submitd cleanly (status %s, %.1f s)"
   % (st, took), d.log()[-2000:])
like(d.log(), r"SIGTERM received, stopping", "the stop is logged")
rep = d.sanitizer_report()
ok(rep is None, "no sanitizer report", rep)
d.proc = None
for s in idle:
    s.close()
done()
