#!/usr/bin/env python3
"""limit_store = redis (issue 14; docs/limits.md "Redis"): two submitd
instances share one private redis-server, one through its unix socket, the
other over TCP on loopback:

  - one login limit is enforced together: the N+1-th message is refused
    450 4.7.1 on the other instance, and another login is unaffected;
  - a hold made with submitctl on either instance applies on the other: the
    login's open session there ends at its next command, AUTH still gets
    235 and MAIL 554 5.7.1; a release on the other instance lifts it; a hold
    written straight into Redis applies at the next MAIL;
  - the AUTH failure budget of an address is shared;
  - redis-server killed mid-run: mail still flows on local counters, one
    warning per instance, holds still apply; redis-server back: one line
    saying so, and the counters are shared again.
  - an error reply (maxmemory: -OOM to the script): decided locally, logged
    once with Redis' words;
  - redis-server stopped (SIGSTOP): MAIL is answered after
    limit_store_timeout, a client that hangs up meanwhile is harmless, one
    more warning, one line when it answers again;
  - submitctl status names the shared store and whether it is reachable;
  - one message is one EVAL (INFO commandstats).
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import harness  # noqa: E402
from harness import *  # noqa: E402,F401,F403
import txn  # noqa: E402

REDIS = shutil.which("redis-server", path=os.environ.get("PATH", "") + ":/usr/bin:/usr/sbin")
if os.geteuid() != 0 or REDIS is None \
        or not os.access(os.environ.get("DOVECOT", "/usr/sbin/dovecot"), os.X_OK):
    skip_all("needs root, redis-server and dovecot-core (scripts/deps.sh)")

env = Env()
env.require_binary()
os.chmod(env.dir, 0o711)
certs = env.certs()
SUBMITCTL = os.path.join(os.path.dirname(env.binary), "submitctl")

PW = {u: u.split("@")[0] + "-secret" for u in
      ("alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com",
       "erin@example.com", "frank@example.com", "grace@example.com", "heidi@example.com",
       "ivan@example.com", "judy@example.com", "mallory@example.com")}
dv = private_dovecot(env, "passwd-file", users={k: (v, "SSHA256", "") for k, v in PW.items()},
                     failure_delay="0")
sink = env.sink()

rdir = env.path("redis")
os.mkdir(rdir, 0o700)
rsock = os.path.join(rdir, "redis.sock")
rport = free_port()
redis = [None]


def redis_start():
    log = open(os.path.join(rdir, "redis.log"), "a")
    redis[0] = subprocess.Popen(
        [REDIS, "--bind", "127.0.0.1", "--port", str(rport), "--unixsocket", rsock,
         "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", rdir,
         "--daemonize", "no"], stdout=log, stderr=log, start_new_session=True)
    wait_unix(rsock, 10)
    wait_port("127.0.0.1", rport, 10)


def redis_stop():
    p = redis[0]
    if p is not None and p.poll() is None:
        p.kill()
        p.wait()


harness._cleanups.append(redis_stop)
redis_start()


def rcmd(*args):
    """One command to redis-server over its unix socket (RESP); the raw reply."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(rsock)
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    s.sendall(out)
    data = s.recv(65536)
    s.close()
    return data


conf = [("login_message_limit", "3/1h"), ("login_recipient_limit", "none"),
        ("domain_message_limit", "none"), ("domain_recipient_limit", "none"),
        ("hold_limit_hits", "none"), ("hold_client_addresses", "none"),
        ("hold_refused_recipients", "none"), ("hold_burst", "none"),
        ("auth_ip_failure_limit", "4"), ("auth_failure_delay", "0"),
        ("client_limit_exceptions", ""), ("limit_store_prefix", "t57:")]
# judy alone has a recipient limit: the other logins' messages stay one EVAL
overrides = env.path("login-limits.txt")
with open(overrides, "w") as f:
    f.write("judy@example.com message=100/1h recipient=6/1h\n")
conf.append(("login_limit_maps", "texthash:" + overrides))
socks = [env.path("a.sock"), env.path("b.sock")]
MPORT = free_port()
A = txn.start(env, certs, dv, sink, conf + [("limit_store", "redis:unix:" + rsock),
                                            ("control_socket", socks[0]),
                                            ("metrics_listen", "127.0.0.1:%d" % MPORT)], "submitd-a")
B = txn.start(env, certs, dv, sink, conf + [("limit_store", "redis:127.0.0.1:%d" % rport),
                                            ("control_socket", socks[1])], "submitd-b")
# every connection (2 workers, the main thread, the subscriber) is up
wait_for(lambda: b"t57:events" in rcmd("PUBSUB", "CHANNELS"), 10)
time.sleep(0.3)


def redis_up_gauge():
    """submitd_backend_up{backend="redis"} in A's scrape (docs/observability.md)."""
    import urllib.request
    try:
        body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % MPORT, timeout=5).read()
    except OSError:
        return None
    m = re.search(rb'^submitd_backend_up\{backend="redis"\} (\d+)$', body, re.M)
    return int(m.group(1)) if m else None


def ctl(sock, *args):
    p = subprocess.run([SUBMITCTL, "-s", sock] + list(args), capture_output=True, text=True,
                       timeout=30)
    return p.returncode, p.stdout + p.stderr


def login(d, user, source=None):
    c, r = txn.login(d, certs, user, PW[user], source)
    if r.code != 235:
        raise AssertionError("AUTH %s: %s" % (user, r))
    return c


def send(d, user, tag="redis"):
    c = login(d, user)
    rm, _, fin = txn.send(c, user, ["x@example.net"], tag)
    c.close()
    return rm if rm.code != 250 else fin


# ------------------------------------------------------------ keepalives
def client_timers():
    """The timer (/proc/net/tcp "tr") of every established socket whose peer
    is redis-server's TCP port: B's connections."""
    out = []
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            x = line.split()
            if int(x[2].split(":")[1], 16) == rport and x[3] == "01":
                out.append(x[5].split(":")[0])
    return out


wait_for(lambda: client_timers() and set(client_timers()) == {"02"}, 5)
t = client_timers()
ok(len(t) >= 3 and set(t) == {"02"},
   "B's TCP connections to Redis (subscriber included) run keepalive timers", t)

# ------------------------------------------------------------ one limit for both
st, out = ctl(socks[0], "status")
ok(st == 0 and "shared store: redis:unix:%s, up" % rsock in out, "status names the shared store", out)
st, out = ctl(socks[1], "--json", "status")
ok(st == 0 and '"shared_store":"redis:127.0.0.1:%d","shared_store_up":true' % rport in out,
   "status --json too", out)
codes = [send(A, "alice@example.com").code, send(B, "alice@example.com").code,
         send(A, "alice@example.com").code]
is_(codes, [250, 250, 250], "alice: three messages over both instances")
r = send(B, "alice@example.com")
ok(r.code == 450 and r.enhanced == "4.7.1" and "login_message_limit 3/" in r.text,
   "the 4th, on the other instance: 450 4.7.1 naming the limit", str(r))
r = send(A, "alice@example.com")
ok(r.code == 450 and r.enhanced == "4.7.1", "and on the first one too", str(r))


def calls():
    """Commands redis-server ran, by name (INFO commandstats), without INFO's own."""
    out = {}
    for m in re.finditer(rb"cmdstat_([a-z|]+):calls=(\d+)", rcmd("INFO", "commandstats")):
        if m.group(1) != b"info":
            out[m.group(1).decode()] = int(m.group(2))
    return out


before = calls()
is_(send(B, "bob@example.com").code, 250, "another login is unaffected")
after = calls()
diff = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
# (INFO counts the commands the script runs too)
inside = {"time", "exists", "hmget", "hgetall", "hdel", "hincrby", "pexpire"}
ok(diff.get("eval") == 1 and set(diff) - {"eval"} <= inside,
   "one message: one round trip to Redis, one EVAL", diff)
ok(b"t57:c:3600000:m|l|alice@example.com" in rcmd("KEYS", "t57:c:*"),
   "the counter lives in Redis under the prefix")

# ------------------------------------------------------------ recipients, shared
c = login(A, "judy@example.com")
rm, rr, fin = txn.send(c, "judy@example.com", ["r%d@example.net" % i for i in range(4)], "rcpt")
c.close()
ok(rm.code == 250 and [r.code for r in rr] == [250] * 4 and fin.code == 250,
   "judy: four recipients on A", "%s %s %s" % (rm, rr, fin))
time.sleep(0.3)  # the pushes are fire and forget
before = calls()
c = login(B, "judy@example.com")
rm, rr, fin = txn.send(c, "judy@example.com", ["s%d@example.net" % i for i in range(4)], "rcpt")
c.close()
is_([r.code for r in rr], [250, 250, 450, 450],
    "on B, the 7th recipient of her 6/1h is refused: the count is shared")
ok(rr[2].enhanced == "4.7.1" and "login_recipient_limit 6/" in rr[2].text,
   "450 4.7.1 naming the limit", str(rr[2]))
after = calls()
ok(after.get("eval", 0) - before.get("eval", 0) == 3,
   "one EVAL for MAIL and one fire-and-forget push per recipient taken, none asked at RCPT",
   (before, after))
c = login(A, "judy@example.com")
rm, rr, fin = txn.send(c, "judy@example.com", ["t@example.net"], "rcpt")
c.close()
ok(rm.code == 250 and rr[0].code == 450, "and back on A, the next one is refused too",
   "%s %s" % (rm, rr))

# Redis' clock stepped back: a slot "from the future" (counted before the
# step) is forgotten rather than refusing the login for the step's length.
rcmd("HSET", "t57:c:3600000:m|l|mallory@example.com", "99999999999", "1000")
r = send(A, "mallory@example.com")
ok(r.code == 250, "a slot past Redis' now does not count", str(r))

# ------------------------------------------------------------ holds
c_open = login(B, "carol@example.com")
st, out = ctl(socks[0], "hold", "carol@example.com", "phished")
ok(st == 0, "submitctl hold on A", out)
time.sleep(0.5)
r = c_open.cmd("NOOP")
ok(r.code == 421, "carol's open session on B ends at its next command", str(r))
c = login(B, "carol@example.com")
r = c.cmd("MAIL FROM:<carol@example.com>")
ok(r.code == 554 and r.enhanced == "5.7.1", "held on B: AUTH 235, MAIL 554 5.7.1", str(r))
c.close()
st, out = ctl(socks[1], "held")
ok(st == 0 and "carol@example.com" in out and "phished" in out, "B lists the hold", out)
st, out = ctl(socks[1], "release", "carol@example.com")
ok(st == 0, "submitctl release on B", out)
time.sleep(0.5)
is_(send(A, "carol@example.com").code, 250, "released on A too")
st, out = ctl(socks[1], "hold", "carol@example.com", "again")
time.sleep(0.5)
c = login(A, "carol@example.com")
r = c.cmd("MAIL FROM:<carol@example.com>")
ok(st == 0 and r.code == 554 and r.enhanced == "5.7.1", "a hold made on B applies on A", str(r))
c.close()

rcmd("HSET", "t57:h:dave@example.com", "reason", "manual", "note", "by hand", "client", "",
     "until", "0")
c = login(A, "dave@example.com")
r = c.cmd("MAIL FROM:<dave@example.com>")
ok(r.code == 554 and r.enhanced == "5.7.1", "a hold found in Redis at MAIL applies", str(r))
c.close()
ok(A.wait_log(r"limit_store: login=<dave@example.com> held by another instance", 5),
   "and is kept locally (logged)")

# ------------------------------------------------------------ AUTH failure budget
src = "127.0.0.2"


def bad_auth(d):
    c = client_from(src, d, "tls", certs)
    r = c.cmd("AUTH PLAIN " + b64("\0erin@example.com\0wrong"))
    c.close()
    return r.code


fails = [bad_auth(A), bad_auth(A), bad_auth(B), bad_auth(B)]
is_(fails, [535, 535, 535, 535], "four failures from one address, two on each instance")
time.sleep(0.5)
c = client_from(src, A, "tls", certs)
r = c.cmd("AUTH PLAIN " + b64("\0erin@example.com\0" + PW["erin@example.com"]))
ok(r.code == 454 and r.enhanced == "4.7.0", "the budget (4) is shared: A refuses the next AUTH",
   str(r))
c.close()

# An event's budget settings are not taken: a forged "limit 1, blocked a
# day" failure counts as one failure against A's own budget of 4.
rcmd("PUBLISH", "t57:events", "%s\tauthfail\t04%s\t1\t86400000\t86400000"
     % ("f" * 16, "7f000003" + "00" * 12))
time.sleep(0.5)
c = client_from("127.0.0.3", A, "tls", certs)
r = c.cmd("AUTH PLAIN " + b64("\0erin@example.com\0" + PW["erin@example.com"]))
c.close()
is_(r.code, 235, "a failure announced with the sender's own budget counts against A's budget")

# ------------------------------------------------------------ privileges
# Redis is connected to after privileges are dropped, like every backend:
# an instance running as nobody does not reach a socket only root may open,
# not even from its main thread (the subscriber).
def subscribers():
    return int(re.findall(rb":(\d+)", rcmd("PUBSUB", "NUMSUB", "t57:events"))[-1])


n_subs = subscribers()
D = env.submitd(standard_config(certs, sink, [
    ("user", "nobody"), ("limit_store", "redis:unix:" + rsock), ("limit_store_prefix", "t57:")]),
    name="submitd-d")
ok(D.wait_log(r"limit_store: redis \S+ unreachable.*(Permission denied|ermission)", 10),
   "running as nobody: Redis' root-only socket is unreachable", D.log()[-1500:])
time.sleep(1)
is_(subscribers(), n_subs, "and its main thread did not subscribe as root before the drop")
D.stop()

# ------------------------------------------------------------ Redis goes away
st, out = ctl(socks[0], "hold", "frank@example.com", "before the outage")
time.sleep(0.5)
redis_stop()
time.sleep(0.3)
is_(send(A, "erin@example.com").code, 250, "Redis down: mail flows on A")
is_(send(B, "erin@example.com").code, 250, "and on B")
is_(send(A, "erin@example.com").code, 250, "and again on A")
time.sleep(1.5)  # several reconnect attempts
is_(send(B, "erin@example.com").code, 250, "still, after reconnect attempts")
c = login(B, "frank@example.com")
r = c.cmd("MAIL FROM:<frank@example.com>")
ok(r.code == 554 and r.enhanced == "5.7.1", "a hold known before the outage still applies", str(r))
c.close()
for name, d in (("A", A), ("B", B)):
    n = len([l for l in d.log().splitlines() if "limit_store: redis" in l and "unreachable" in l])
    is_(n, 1, "%s: exactly one warning for the outage" % name)
st, out = ctl(socks[1], "status")
ok(st == 0 and "shared store: redis:127.0.0.1:%d, unreachable" % rport in out,
   "status says the shared store is unreachable", out)
is_(redis_up_gauge(), 0, "the metrics say so too: submitd_backend_up{backend=\"redis\"} 0")

# ------------------------------------------------------------ and comes back
redis_start()
for name, d in (("A", A), ("B", B)):
    ok(d.wait_log(r"limit_store: redis \S+ is back", 15), "%s: says Redis is back" % name)
ok(wait_for(lambda: redis_up_gauge() == 1, 15), "submitd_backend_up{backend=\"redis\"} 1 again")
wait_for(lambda: b"t57:events" in rcmd("PUBSUB", "CHANNELS"), 10)
time.sleep(0.5)
codes = [send(A, "grace@example.com").code, send(A, "grace@example.com").code,
         send(B, "grace@example.com").code]
is_(codes, [250, 250, 250], "grace: three messages over both instances")
r = send(B, "grace@example.com")
ok(r.code == 450 and r.enhanced == "4.7.1", "counters are shared again: the 4th is refused on B",
   str(r))
for name, d in (("A", A), ("B", B)):
    n = len([l for l in d.log().splitlines() if "limit_store: redis" in l and "unreachable" in l])
    is_(n, 1, "%s: still one warning in all" % name)

# ------------------------------------------------------------ Redis answers with an error
rcmd("CONFIG", "SET", "maxmemory", "1")  # every write (the script) gets -OOM
try:
    r1 = send(A, "ivan@example.com")
    r2 = send(A, "ivan@example.com")
finally:
    rcmd("CONFIG", "SET", "maxmemory", "0")
ok(r1.code == 250 and r2.code == 250, "an error reply from Redis: decided locally",
   "%s / %s" % (r1, r2))
lines = [l for l in A.log().splitlines() if "not the script's" in l]
ok(len(lines) == 1 and "OOM" in lines[0], "logged once, with Redis' words", lines)

# ------------------------------------------------------------ Redis stalls
os.kill(redis[0].pid, signal.SIGSTOP)
try:
    c = login(A, "heidi@example.com")  # hangs up while its MAIL waits for Redis
    c.send(b"MAIL FROM:<heidi@example.com>\r\n")
    c.close()
    t0 = time.monotonic()
    r1 = send(A, "heidi@example.com")
    t1 = time.monotonic() - t0
    r2 = send(A, "heidi@example.com")
    time.sleep(2.5)  # reconnects: connected, but no PONG
    r3 = send(A, "heidi@example.com")
finally:
    os.kill(redis[0].pid, signal.SIGCONT)
ok(r1.code == 250 and t1 < 5, "a stopped Redis: MAIL is answered after the call timeout",
   "%s in %.2fs" % (r1, t1))
ok(r2.code == 250 and r3.code == 250, "and mail keeps flowing", "%s / %s" % (r2, r3))
n = len([l for l in A.log().splitlines() if "limit_store: redis" in l and "unreachable" in l])
is_(n, 2, "one more warning for the stall, whatever the reconnects")
ok(A.wait_log(r"(?s)no answer within limit_store_timeout.*is back", 15),
   "and one line when it answers again")

# ------------------------------------------------------------ a hostile Redis
# A real redis-server never answers this way on demand, so a small fake
# speaks RESP here: PING gets PONG, SUBSCRIBE gets a message of 64 MB, and
# EVAL gets whatever `evil[0]` says. Bytes each connection took before it
# was dropped are recorded.
import threading  # noqa: E402

HUGE = 64 << 20
evil = ["huge"]
taken = {"sub": [], "eval": []}


def fake_read_cmd(f):
    line = f.readline()
    if not line.startswith(b"*"):
        return None
    args = []
    for _ in range(int(line[1:])):
        n = int(f.readline()[1:])
        args.append(f.read(n + 2)[:-2])
    return args


def fake_stream(s, head, what):
    sent = 0
    try:
        s.sendall(head)
        chunk = b"x" * 65536
        while sent < HUGE:
            s.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    taken[what].append(sent)


def fake_conn(s):
    f = s.makefile("rb")
    try:
        while True:
            a = fake_read_cmd(f)
            if a is None:
                break
            cmd = a[0].upper()
            if cmd == b"PING":
                s.sendall(b"+PONG\r\n")
            elif cmd == b"SUBSCRIBE":
                ch = a[1]
                s.sendall(b"*3\r\n$9\r\nsubscribe\r\n$%d\r\n%s\r\n:1\r\n" % (len(ch), ch))
                if taken["sub"]:
                    continue  # once is enough
                fake_stream(s, b"*3\r\n$7\r\nmessage\r\n$%d\r\n%s\r\n$%d\r\n"
                            % (len(ch), ch, HUGE), "sub")
                break
            elif cmd == b"EVAL":
                if evil[0] == "huge":
                    fake_stream(s, b"$%d\r\n" % HUGE, "eval")
                    break
                if evil[0] == "extra":  # a good answer, then one nobody asked for
                    s.sendall(b"*9\r\n" + b":0\r\n" * 4 + b"$0\r\n\r\n" * 3
                              + b":0\r\n" * 2 + b":1\r\n")
                    continue
                s.sendall(b"*2147483647\r\n:1\r\n" if evil[0] == "wide"
                          else b"*1\r\n*1\r\n*9\r\n" + b":0\r\n" * 9)
            else:
                s.sendall(b":0\r\n")
    except OSError:
        pass
    finally:
        s.close()


fake = socket.socket()
fake.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
fake.bind(("127.0.0.1", 0))
fake.listen(16)


def fake_accept():
    while True:
        try:
            s, _ = fake.accept()
        except OSError:
            return
        threading.Thread(target=fake_conn, args=(s,), daemon=True).start()


threading.Thread(target=fake_accept, daemon=True).start()
C = txn.start(env, certs, dv, sink, conf + [
    ("limit_store", "redis:127.0.0.1:%d" % fake.getsockname()[1]),
    ("limit_store_timeout", "10s"), ("workers", "1"), ("listen", "127.0.0.1:%d tls" % free_port())],
    "submitd-c")
wait_for(lambda: len(taken["sub"]) >= 1, 20)
ok(taken["sub"] and max(taken["sub"]) < HUGE // 3,
   "a pub/sub message of 64 MB: the subscriber hangs up long before its end", taken["sub"])
ok(C.wait_log(r"unreachable.*a reply larger than any the script sends", 10),
   "and says why", C.log()[-2000:])


def settled():
    log = C.log()
    return log.count("is back") >= log.count("using local counters")


for mode in ("huge", "wide", "nested"):
    wait_for(settled, 20)
    time.sleep(0.3)
    evil[0] = mode
    n0 = C.log().count("a reply larger than any")
    r = send(C, "alice@example.com", "evil-" + mode)
    ok(r.code in (250, 450) and C.log().count("a reply larger than any") > n0,
       "EVAL answered %s: the connection is dropped at once (one warning), MAIL decided locally"
       % mode, "%s %s" % (r, C.log()[-1500:]))
wait_for(settled, 20)
time.sleep(0.3)
evil[0] = "extra"
n0 = C.log().count("a reply nobody asked for")
r = send(C, "alice@example.com", "evil-extra")
ok(r.code in (250, 450) and C.wait_log("a reply nobody asked for", 5),
   "a reply nobody asked for: the connection is dropped (hiredis would abort)", str(r))
time.sleep(0.5)
r = send(C, "alice@example.com", "after-extra")
ok(r.code in (250, 450), "and the instance still answers", str(r))
ok(taken["eval"] and max(taken["eval"]) < HUGE // 3,
   "an EVAL reply of 64 MB is not read to its end", taken["eval"])
fake.close()

done()
