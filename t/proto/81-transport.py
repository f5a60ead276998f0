#!/usr/bin/env python3
"""transport_maps (docs/routing.md): the recipient picks the next hop.

  * two recipient domains to two downstreams: the test Postfix (STARTTLS,
    SASL with the relay_password_maps entry of that next hop; the same in
    wrapper mode with another account) and a recording sink; ".domain" for
    subdomains only, full addresses with and without the extension, an LMTP
    next hop, "smtp:" (the default route), error: and an unsupported
    transport;
  * mixed-route transactions: the first accepted recipient fixes the route,
    a recipient for another next hop gets 452 4.5.3; swaks (sent again for
    the refused one, as its user would) and a smtplib client that resends
    452-refused recipients in a new transaction deliver every recipient
    exactly once;
  * the same routes from a MariaDB table (mysql:).

Next hops without brackets (MX lookups) are not tested here: they are
refused like relayhost's until MX routing lands."""
import os
import re
import signal
import smtplib
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403
import postfix as pfmod  # noqa: E402
from mariadb import DBNAME, PASSWORD, USER  # noqa: E402

env = Env()
certs, dv, forwarded, pf = pfmod.smarthost(env)   # Postfix relays into forwarded
STARTTLS = "[127.0.0.1]:%d" % pf.starttls_port
WRAPPER = "[127.0.0.1]:%d" % pf.tls_port

default = env.sink()                # relayhost
other = env.sink()                  # the second downstream
lmtp = env.sink(lmtp=True)          # an LMTP next hop
SINKS = {"postfix": forwarded, "default": default, "other": other, "lmtp": lmtp}


def texthash(name, lines):
    return pfmod.texthash(env, name, lines)


ROUTES = [
    ("example.net", "smtp:" + STARTTLS),
    ("example.com", "smtps:" + WRAPPER),
    ("example.org", "relay:[127.0.0.1]:%d" % other.port),
    ("special@example.net", "smtp:[127.0.0.1]:%d" % other.port),
    (".sub.example.org", "lmtp:[127.0.0.1]:%d" % lmtp.port),
    ("default.example", "smtp:"),
    ("bounce.example", "error:5.1.2 mail for bounce.example is not accepted here"),
    ("odd.example", "discard:"),
]
transports = texthash("transport", ROUTES)
pw = texthash("passwords", [(STARTTLS, "alice@example.com:alice-secret"),
                            (WRAPPER, "bob@example.com:bob-secret")])


def start(tmaps, name):
    return env.submitd(standard_config(certs, default, [
        ("transport_maps", tmaps), ("relay_password_maps", pw),
        ("relay_tls_security_level", "may")]), name=name)


def where(rcpt, subject):
    """The downstreams that got subject for rcpt (names)."""
    got = []
    for name, s in SINKS.items():
        for m in s.messages():
            if b"Subject: " + subject.encode() + b"\r\n" in m.content and \
                    rcpt.lower() in [r.lower() for r in m.rcpts]:
                got.append(name)
    return got


def wait_where(rcpt, subject, timeout=15):
    return wait_for(lambda: where(rcpt, subject) or None, timeout) or []


def auth_sender(subject):
    for m in forwarded.messages():
        if b"Subject: " + subject.encode() + b"\r\n" in m.content:
            r = re.search(rb"\(Authenticated sender: ([^)]+)\)", m.content)
            return r.group(1).decode() if r else None
    return None


def send(d, rcpts, subject, sender="alice@example.com"):
    c = client(d, "plain", certs)
    out = c.send_message(sender, rcpts, stuff(make_message(subject=subject, frm=sender)))
    c.cmd("QUIT")
    c.close()
    return out


def smtplib_client(d, rcpts, subject, sender="alice@example.com"):
    """A client as a real one is written: recipients refused with 452 go in
    a new transaction (RFC 5321 §4.5.3.1.10); returns the rounds' refusals."""
    msg = make_message(subject=subject, frm=sender)
    pending, rounds = list(rcpts), []
    with smtplib.SMTP("127.0.0.1", d.port("plain"), timeout=30) as s:
        while pending and len(rounds) < 10:
            try:
                refused = s.sendmail(sender, pending, msg)
            except smtplib.SMTPRecipientsRefused as e:
                refused = e.recipients
            rounds.append(sorted(refused))
            pending = [r for r, (code, _) in refused.items() if code == 452]
    return rounds


d = start(transports, "submitd-texthash")

# --------------------------------------------------------- one route per message
CASES = [
    ("rcpt@example.net", "postfix"),
    ("rcpt@example.com", "postfix"),
    ("rcpt@example.org", "other"),
    ("special@example.net", "other"),
    ("special+tag@example.net", "other"),
    ("x@a.sub.example.org", "lmtp"),
    ("x@b.a.sub.example.org", "lmtp"),
    ("x@sub.example.org", "default"),   # ".sub.example.org" is for subdomains only
    ("x@default.example", "default"),
    ("x@elsewhere.example", "default"),
]
for i, (rcpt, want) in enumerate(CASES):
    subj = "route %d" % i
    out = send(d, [rcpt], subj)
    is_([r.code for r in out], [250, 250, 354, 250], "<%s> accepted" % rcpt)
    is_(wait_where(rcpt, subj), [want], "<%s> went to %s" % (rcpt, want))
is_(auth_sender("route 0"), "alice@example.com",
    "the STARTTLS next hop got the account of relay_password_maps [127.0.0.1]:PORT")
is_(auth_sender("route 1"), "bob@example.com",
    "the smtps: next hop got the account of its own [127.0.0.1]:PORT")

out = send(d, ["x@bounce.example"], "bounce")
is_((out[1].code, out[1].enhanced), (550, "5.1.2"), "error: refuses the recipient with its code")
like(out[1].text, r"mail for bounce\.example is not accepted here", "...and its text")
out = send(d, ["x@odd.example"], "odd")
is_((out[1].code, out[1].enhanced), (451, "4.3.5"), "discard: (unsupported) is a 451 4.3.5")
like(d.log(), r"transport_maps \S+: unsupported transport for odd\.example: \"discard:\"",
     "the log names the entry")

deep = "x@" + "a." * 100 + "example.org"
out = send(d, [deep], "deep")
is_((out[1].code, out[1].enhanced), (550, "5.1.2"),
    "a domain with more labels than the keys hold: refused, never routed without its entry")
out = send(d, ["y@example.org", deep], "deep later")
is_([r.code for r in out], [250, 250, 550, 354, 250], "...also as a later recipient")

# a reload reads the table again; a table that cannot be read refuses the reload
with open(transports.split(":", 1)[1], "a") as f:
    f.write("reload.example relay:[127.0.0.1]:%d\n" % other.port)
out = send(d, ["x@reload.example"], "before reload")
is_(wait_where("x@reload.example", "before reload"), ["default"], "before the reload: relayhost")
os.kill(d.proc.pid, signal.SIGHUP)
ok(d.wait_log(r"configuration reloaded", 10), "SIGHUP: reloaded")
out = send(d, ["x@reload.example"], "after reload")
is_(wait_where("x@reload.example", "after reload"), ["other"], "after it: the new entry")

# --------------------------------------------------------- mixed routes, one transaction
out = send(d, ["a@example.org", "b@example.net", "c@example.org", "d@bounce.example"],
           "mixed raw")
is_([r.code for r in out], [250, 250, 452, 250, 550, 354, 250],
    "the first recipient fixes the route; another next hop: 452; error: 550")
is_((out[2].enhanced, out[2].text),
    ("4.5.3", "4.5.3 Error: too many recipients for one transaction; send the rest in a new "
     "transaction"), "the 452 text")
like(d.log(), r"transport_maps: <b@example\.net> goes to smtp:\[127\.0\.0\.1\]:%d, this "
     r"transaction to smtp:\[127\.0\.0\.1\]:%d: 452" % (pf.starttls_port, other.port),
     "the 452 is logged with both next hops")
is_(wait_where("a@example.org", "mixed raw"), ["other"], "a@ delivered")
is_(where("b@example.net", "mixed raw"), [], "b@ not delivered in this transaction")

# swaks: a@ and c@ go through, b@ is refused with 452; its user sends b@ again
st, outp = run(["swaks", "--server", "127.0.0.1:%d" % d.port("plain"), "--from",
                "alice@example.com", "--to", "a@example.org,b@example.net,c@example.org",
                "--header", "Subject: mixed swaks", "--body", "mixed swaks"])
like(outp, r"<\*\* 452 4\.5\.3 Error: too many recipients", "swaks saw the 452 for b@") \
    or diag(outp)
st, outp = run(["swaks", "--server", "127.0.0.1:%d" % d.port("plain"), "--from",
                "alice@example.com", "--to", "b@example.net",
                "--header", "Subject: mixed swaks", "--body", "mixed swaks"])
is_(st, 0, "swaks again for b@ alone") or diag(outp)
for rcpt, want in [("a@example.org", "other"), ("b@example.net", "postfix"),
                   ("c@example.org", "other")]:
    wait_where(rcpt, "mixed swaks")
    is_(where(rcpt, "mixed swaks"), [want], "swaks: <%s> delivered once, to %s" % (rcpt, want))

# smtplib: the client loop resends what got 452 until nothing is left
MIXED = ["p1@example.org", "p2@example.net", "p3@elsewhere.example", "p4@example.org",
         "p5@x.sub.example.org", "p6@example.net", "p7@default.example"]
WANT = {"p1@example.org": "other", "p2@example.net": "postfix",
        "p3@elsewhere.example": "default", "p4@example.org": "other",
        "p5@x.sub.example.org": "lmtp", "p6@example.net": "postfix",
        "p7@default.example": "default"}
rounds = smtplib_client(d, MIXED, "mixed smtplib")
is_(len(rounds), 4, "smtplib: one transaction per next hop (%s)" % rounds)
is_(rounds[-1], [], "smtplib: the last transaction had no refusals")
for rcpt in MIXED:
    wait_where(rcpt, "mixed smtplib")
is_({r: where(r, "mixed smtplib") for r in MIXED}, {r: [w] for r, w in WANT.items()},
    "smtplib: every recipient delivered exactly once, each through its next hop")
# more 452s than error_limit (20) in one transaction: not errors (as Postfix's
# smtpd_recipient_overshoot_limit), so a client that resends them gets through
MANY = ["m0@example.org"] + ["m%d@example.net" % i for i in range(1, 31)]
rounds = smtplib_client(d, MANY, "many")
is_([len(r) for r in rounds], [30, 0], "30 recipients for another next hop: one 452 each, "
    "then one more transaction")
for rcpt in MANY:
    wait_where(rcpt, "many")
is_(sorted(r for r in MANY if where(r, "many") == [("other" if r.endswith(".org") else "postfix")]),
    sorted(MANY), "...every one delivered once")
unlike(d.log(), r"too many errors", "no 421 for too many errors")
d.stop()

# --------------------------------------------------------- the same from MariaDB
db = dv.db
db.client("CREATE TABLE IF NOT EXISTS transport (pattern VARCHAR(255) PRIMARY KEY, "
          "transport VARCHAR(255) NOT NULL);", database=DBNAME)
db.client("INSERT INTO transport VALUES %s;" % ", ".join(
    "('%s', '%s')" % (k, v) for k, v in ROUTES), database=DBNAME)
cf = env.path("mysql-transport.cf")
with open(cf, "w") as f:
    f.write("hosts = inet:127.0.0.1:%d\nuser = %s\npassword = %s\ndbname = %s\n"
            "query = SELECT transport FROM transport WHERE pattern='%%s'\n"
            % (db.port(), USER, PASSWORD, DBNAME))
d = start("mysql:" + cf, "submitd-mysql")
rounds = smtplib_client(d, MIXED, "mysql smtplib")
is_(len(rounds), 4, "mysql: one transaction per next hop (%s)" % rounds)
for rcpt in MIXED:
    wait_where(rcpt, "mysql smtplib")
is_({r: where(r, "mysql smtplib") for r in MIXED}, {r: [w] for r, w in WANT.items()},
    "mysql: every recipient delivered exactly once, each through its next hop")
is_(auth_sender("mysql smtplib"), "alice@example.com", "mysql: Postfix got alice's account")
out = send(d, ["x@bounce.example"], "mysql bounce")
is_((out[1].code, out[1].enhanced), (550, "5.1.2"), "mysql: error: refuses the recipient")
d.stop()

# a slow answer (2 s for slow.example) holds only its own session (invariant 1)
slow_cf = env.path("mysql-transport-slow.cf")
with open(slow_cf, "w") as f:
    f.write("hosts = inet:127.0.0.1:%d\nuser = %s\npassword = %s\ndbname = %s\n"
            "query = SELECT transport FROM transport, (SELECT SLEEP(IF('%%s' = 'slow.example', "
            "2, 0)) AS z) AS s WHERE pattern='%%s'\nquery_timeout = 10s\n"
            % (db.port(), USER, PASSWORD, DBNAME))
db.client("INSERT INTO transport VALUES ('slow.example', 'relay:[127.0.0.1]:%d');" % other.port,
          database=DBNAME)
d = env.submitd(standard_config(certs, default, [
    ("transport_maps", "mysql:" + slow_cf), ("workers", "1")]), name="submitd-mysql-slow")
slow = client(d, "plain", certs)
is_(slow.cmd("MAIL FROM:<alice@example.com>").code, 250, "slow: MAIL")
t0 = time.time()
slow.send("RCPT TO:<x@slow.example>\r\n")
time.sleep(0.1)
out = send(d, ["y@example.org"], "while slow")
el = time.time() - t0
is_([r.code for r in out], [250, 250, 354, 250], "another session delivers meanwhile")
ok(el < 1.5, "...before the slow lookup ends (%.2fs, same worker)" % el)
r = slow.reply(timeout=15)
is_(r.code, 250, "the slow recipient is routed when its answer comes (%.2fs)" % (time.time() - t0))
slow.cmd("QUIT")
slow.close()
d.stop()

# a database that does not answer: 451 4.3.0 for the recipient, never a route guessed
dead = env.path("mysql-dead.cf")
with open(dead, "w") as f:
    f.write("hosts = inet:127.0.0.1:%d\nuser = u\npassword = p\ndbname = d\n"
            "query = SELECT transport FROM transport WHERE pattern='%%s'\n"
            "connect_timeout = 1s\n" % free_port())
d = start("mysql:" + dead, "submitd-mysql-dead")
out = send(d, ["x@example.org"], "mysql down")
is_((out[1].code, out[1].enhanced), (451, "4.3.0"), "database down: 451 4.3.0 at RCPT")
is_(where("x@example.org", "mysql down"), [], "nothing delivered")
like(d.log(), r"transport_maps mysql:\S+: temporary lookup failure for ", "logged")
d.stop()

# a table that cannot be opened refuses the configuration, by file and line
missing = env.path("no-such-transport")
conf = env.path("bad-transport.conf")
with open(conf, "w") as f:
    f.write("listen = 127.0.0.1:2526 plain\ntransport_maps = texthash:%s\n" % missing)
r = subprocess.run([env.binary, "-c", conf, "-t"], capture_output=True, text=True, timeout=60)
is_(r.stderr.strip(), "submitd: %s:2: transport_maps: %s: No such file or directory"
    % (conf, missing), "a missing transport_maps file refuses the configuration")

done()
