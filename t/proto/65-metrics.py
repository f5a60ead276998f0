#!/usr/bin/env python3
"""Observability (issue 16; docs/observability.md, src/metrics_http.c,
src/core/metrics.c, src/core/log.c):

  - GET /metrics on metrics_listen: the text format passes
    `promtool check metrics` on a scrape taken while several sessions send
    mail at once; OpenMetrics when the Accept header asks for it, ending in
    "# EOF";
  - a delivered message, a refused sender, a failed login, a downstream
    refusal and a Dovecot outage each move exactly the counters
    docs/observability.md lists for them (a scrape before and after, diffed);
  - `submitctl stats` (and --json): the same figures and the top logins;
  - the endpoint's hostile inputs: a request a byte at a time that never
    ends (408 at the deadline), one longer than the bound (431), a NUL
    (400), other methods (405) and paths (404), more connections than
    allowed (closed at once) — and mail is served meanwhile;
  - log_format = json: every line is one JSON object with the fixed keys,
    hostile client text (quotes, backslashes, control bytes, invalid UTF-8,
    bidi controls) arrives escaped, and every AUTH failure names its cause;
  - contrib/grafana-submitd.json is valid JSON and every submitd_ family it
    queries is in a scrape.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

env, certs, _ = setup()
PROMTOOL = shutil.which("promtool")
if PROMTOOL is None:
    skip_all("needs promtool (Debian's prometheus package; scripts/deps.sh)")
SUBMITCTL = os.path.join(os.path.dirname(env.binary), "submitctl")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")

PW = {"alice@example.com": "alice-secret", "bob@example.com": "bob-secret"}
dv = private_dovecot(env, "passwd-file", users={k: (v, "SSHA256", "") for k, v in PW.items()},
                     failure_delay="0")
sink = env.sink("--reject-rcpt", "refused@example.net")
owners = env.path("sender_login")
with open(owners, "w") as f:
    f.write("alice@example.com alice@example.com\nbob@example.com bob@example.com\n")
MPORT = free_port()
sock = env.path("control.sock")
d = env.submitd(auth_config(certs, sink, dv.socket, ["127.0.0.1:%d tls" % free_port()], [
    ("metrics_listen", "127.0.0.1:%d" % MPORT),
    ("sender_login_maps", "texthash:" + owners),
    ("control_socket", sock),
    ("workers", "2"),
    ("auth_failure_delay", "0"),
]))
wait_dovecot_connected(d, 2)


def http(raw, timeout=10):
    """Sends raw bytes, returns (status line, headers, body) or None if closed
    without an answer."""
    s = socket.create_connection(("127.0.0.1", MPORT), timeout=timeout)
    try:
        s.sendall(raw)
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    if not data:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    return lines[0], lines[1:], body


def scrape(accept=None):
    req = b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
    if accept:
        req += b"Accept: " + accept.encode() + b"\r\n"
    st, hdrs, body = http(req + b"\r\n")
    if not st.startswith("HTTP/1.1 200"):
        raise AssertionError("scrape: " + st)
    return body.decode(), hdrs


def samples(text):
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, _, val = line.rpartition(" ")
        out[key] = float(val)
    return out


def diff(before, after):
    return {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)
            if after.get(k, 0) != before.get(k, 0)}


# Families whose values move with timing or size, checked on their own.
LOOSE = ("submitd_downstream_latency_seconds", "submitd_lookup_latency_seconds",
         "submitd_relayed_bytes_total", "submitd_backend_up")


def exact(delta):
    return {k: v for k, v in delta.items() if not k.startswith(LOOSE)}


def login(user, password=None):
    c = client(d, "tls", certs)
    r = c.cmd("AUTH PLAIN " + plain_resp(user, password or PW[user]))
    if r.code != 235:
        raise AssertionError("AUTH %s: %s" % (user, r))
    return c


def promtool(text):
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


AUTH_OK = 'submitd_auth_attempts_total{mechanism="PLAIN",result="success"}'

# ------------------------------------------------------------ a delivered message
c = login("alice@example.com")
b = samples(scrape()[0])
r = c.send_message("alice@example.com", ["x@example.net"], stuff(make_message(subject="m1", frm="alice@example.com")))[-1]
a = samples(scrape()[0])
dl = diff(b, a)
is_(r.code, 250, "a message is delivered")
is_(exact(dl), {'submitd_messages_total{result="accepted",reason=""}': 1,
                'submitd_recipients_total{result="accepted",reason=""}': 1},
    "delivered: messages accepted +1, recipients accepted +1, nothing else")
ok(dl.get("submitd_relayed_bytes_total", 0) > 100, "delivered: bytes relayed move by the message",
   dl.get("submitd_relayed_bytes_total"))
ok(any(k.startswith("submitd_downstream_latency_seconds_count{route=") and v == 1
       for k, v in dl.items()), "delivered: one downstream latency observation for its route",
   repr(dl))

# ------------------------------------------------------------ a refused sender
b = a
r = c.cmd("MAIL FROM:<bob@example.com>")
a = samples(scrape()[0])
ok(r.code == 553, "alice may not send as bob", str(r))
is_(exact(diff(b, a)), {'submitd_messages_total{result="refused",reason="sender_not_owned"}': 1},
    "refused sender: messages refused (sender_not_owned) +1, nothing else")

# ------------------------------------------------------------ a downstream refusal
c.cmd("RSET")
b = samples(scrape()[0])
r1 = c.cmd("MAIL FROM:<alice@example.com>")
r2 = c.cmd("RCPT TO:<refused@example.net>")
c.cmd("RSET")
a = samples(scrape()[0])
ok(r1.code == 250 and r2.code == 550, "the downstream refuses a recipient", "%s / %s" % (r1, r2))
is_(exact(diff(b, a)),
    {'submitd_recipients_total{result="refused",reason="downstream_refused"}': 1},
    "downstream refusal: recipients refused (downstream_refused) +1, nothing else")
c.close()

# ------------------------------------------------------------ a failed login
d.wait_idle()  # the session above has ended (sessions_open counts it until then)
b = samples(scrape()[0])
c = client(d, "tls", certs)
r = c.cmd("AUTH PLAIN " + plain_resp("bob@example.com", "wrong"))
c.close()
d.wait_idle()
a = samples(scrape()[0])
is_(r.code, 535, "a wrong password gets 535")
dl = exact(diff(b, a))
conn = [k for k in dl if k.startswith("submitd_connections_total")]
is_({k: v for k, v in dl.items() if k not in conn},
    {'submitd_auth_attempts_total{mechanism="PLAIN",result="wrong_credentials"}': 1,
     'submitd_tls_handshakes_total{version="TLSv1.3",result="success"}': 1},
    "failed login: auth wrong_credentials +1 (and its connection's handshake), nothing else")
ok(len(conn) == 1 and dl[conn[0]] == 1 and 'outcome="accepted"' in conn[0],
   "failed login: one accepted connection on its listener", repr(conn))
like(d.log(), r"SASL PLAIN authentication failed: login=<bob@example\.com>, "
     r"reason=[^\n]*, cause=wrong_credentials\n", "its log line ends in cause=wrong_credentials")

# ------------------------------------------------------------ submitctl stats
for _ in range(2):
    c = login("bob@example.com")
    c.send_message("bob@example.com", ["y@example.net"], stuff(make_message(frm="bob@example.com")))
    c.send_message("bob@example.com", ["refused@example.net"],
                   stuff(make_message(frm="bob@example.com")))
    c.close()
p = subprocess.run([SUBMITCTL, "-s", sock, "--json", "stats"], capture_output=True, text=True,
                   timeout=30)
try:
    js = json.loads(p.stdout)
except ValueError:
    js = None
ok(p.returncode == 0 and js is not None, "submitctl --json stats parses", p.stdout[-500:] + p.stderr)
if js:
    top = {e["login"]: e["count"] for e in js["top_messages"]}
    ref = {e["login"]: e["count"] for e in js["top_refused_recipients"]}
    ok(top.get("bob@example.com") == 2 and top.get("alice@example.com") == 1,
       "stats: top logins by messages in the last hour", repr(js["top_messages"]))
    ok(ref.get("bob@example.com") == 2 and ref.get("alice@example.com") == 1,
       "stats: top logins by refused recipients", repr(js["top_refused_recipients"]))
    ok(js["metrics"].get('submitd_messages_total{result="accepted",reason=""}') == 3,
       "stats: the same figures as /metrics", repr(js["metrics"])[:400])
p = subprocess.run([SUBMITCTL, "-s", sock, "stats"], capture_output=True, text=True, timeout=30)
like(p.stdout, r"# top_messages .*\nbob@example\.com 2 \+0\n", "submitctl stats (text)")

# ------------------------------------------------------------ under load: promtool
stop = threading.Event()
sent = []


def sender(user):
    while not stop.is_set():
        try:
            c = login(user)
            for _ in range(3):
                c.send_message(user, ["z@example.net"], stuff(make_message(frm=user)))
                sent.append(1)
            c.close()
        except Exception:  # noqa: BLE001 (reported through the counts)
            time.sleep(0.1)


threads = [threading.Thread(target=sender, args=(u,), daemon=True)
           for u in list(PW) * 3]
for t in threads:
    t.start()
wait_for(lambda: len(sent) >= 12, 30)
texts = []
for _ in range(5):
    texts.append(scrape()[0])
    time.sleep(0.2)
om, om_hdrs = scrape("application/openmetrics-text; version=1.0.0")
stop.set()
for t in threads:
    t.join(30)
mid = samples(texts[-1])
ok(mid.get("submitd_sessions_open", 0) >= 1, "a scrape under load sees open sessions",
   mid.get("submitd_sessions_open"))
results = [promtool(t) for t in texts]
ok(all(rc == 0 for rc, _ in results), "promtool check metrics: every scrape under load is valid",
   "\n".join(out for _, out in results)[:2000])
ok(om.endswith("# EOF\n") and "# TYPE submitd_messages counter" in om and
   any("openmetrics-text" in h for h in om_hdrs),
   "Accept: application/openmetrics-text gets OpenMetrics, ending in # EOF", om[-300:])
families = set(re.findall(r"^# TYPE (\S+)", texts[-1], re.M))
want = {"submitd_connections_total", "submitd_tls_handshakes_total",
        "submitd_tls_resumptions_total", "submitd_auth_attempts_total",
        "submitd_messages_total", "submitd_recipients_total", "submitd_relayed_bytes_total",
        "submitd_limits_hit_total", "submitd_downstream_latency_seconds",
        "submitd_lookup_latency_seconds", "submitd_backend_up", "submitd_sessions_open",
        "submitd_held_logins"}
ok(want <= families, "every documented family is in a scrape", repr(want - families))
ok(not re.search(r"@example\.com", texts[-1]), "no login in any label")

# ------------------------------------------------------------ the dashboard
try:
    dash = json.load(open(os.path.join(ROOT, "contrib", "grafana-submitd.json")))
except (OSError, ValueError) as e:
    dash = None
    diag("contrib/grafana-submitd.json: %s" % e)
ok(dash is not None, "contrib/grafana-submitd.json is valid JSON")
if dash is not None:
    exprs = re.findall(r'"expr":\s*"((?:[^"\\]|\\.)*)"', json.dumps(dash))
    used = set()
    for e in exprs:
        used |= set(re.findall(r"submitd_[a-z_]+", json.loads('"%s"' % e)))
    known = set(re.sub(r"[{ ].*", "", k) for k in samples(texts[-1]))
    ok(exprs and used <= known, "every metric the dashboard queries is in a scrape",
       repr(sorted(used - known)))

# ------------------------------------------------------------ a Dovecot outage
d.wait_idle()  # the sessions above have ended (sessions_open counts them until then)
b = samples(scrape()[0])
ok(b.get('submitd_backend_up{backend="Dovecot"}') == 1, "Dovecot is up before the outage")
dovecot_kill(dv)
c = client(d, "tls", certs)
r = c.cmd("AUTH PLAIN " + plain_resp("alice@example.com", PW["alice@example.com"]))
c.close()
d.wait_idle()
a = samples(scrape()[0])
is_(r.code, 454, "Dovecot down: 454")
dl = exact(diff(b, a))
is_({k: v for k, v in dl.items() if not k.startswith(("submitd_connections_total",
                                                      "submitd_tls_handshakes_total"))},
    {'submitd_auth_attempts_total{mechanism="PLAIN",result="backend_unavailable"}': 1},
    "Dovecot outage: auth backend_unavailable +1, nothing else")
is_(a.get('submitd_backend_up{backend="Dovecot"}'), 0.0, "Dovecot outage: backend_up 0")
like(d.log(), r"SASL PLAIN authentication unavailable: [^\n]*, cause=backend_unavailable\n",
     "its log line ends in cause=backend_unavailable")
dv.start()

# ------------------------------------------------------------ the endpoint's hostile inputs
st = http(b"POST /metrics HTTP/1.1\r\n\r\n")
ok(st and st[0].startswith("HTTP/1.1 405") and "Allow: GET" in st[1], "POST: 405 with Allow", st)
st = http(b"GET /other HTTP/1.1\r\n\r\n")
ok(st and st[0].startswith("HTTP/1.1 404"), "another path: 404", st)
st = http(b"GET /metrics\0 HTTP/1.1\r\n\r\n")
ok(st and st[0].startswith("HTTP/1.1 400"), "a NUL: 400", st)
st = http(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 10000 + b"\r\n\r\n")
ok(st and st[0].startswith("HTTP/1.1 431"), "a request over the bound: 431", st)
st = http(b"garbage\r\n\r\n")
ok(st and st[0].startswith("HTTP/1.1 400"), "not a request line: 400", st)

# a byte at a time, never ending: answered 408 at the deadline, not later
s = socket.create_connection(("127.0.0.1", MPORT))
t0 = time.time()
s.settimeout(0.3)
got = b""
for ch in (b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 200):
    try:
        s.send(bytes([ch]))
        got += s.recv(4096)
        if got:
            break
    except socket.timeout:
        pass
    except OSError:
        break
    if time.time() - t0 > 15:
        break
elapsed = time.time() - t0
s.close()
ok(got.startswith(b"HTTP/1.1 408") and elapsed < 8, "a byte at a time: 408 at the 5 s deadline",
   "%r after %.1f s" % (got[:40], elapsed))

# one that sends nothing and never reads or closes: 408 at the deadline,
# then closed by the server a moment later
s = socket.create_connection(("127.0.0.1", MPORT))
s.settimeout(10)
t0 = time.time()
got = s.recv(4096)
t408 = time.time() - t0
try:
    rest = s.recv(4096)
    while rest:
        rest = s.recv(4096)
    gone = time.time() - t0
except (socket.timeout, OSError):
    gone = None
s.close()
ok(got.startswith(b"HTTP/1.1 408") and 4 < t408 < 8 and gone is not None and gone - t408 < 3,
   "silent client: 408 at 5 s, closed by the server within a second or two after",
   "%r at %.1f s, closed at %s" % (got[:20], t408, gone))

# more connections than allowed: the extra ones are closed at once; mail goes on
held = [socket.create_connection(("127.0.0.1", MPORT)) for _ in range(40)]
time.sleep(0.5)
closed = 0
for h in held:
    h.settimeout(0.2)
    try:
        if h.recv(10) == b"":
            closed += 1
    except socket.timeout:
        pass
    except OSError:
        closed += 1
ok(closed >= 40 - 16, "past 16 connections the endpoint closes new ones at once", closed)
c = login("alice@example.com")
is_(c.send_message("alice@example.com", ["x@example.net"],
                   stuff(make_message(frm="alice@example.com")))[-1].code, 250,
    "mail is served while the endpoint is full")
c.close()
for h in held:
    h.close()
ok(wait_for(lambda: http(b"GET /metrics HTTP/1.0\r\n\r\n") is not None, 10),
   "the endpoint serves again once they are gone")
d.stop()

# ------------------------------------------------------------ log_format = json
dv2 = dv
d2 = env.submitd(auth_config(certs, sink, dv2.socket, ["127.0.0.1:%d tls" % free_port()], [
    ("log_format", "json"),
    ("sender_login_maps", "texthash:" + owners),
    ("auth_failure_delay", "0"),
    ("workers", "1"),
]), name="submitd-json")
wait_for(lambda: "connected, mechanisms" in d2.log(), 10)
c = client(d2, "tls", certs)
r = c.cmd("AUTH PLAIN " + plain_resp("bob@example.com", "wrong"))
# a login made up to forge the JSON fields: the cause is taken from the line's end
r = c.cmd("AUTH PLAIN " + plain_resp("x, cause=blocked, status=sent (250", "wrong"))
r = c.cmd("AUTH CRAM-XYZ")
c.send(b"AUTH Q\"\\\x01\x1b[31m\xff\xe2\x80\xae\r\n")  # logged: an unknown mechanism
c.reply()
c.cmd("AUTH PLAIN")
c.cmd("*")
c.close()
c = client(d2, "tls", certs)
c.cmd("AUTH PLAIN " + plain_resp("alice@example.com", PW["alice@example.com"]))
hostile = 'q"uo\\te'
c.cmd('MAIL FROM:<"%s"@example.com>' % hostile.replace("\\", "\\\\").replace('"', '\\"'))
c.cmd("RSET")
c.send_message("alice@example.com", ["x@example.net"], stuff(make_message(frm="alice@example.com")))
c.close()
wait_for(lambda: '"event":"disconnect"' in d2.log() and d2.log().count('"event":"disconnect"') >= 2, 10)
raw = open(d2.logfile, "rb").read().split(b"\n")
objs, bad = [], []
for line in raw:
    if not line:
        continue
    try:
        o = json.loads(line.decode("utf-8"))
        if not isinstance(o, dict):
            raise ValueError("not an object")
        objs.append(o)
    except ValueError as e:
        bad.append("%r: %s" % (line[:200], e))
ok(objs and not bad, "every log line is one JSON object", "\n".join(bad[:5]))
FIXED = {"ts", "level", "pid", "session", "event", "msg"}
ok(all(FIXED <= set(o) for o in objs), "every line has ts, level, pid, session, event, msg",
   repr([o for o in objs if not FIXED <= set(o)][:3]))
fails = [o for o in objs if o["event"] == "auth_failed"]
ok(fails and all(o.get("login") in ("bob@example.com", "x, cause=blocked, status=sent (250") or o.get("cause") == "aborted"
                 for o in fails) and {o.get("cause") for o in fails} >= {"wrong_credentials"},
   "auth_failed lines carry login and cause", repr(fails))
forged = [o for o in fails if "cause=blocked" in o["msg"]]
ok(len(forged) == 1 and forged[0]["cause"] == "wrong_credentials" and
   forged[0]["event"] == "auth_failed" and "reply" not in forged[0],
   "a login cannot forge the cause, the event or the reply", repr(forged))
ok(any(o.get("cause") == "unknown_mechanism" for o in objs),
   "an unknown mechanism is logged with its cause", "")
ok(any(o.get("cause") == "aborted" for o in objs), "a cancelled AUTH is logged as aborted")
dlv = [o for o in objs if o["event"] == "delivered"]
ok(len(dlv) == 1 and dlv[0].get("from") == "alice@example.com" and
   dlv[0].get("to") == "x@example.net" and dlv[0].get("reply", "").startswith("250") and
   "own" in dlv[0] and re.fullmatch(r"[0-9A-F]{13}", dlv[0]["session"] or ""),
   "the delivery line: session, from, to, reply, own time", repr(dlv))
text = "\n".join(o["msg"] for o in objs)
ok('SASL Q"\\' in text, "quotes and backslashes from the client survive, escaped", text[-2000:])
ok("\\x01" in text and "\\x1b" in text and "\\xff" in text and "\\u202e" in text,
   "control bytes, invalid UTF-8 and a bidi control arrive as escapes", text[-2000:])
d2.stop()
done()
