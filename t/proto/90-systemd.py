#!/usr/bin/env python3
"""Running under systemd: socket activation through systemd-socket-activate
(Debian's systemd) on both submission ports, with sockets matched by name
(name=submission) and by address; the sd_notify protocol read from a private
NOTIFY_SOCKET: READY=1 only when both listeners answer, STATUS= lines with
live counters, WATCHDOG=1 at half of WATCHDOG_USEC, RELOADING=1 (with
MONOTONIC_USEC) then READY=1 around a SIGHUP, STOPPING=1 on SIGTERM; then
privileges: with "user = nobody" the running process (every thread) has
nobody's IDs, no capability at all and no_new_privs, and still delivers.

sd_notify(3) and sd_listen_fds(3); docs/design.md §3 ("start as
root only to bind ports ... then drop to an unprivileged user")."""
import os
import re
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

ACTIVATE = "/usr/bin/systemd-socket-activate"

env, certs, sink = setup()


class Notify:
    """A private NOTIFY_SOCKET: every datagram, with its arrival time."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        os.chmod(path, 0o777)
        self.msgs = []   # (time, {var: value}, raw)

    def poll(self, wait=0.0):
        deadline = time.time() + wait
        while True:
            left = deadline - time.time()
            self.sock.settimeout(max(0.0, left) if left > 0 else 0.0)
            try:
                raw = self.sock.recv(65536)
            except (socket.timeout, BlockingIOError):
                return
            fields = {}
            for line in raw.decode("utf-8", "replace").split("\n"):
                if "=" in line:
                    k, v = line.split("=", 1)
                    fields[k] = v
            self.msgs.append((time.time(), fields, raw))

    def wait(self, var, value=None, timeout=10, after=0):
        """The first message (index >= after) that sets var (to value)."""
        deadline = time.time() + timeout
        while True:
            for i, (t, f, raw) in enumerate(self.msgs):
                if i >= after and var in f and (value is None or f[var] == value):
                    return i, t, f
            if time.time() >= deadline:
                return None
            self.poll(min(0.2, max(0.0, deadline - time.time())))

    def count(self):
        self.poll()
        return len(self.msgs)


def scan_sanitizer(text, name):
    rep = None
    for pat in SANITIZER_PATTERNS:
        m = re.search(pat, text)
        if m:
            rep = text[max(0, m.start() - 200):m.start() + 3000]
            break
    ok(rep is None, "%s: no sanitizer report in its log" % name, rep)


def read_log(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


# ================================================================ socket activation

if not os.access(ACTIVATE, os.X_OK):
    skip("socket activation", "systemd-socket-activate not installed")
else:
    p587, p465 = free_port(), free_port()
    notify = Notify(env.path("notify.sock"))
    conf = env.path("activated.conf")
    with open(conf, "w") as f:
        f.write("myhostname = %s\n" % MYHOST)
        # matched by FileDescriptorName ...
        f.write("listen = 127.0.0.1:%d starttls trusted name=submission\n" % p587)
        # ... and by address
        f.write("listen = 127.0.0.1:%d tls trusted\n" % p465)
        f.write("tls_cert_file = %s\ntls_key_file = %s\n" % (certs.fullchain, certs.key))
        f.write("relayhost = %s\nworkers = 2\nmynetworks = 127.0.0.0/8\n" % sink.relayhost)
    logfile = env.path("activated.log")
    logf = open(logfile, "ab")
    proc = spawn([ACTIVATE, "-l", "127.0.0.1:%d" % p587, "-l", "127.0.0.1:%d" % p465,
                  "--fdname=submission:submissions",
                  "-E", "NOTIFY_SOCKET=" + notify.path, "-E", "WATCHDOG_USEC=1000000",
                  env.binary, "-c", conf],
                 stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
    ok(wait_port("127.0.0.1", p587, 10, proc), "systemd-socket-activate listens on 587's stand-in")
    # systemd-socket-activate starts the service at the first connection,
    # which waits in the backlog of the socket it passes on.
    first = SMTP("127.0.0.1", p587)
    like(str(first.greeting), r"^220 ", "the connection that triggered activation is served")
    w = notify.wait("READY", "1", timeout=10)
    ok(w is not None, "READY=1 received", notify.msgs)
    ready_i = w[0] if w else 0
    # READY=1 means serving: right away, both listeners answer.
    c1 = SMTP("127.0.0.1", p587, timeout=5)
    like(str(c1.greeting), r"^220 mail\.test\.example", "after READY=1: the starttls socket greets")
    c1.ehlo()
    r = c1.starttls()
    is_(r.code, 220, "after READY=1: STARTTLS works on the activated socket")
    c1.ehlo()
    c2 = SMTP("127.0.0.1", p465, tls=True, certs=certs, timeout=5)
    like(str(c2.greeting), r"^220 ", "after READY=1: the implicit-TLS socket greets over TLS")
    log = read_log(logfile)
    like(log, r"listen 127\.0\.0\.1:%d: using 1 socket from systemd" % p587,
         "587: the socket named submission was taken (name=)")
    like(log, r"listen 127\.0\.0\.1:%d: using 1 socket from systemd" % p465,
         "465: the socket was taken by its address")
    like(log, r"warning: running as root", "running as root without user = is warned about")
    pid = proc.pid
    # The process listens on no socket of its own (only the inherited ones).
    own = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
    mine = [l for l in own.splitlines() if "pid=%d," % pid in l]
    ok(len(mine) == 2 and all((":%d " % p587) in l or (":%d " % p465) in l for l in mine),
       "only the two inherited sockets are listening", mine)

    # A delivery, then the counters in STATUS=.
    msg = make_message(subject="activated")
    out = c1.send_message("a@example.com", ["b@example.net"], stuff(msg))
    is_([x.code for x in out], [250, 250, 354, 250], "a message through the activated socket")
    c1.cmd("QUIT")
    c1.close()
    c2.close()
    first.close()
    w = notify.wait("STATUS", timeout=12, after=ready_i)
    ok(w is not None and re.search(r"\d+ sessions", w[2]["STATUS"]), "STATUS= line with sessions",
       w and w[2])
    w = None
    deadline = time.time() + 12
    while time.time() < deadline:
        notify.poll(0.5)
        s = [f["STATUS"] for _, f, _ in notify.msgs if "STATUS" in f]
        if s and re.search(r"\b1 messages sent", s[-1]):
            w = s[-1]
            break
    ok(w is not None, "STATUS= counts the message sent", [f.get("STATUS") for _, f, _ in
                                                         notify.msgs if "STATUS" in f][-3:])
    # The watchdog: WATCHDOG_USEC=1 s, keep-alives every 0.5 s.
    notify.poll(0.1)
    n0 = sum(1 for _, f, _ in notify.msgs if f.get("WATCHDOG") == "1")
    notify.poll(2.2)
    n1 = sum(1 for _, f, _ in notify.msgs if f.get("WATCHDOG") == "1")
    ok(3 <= n1 - n0 <= 6, "WATCHDOG=1 about twice per WATCHDOG_USEC (%d in 2.2 s)" % (n1 - n0))

    # Reload: RELOADING=1 with MONOTONIC_USEC, then READY=1.
    mark = notify.count()
    os.kill(pid, signal.SIGHUP)
    w = notify.wait("RELOADING", "1", timeout=10, after=mark)
    ok(w is not None, "SIGHUP: RELOADING=1", notify.msgs[mark:])
    if w:
        ok(re.fullmatch(r"\d+", w[2].get("MONOTONIC_USEC", "")) and
           abs(int(w[2]["MONOTONIC_USEC"]) / 1e6 - time.monotonic()) < 30,
           "RELOADING=1 carries MONOTONIC_USEC (CLOCK_MONOTONIC)", w[2])
        r2 = notify.wait("READY", "1", timeout=10, after=w[0] + 1)
        ok(r2 is not None, "then READY=1", notify.msgs[mark:])
    c3 = SMTP("127.0.0.1", p587, timeout=5)
    like(str(c3.greeting), r"^220 ", "serving after the reload")
    c3.close()

    # SIGTERM: STOPPING=1, exit 0.
    mark = notify.count()
    os.kill(pid, signal.SIGTERM)
    w = notify.wait("STOPPING", "1", timeout=10, after=mark)
    ok(w is not None, "SIGTERM: STOPPING=1", notify.msgs[mark:])
    try:
        st = proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        st = "killed"
    is_(st, 0, "stopped with status 0")
    scan_sanitizer(read_log(logfile), "activated submitd")

    # A listen line whose name= matches no socket is refused with a reason.
    conf2 = env.path("badname.conf")
    with open(conf2, "w") as f:
        f.write(open(conf).read().replace("name=submission", "name=nosuch"))
    p3 = free_port()
    # systemd-socket-activate waits for a connection before starting the
    # service: trigger it and read what submitd said.
    logf2 = open(env.path("badname.log"), "ab")
    proc2 = spawn([ACTIVATE, "-l", "127.0.0.1:%d" % p3, "--fdname=submission", env.binary,
                   "-c", conf2], stdin=subprocess.DEVNULL, stdout=logf2, stderr=logf2)
    wait_port("127.0.0.1", p3, 10, proc2)
    try:
        s = socket.create_connection(("127.0.0.1", p3), 5)
        s.close()
    except OSError:
        pass
    try:
        st2 = proc2.wait(10)
    except subprocess.TimeoutExpired:
        proc2.kill()
        st2 = "still running"
    ok(st2 not in (0, "still running"), "a name= without a socket of that name: exit non-zero")
    like(read_log(env.path("badname.log")), r"name=nosuch: systemd passed no socket named",
         "... saying which name is missing")

    # The example configuration's pair of lines (0.0.0.0:587 and [::]:587)
    # under a socket unit with ListenStream=587 (one dual-stack [::]:587).
    p4 = free_port()
    conf4 = env.path("dualstack.conf")
    with open(conf4, "w") as f:
        f.write("myhostname = %s\nlisten = 0.0.0.0:%d starttls\nlisten = [::]:%d starttls\n"
                "tls_cert_file = %s\ntls_key_file = %s\nrelayhost = %s\nworkers = 2\n"
                % (MYHOST, p4, p4, certs.fullchain, certs.key, sink.relayhost))
    logf4 = open(env.path("dualstack.log"), "ab")
    proc4 = spawn([ACTIVATE, "-l", str(p4), env.binary, "-c", conf4],
                  stdin=subprocess.DEVNULL, stdout=logf4, stderr=logf4)
    wait_port("127.0.0.1", p4, 10, proc4)
    c4 = SMTP("127.0.0.1", p4, timeout=10)
    c6 = SMTP("::1", p4, timeout=10)
    ok(c4.greeting.code == 220 and c6.greeting.code == 220,
       "ListenStream=587 (dual-stack) serves both 0.0.0.0:587 and [::]:587 lines")
    like(read_log(env.path("dualstack.log")), r"served by the systemd socket \d+ on the same port",
         "... the second line is served by the same socket, not bound again")
    c4.close()
    c6.close()
    proc4.terminate()
    try:
        is_(proc4.wait(10), 0, "... and stops cleanly")
    except subprocess.TimeoutExpired:
        proc4.kill()
        ok(False, "... and stops cleanly")
    scan_sanitizer(read_log(env.path("dualstack.log")), "dual-stack submitd")

# ================================================================ privileges

# Files the unprivileged process reads on reload must be readable by it; the
# test's temp dir is private to root, so open it up (test keys only).
env.open_up()

d = env.submitd(standard_config(certs, sink, [("user", "nobody")]))
pid = d.proc.pid
# The ports answer (kernel backlog) as soon as they are bound, before the
# drop: wait until submitd says it is ready.
ok(d.wait_log(r"submitd \S+ ready", 10), "ready with user = nobody", d.log())
status = open("/proc/%d/status" % pid).read()


def field(name, text=status):
    m = re.search(r"^%s:[ \t]*(.*)$" % name, text, re.M)
    return m.group(1).split() if m else None


pw_uid, pw_gid = 65534, 65534
is_(field("Uid"), [str(pw_uid)] * 4, "Uid: real, effective, saved, fs are nobody's")
is_(field("Gid"), [str(pw_gid)] * 4, "Gid: real, effective, saved, fs are nobody's group")
ok(field("Groups") in ([], [str(pw_gid)]), "no supplementary group of root's kept", field("Groups"))
for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
    is_(field(cap), ["0000000000000000"], "%s: no capability" % cap)
is_(field("NoNewPrivs"), ["1"], "no_new_privs set")
tasks = os.listdir("/proc/%d/task" % pid)
bad = []
for t in tasks:
    ts = open("/proc/%d/task/%s/status" % (pid, t)).read()
    if field("Uid", ts) != [str(pw_uid)] * 4 or field("CapEff", ts) != ["0000000000000000"]:
        bad.append(t)
ok(len(tasks) >= 3 and not bad, "every thread (%d) runs as nobody without capabilities" % len(tasks),
   bad)
unlike(d.log(), r"running as root", "no root warning with user = nobody")
c = client(d, "starttls", certs)
out = c.send_message("a@example.com", ["b@example.net"], stuff(make_message(subject="as nobody")))
is_([x.code for x in out], [250, 250, 354, 250], "delivers after dropping privileges")
c.close()
# SIGHUP as nobody: the configuration and keys are readable here, so the
# reload works (a key readable only by root would be refused, old kept).
os.kill(pid, signal.SIGHUP)
ok(d.wait_log(r"configuration reloaded", 10), "reload works after the privilege drop")
d.stop()

# user = a name that does not exist: refused by -t and at start.
conf = env.path("nouser.conf")
with open(conf, "w") as f:
    for k, v in standard_config(certs, sink, [("user", "no-such-user-xyz")]):
        f.write("%s = %s\n" % (k, v))
r = subprocess.run([env.binary, "-c", conf, "-t"], capture_output=True, text=True)
ok(r.returncode != 0 and "user no-such-user-xyz does not exist" in r.stderr,
   "-t: an unknown user is refused", r.stderr)

# The unit gives the documented control_socket (README) its directory.
with open(os.path.join(TOP, "systemd", "submitd.service.in")) as f:
    unit = dict(l.strip().split("=", 1) for l in f if re.match(r"^[A-Za-z]+=", l))
with open(os.path.join(TOP, "README.md")) as f:
    m = re.search(r"control_socket = (/run/\S+?)`", f.read())
ok(unit.get("RuntimeDirectory") == "submitd" and unit.get("RuntimeDirectoryMode") == "0700",
   "submitd.service: RuntimeDirectory=submitd, mode 0700", unit)
ok(m and os.path.dirname(m.group(1)) == "/run/" + unit.get("RuntimeDirectory", "?"),
   "README's control_socket lies in that directory", m and m.group(1))
done()
