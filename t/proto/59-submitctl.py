#!/usr/bin/env python3
"""submitctl and the control socket (issue 14; src/control.h, man/submitctl.8):

  - the socket is 0600 and root's; a non-root user (nobody, through
    setpriv) is refused by the file mode, and also by the peer-credential
    check when the mode is opened up;
  - every verb, in human output and in JSON: status, sessions, held,
    limits LOGIN, hold LOGIN [REASON], release LOGIN, block ADDRESS,
    unblock ADDRESS, kick LOGIN, and what each does to sessions (a held
    login's open session ends, AUTH 235 and MAIL 554 5.7.1 after; a blocked
    address's sessions end; a kicked login's session ends and it may come
    back); errors exit 1 with a message;
  - hostile input on the socket: an over-long line, a NUL, a line that
    never ends, a client that sends a byte at a time, one that sends
    nothing, more clients than allowed; submitd answers the next client
    and keeps serving mail;
  - a second instance with the same control_socket does not start (the
    error names the path) and leaves the first's socket alone; a regular
    file or a symlink at the path is never removed; a stale socket (no
    one listening) is replaced.
"""
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import harness  # noqa: E402
from harness import *  # noqa: E402,F401,F403

env = Env()
env.require_binary()
os.chmod(env.dir, 0o711)
certs = env.certs()
SUBMITCTL = os.path.join(os.path.dirname(env.binary), "submitctl")
if not os.access(SUBMITCTL, os.X_OK):
    skip_all("submitctl not built next to %s" % env.binary)
# a copy nobody can run (the build tree may not be readable for it)
ctl_copy = env.path("submitctl")
shutil.copy(SUBMITCTL, ctl_copy)
os.chmod(ctl_copy, 0o755)

PW = {"alice@example.com": "alice-secret", "bob@example.com": "bob-secret"}
dv = private_dovecot(env, "passwd-file", users={k: (v, "SSHA256", "") for k, v in PW.items()},
                     failure_delay="0")
sink = env.sink()
sock = env.path("control.sock")
d = env.submitd([("myhostname", MYHOST),
                 ("listen", "127.0.0.1:%d tls" % free_port()),
                 ("tls_cert_file", certs.fullchain), ("tls_key_file", certs.key),
                 ("relayhost", sink.relayhost),
                 ("dovecot_auth_socket", dv.socket),
                 ("workers", "2"),
                 ("login_message_limit", "10/1h, 50/1d"),
                 ("control_socket", sock)], name="submitd")
wait_for(lambda: d.log().count("connected, mechanisms") >= 2, 10)


def ctl(*args, as_nobody=False):
    argv = [ctl_copy, "-s", sock] + list(args)
    if as_nobody:
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + argv
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


def jctl(*args):
    st, out, err = ctl("--json", *args)
    try:
        return st, json.loads(out), err
    except ValueError:
        return st, None, err + " / stdout: " + out


def login(user, source=None):
    c = client_from(source, d, "tls", certs) if source else client(d, "tls", certs)
    r = c.cmd("AUTH PLAIN " + b64("\0%s\0%s" % (user, PW[user])))
    if r.code != 235:
        raise AssertionError("AUTH %s: %s" % (user, r))
    return c


def send_one(c, frm):
    r = c.cmd("MAIL FROM:<%s>" % frm)
    if r.code != 250:
        return r
    c.cmd("RCPT TO:<x@example.net>")
    c.cmd("DATA")
    c.send(stuff(make_message(subject="ctl")))
    return c.reply()


# ------------------------------------------------------------ the socket and who may use it
stt = os.lstat(sock)
ok(stat.S_ISSOCK(stt.st_mode) and stat.S_IMODE(stt.st_mode) == 0o600 and stt.st_uid == 0,
   "the control socket is root's, mode 0600", oct(stt.st_mode))
st, out, err = ctl("status", as_nobody=True)
ok(st == 1 and "Permission denied" in err and "root only" in err, "nobody: refused by the file mode", err)
os.chmod(sock, 0o666)
st, out, err = ctl("status", as_nobody=True)
ok(st == 1 and out == "", "nobody through an opened-up mode: refused by the peer check", err)
ok(d.wait_log(r"control: refused a client with uid 65534", 5), "the refusal is logged")
os.chmod(sock, 0o600)

# ------------------------------------------------------------ status, sessions, limits
a = login("alice@example.com")
is_(send_one(a, "alice@example.com").code, 250, "alice sends one")
b = login("bob@example.com")
st, out, err = ctl("status")
ok(st == 0 and "sessions: 2" in out and "held logins: 0" in out and "limit store: memory" in out,
   "status (human)", out + err)
st, js, err = jctl("status")
ok(st == 0 and js and js["sessions"] == 2 and js["held"] == 0 and js["store"] == "memory",
   "status --json", repr(js) + err)
st, out, err = ctl("sessions")
ok(st == 0 and "login=alice@example.com" in out and "login=bob@example.com" in out and
   "client=[127.0.0.1]" in out, "sessions (human)", out + err)
st, js, err = jctl("sessions")
ok(st == 0 and isinstance(js, list) and sorted(s["login"] for s in js) == ["alice@example.com", "bob@example.com"],
   "sessions --json", repr(js) + err)
st, out, err = ctl("limits", "Alice@Example.com")
ok(st == 0 and "login alice@example.com: not held" in out and
   "login_message_limit 10/3600s: used 1" in out and "login_message_limit 50/86400s: used 1" in out,
   "limits LOGIN (human, case-folded)", out + err)
st, js, err = jctl("limits", "alice@example.com")
ok(st == 0 and js and js["held"] is False and
   {(x["limit"], x["count"], x["used"]) for x in js["limits"]} >= {("login_message_limit", 10, 1)},
   "limits --json", repr(js) + err)

# ------------------------------------------------------------ hold, held, release
st, out, err = ctl("hold", "alice@example.com", "password", "seen", "on", "a", "paste", "site")
ok(st == 0 and "held" in out, "hold LOGIN REASON", out + err)
like(d.log(), r"hold: client=\[-\] login=<alice@example\.com> reason=manual until=released: password seen on a paste site",
     "the manual hold's log line")
r = a.cmd("NOOP")
ok(r.code == 421 and r.enhanced == "4.7.1", "alice's open session ends at its next command", str(r))
a.close()
a = login("alice@example.com")
r = a.cmd("MAIL FROM:<alice@example.com>")
ok(r.code == 554 and r.enhanced == "5.7.1", "held: AUTH 235, then MAIL 554 5.7.1", str(r))
st, out, err = ctl("hold", "alice@example.com")
ok(st == 1 and "held already" in err, "hold twice: an error, exit 1", err)
st, out, err = ctl("held")
ok(st == 0 and out.startswith("alice@example.com reason=manual client=[-]") and "paste site" in out,
   "held (human)", out)
st, js, err = jctl("held")
ok(st == 0 and js and js[0]["login"] == "alice@example.com" and js[0]["reason"] == "manual" and
   js[0]["until"] is None and js[0]["client"] is None, "held --json", repr(js))
st, js, err = jctl("limits", "alice@example.com")
ok(js and js["held"] is True, "limits --json shows the hold")
st, out, err = ctl("release", "alice@example.com")
ok(st == 0 and "released" in out, "release", out + err)
r = send_one(a, "alice@example.com")
is_(r.code, 250, "released: the same session sends again")
st, out, err = ctl("release", "alice@example.com")
ok(st == 1 and "not held" in err, "release twice: an error", err)
a.close()
st, js, err = jctl("hold", "bob@example.com")
ok(st == 0 and js == {"login": "bob@example.com", "result": "held"}, "hold --json", repr(js))
st, js, err = jctl("release", "bob@example.com")
ok(st == 0 and js == {"login": "bob@example.com", "result": "released"}, "release --json", repr(js))
b.close()
b = login("bob@example.com")

# ------------------------------------------------------------ kick
st, out, err = ctl("kick", "bob@example.com")
ok(st == 0 and out.startswith("1 session of bob@example.com"), "kick (human)", out + err)
r = b.cmd("NOOP")
ok(r.code == 421 and r.enhanced == "4.7.1", "the kicked session ends at its next command", str(r))
b.close()
b = login("bob@example.com")
is_(send_one(b, "bob@example.com").code, 250, "a kicked login may log in again and send")
st, js, err = jctl("kick", "nobody@example.com")
ok(st == 0 and js == {"login": "nobody@example.com", "sessions": 0}, "kick --json", repr(js))
b.close()

# ------------------------------------------------------------ block, unblock
c2 = client_from("127.0.0.2", d, "tls", certs)
st, out, err = ctl("block", "127.0.0.2", "scanner")
ok(st == 0 and "blocked" in out, "block ADDRESS REASON", out + err)
r = c2.cmd("NOOP")
ok(r.code == 421 and r.enhanced == "4.7.1", "an open session from the address ends", str(r))
c2.close()
c3 = SMTPFrom("127.0.0.2", *d.addr("tls"), tls=True, certs=certs)
r = c3.cmd("EHLO x")
is_(r.code, 421, "a new session from the address ends at its first command")
c3.close()
c4 = client(d, "tls", certs)
is_(c4.cmd("NOOP").code, 250, "another address is not blocked")
st, out, err = ctl("status")
ok("blocked addresses: 1" in out and "blocked [127.0.0.2]" in out, "status lists the block", out)
st, js, err = jctl("status")
ok(js and js["blocked_addresses"][0]["address"] == "127.0.0.2", "status --json lists it", repr(js))
st, out, err = ctl("block", "127.0.0.2")
ok(st == 1 and "blocked already" in err, "block twice: an error", err)
for bad in ("not-an-address", "127.0.0.256", "1.2.3.4/8"):
    st, out, err = ctl("block", bad)
    ok(st == 1 and "not an IPv4 or IPv6 address" in err, "block %s: refused" % bad, err)
st, js, err = jctl("unblock", "127.0.0.2")
ok(st == 0 and js == {"address": "127.0.0.2", "result": "unblocked"}, "unblock --json", repr(js))
c5 = client_from("127.0.0.2", d, "tls", certs)
is_(c5.cmd("NOOP").code, 250, "unblocked: the address may talk again")
c5.close()
st, out, err = ctl("unblock", "127.0.0.2")
ok(st == 1 and "not blocked" in err, "unblock twice: an error", err)
st, js, err = jctl("block", "::ffff:192.0.2.1")
ok(st == 0 and js["address"] == "::ffff:192.0.2.1", "an IPv6 address", repr(js))
st, out, err = ctl("unblock", "::FFFF:192.0.2.1")
ok(st == 0, "unblock with another spelling of the same address", err)

# ------------------------------------------------------------ errors
for args, want in ((["frobnicate"], "unknown verb"), (["limits"], "wrong number"),
                   (["status", "x"], "wrong number"), (["kick", "a", "b"], "wrong number"),
                   (["hold", "x" * 300], "bad argument"), (["hold", "a", "r" * 300], "reason longer")):
    st, out, err = ctl(*args)
    ok(st == 1 and want in err, "submitctl %s: %s" % (" ".join(args)[:40], want), err)
st, out, err = ctl()
is_(st, 2, "submitctl without a verb: usage, exit 2")


# ------------------------------------------------------------ hostile input
def raw(data, pause=0.0, read_timeout=10):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(read_timeout)
    s.connect(sock)
    try:
        for chunk in data:
            s.sendall(chunk)
            if pause:
                time.sleep(pause)
    except OSError:
        pass
    out = b""
    try:
        while True:
            x = s.recv(65536)
            if not x:
                break
            out += x
    except OSError:
        pass
    s.close()
    return out


out = raw([b"x" * 5000])
ok(out.startswith(b"error: request longer than 1024 bytes"), "an over-long line: refused", repr(out[:80]))
out = raw([b"sta\0tus\n"])
ok(out.startswith(b"error: request holds a NUL"), "a NUL: refused", repr(out[:80]))
out = raw([b"status\r\n"])
ok(out.startswith(b"ok\n"), "CRLF is taken", repr(out[:40]))
out = raw([bytes([c]) for c in b"status\n"], pause=0.05)
ok(out.startswith(b"ok\n") and b"sessions:" in out, "a byte at a time: answered", repr(out[:40]))
out = raw([b"stat\x1bus\n"])
ok(out.startswith(b"error: request holds a control"), "an escape byte: refused", repr(out[:60]))
# a line that never ends: a byte every 100 ms, forever — cut off at the time limit
t0 = time.time()
out = raw([b"s"] * 100, pause=0.1)
el = time.time() - t0
ok(out.startswith(b"error: no complete request within 5000 ms") and el < 11,
   "a line that never ends: cut off after 5 s (%.1f s)" % el, repr(out[:80]))
# idle clients fill the slots; past 16 a client is closed at once; the
# status of a 17th waits for nothing
idle = []
for i in range(20):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock)
    idle.append(s)
time.sleep(0.3)
extra = idle[-1]
extra.settimeout(3)
try:
    got = extra.recv(100)
except OSError:
    got = b"(timeout)"
is_(got, b"", "past 16 idle clients, one more is closed at once")
for s in idle:
    s.close()
time.sleep(0.3)
st, out, err = ctl("status")
ok(st == 0, "the next client is answered", err)
c = login("alice@example.com")
is_(send_one(c, "alice@example.com").code, 250, "and submitd still serves mail")
c.close()
c4.close()
ok(d.wait_idle(), "every session ended")


def second(path, name):
    """A second submitd with control_socket path: (exit status or None if
    it is still running after 3 s, its log)."""
    d2 = env.submitd([("myhostname", MYHOST), ("listen", "127.0.0.1:%d tls" % free_port()),
                      ("tls_cert_file", certs.fullchain), ("tls_key_file", certs.key),
                      ("relayhost", sink.relayhost), ("workers", "1"),
                      ("control_socket", path)], start=False, name=name)
    d2.write_config()
    p = subprocess.Popen([env.binary, "-c", d2.conf], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = p.communicate(timeout=3)
        return p.returncode, out.decode(errors="replace")
    except subprocess.TimeoutExpired:
        p.terminate()
        out, _ = p.communicate(timeout=10)
        return None, out.decode(errors="replace")


st, out = second(sock, "second")
ok(st is not None and st != 0 and "control_socket %s: another submitd is listening on it" % sock in out,
   "a second instance on the same control socket refuses to start, naming the path", out[-600:])
st, out, err = ctl("status")
ok(st == 0 and os.path.exists(sock), "the first instance's socket is still there and answers", err)
plain = env.path("plain.sock")
with open(plain, "w") as f:
    f.write("not a socket\n")
st, out = second(plain, "over-a-file")
ok(st not in (None, 0) and "is not a socket" in out and open(plain).read() == "not a socket\n",
   "a regular file at control_socket: no start, the file is left alone", out[-600:])
link = env.path("link.sock")
os.symlink(plain, link)
st, out = second(link, "over-a-symlink")
ok(st not in (None, 0) and os.path.islink(link) and open(plain).read() == "not a socket\n",
   "a symlink at control_socket: no start, neither the link nor its target is touched", out[-600:])
stale = env.path("stale.sock")
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(stale)
s.close()
st, out = second(stale, "over-stale")
ok(st is None and "control socket %s (root only)" % stale in out,
   "a stale socket nobody listens on is replaced", out[-600:])
d.stop()
ok(not os.path.exists(sock), "the socket file is removed at exit")

done()
