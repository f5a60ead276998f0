#!/usr/bin/env python3
"""Per-login, per-domain and per-address limits (issue 14; docs/limits.md),
against a private Dovecot (AUTH), a private MariaDB (login_limit_maps) and
the recording downstream:

  - the N+1-th message of a login gets 450 4.7.1 at MAIL naming
    login_message_limit and when it frees up; the M+1-th recipient gets
    450 4.7.1 at RCPT naming login_recipient_limit; neither reaches the
    downstream; another login is unaffected;
  - the domain's limit counts every login of the domain together, and not
    the logins of another domain;
  - a trusted listener's client without AUTH is limited per address
    (client_message_limit);
  - per-login overrides from a MariaDB table (mysql:) and from texthash:
    (value "message=... recipient=..." and "none");
  - windows roll over (a 3 s period), and the counters survive SIGHUP;
  - `none` switches a limit off.
"""
import os
import re
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import harness  # noqa: E402
from harness import *  # noqa: E402,F401,F403
import txn  # noqa: E402

if os.geteuid() != 0 or not shutil.which("mariadbd", path=os.environ.get("PATH", "") + ":/usr/sbin") \
        or not os.access(os.environ.get("DOVECOT", "/usr/sbin/dovecot"), os.X_OK):
    skip_all("needs root, mariadb-server and dovecot-core (scripts/deps.sh)")

from mariadb import DBNAME, PASSWORD, USER, MariaDB  # noqa: E402

env = Env()
env.require_binary()
os.chmod(env.dir, 0o711)
certs = env.certs()

PW = {"alice@example.com": "alice-secret", "bob@example.com": "bob-secret",
      "carol@example.org": "carol-secret", "dave@example.org": "dave-secret",
      "erin@example.org": "erin-secret"}
dv = private_dovecot(env, "passwd-file", users={k: (v, "SSHA256", "") for k, v in PW.items()},
                     failure_delay="0")

db = MariaDB(env.path("mariadb"))
harness._cleanups.append(db.stop)
db.start()
db.client("""
CREATE TABLE login_limits (login VARCHAR(255) PRIMARY KEY, limits VARCHAR(255) NOT NULL);
INSERT INTO login_limits VALUES ('carol@example.org', 'message=1/1h recipient=2/1h'),
                                ('dave@example.org', 'none');
""", database=DBNAME)
mysql_cf = env.path("login-limits.cf")
with open(mysql_cf, "w") as f:
    f.write("hosts = unix:%s\nuser = %s\npassword = %s\ndbname = %s\n"
            "query = SELECT limits FROM login_limits WHERE login = '%%s'\n"
            % (db.socket, USER, PASSWORD, DBNAME))
texthash = env.path("login-limits.txt")
with open(texthash, "w") as f:
    f.write("# login -> limits\ncarol@example.org message=1/1h recipient=2/1h\n"
            "dave@example.org none\n")

sink = env.sink()


def start(extra, name, defaults=False):
    conf = [("listen", "127.0.0.1:%d tls" % free_port()),
            ("listen", "127.0.0.1:%d plain trusted" % free_port()),
            ("mynetworks", "127.0.0.0/8"),
            # the hold rules are 58-hold.py's; here they stay out of the way
            ("hold_limit_hits", "none"), ("hold_client_addresses", "none"),
            ("hold_refused_recipients", "none"), ("hold_burst", "none")]
    over = {k for k, _ in extra}
    conf = [(k, v) for k, v in conf if k not in over] + list(extra)
    return txn.start(env, certs, dv, sink, conf, name, limits=defaults)


def login(d, user):
    c, r = txn.login(d, certs, user, PW[user])
    if r.code != 235:
        raise AssertionError("AUTH as %s: %s" % (user, r))
    return c


def send(c, frm, rcpts):
    return txn.send(c, frm, rcpts, "limits")


def delivered_to(addr):
    return sum(1 for m in sink.messages() if addr in m.rcpts)


# ------------------------------------------------------------ the defaults are on
import json  # noqa: E402
import subprocess  # noqa: E402
sock = env.path("control.sock")
d = start([("control_socket", sock), ("hold_limit_hits", "10/1h")], "submitd-defaults", defaults=True)
a = login(d, "alice@example.com")
rm, rr, fin = send(a, "alice@example.com", ["def@example.net"])
ok(fin is not None and fin.code == 250, "defaults: a message goes", str(fin or rm))
a.close()
p = subprocess.run([os.path.join(os.path.dirname(env.binary), "submitctl"), "-s", sock, "--json",
                    "limits", "alice@example.com"], capture_output=True, text=True, timeout=30)
try:
    lim = {(x["limit"], x["count"], x["period_s"]): x["used"] for x in json.loads(p.stdout)["limits"]}
except (ValueError, KeyError):
    lim = {}
is_(lim, {("login_message_limit", 200, 3600): 1, ("login_message_limit", 1000, 86400): 1,
          ("login_recipient_limit", 1000, 3600): 1, ("login_recipient_limit", 5000, 86400): 1,
          ("domain_message_limit", 5000, 3600): 1, ("domain_message_limit", 20000, 86400): 1,
          ("domain_recipient_limit", 20000, 3600): 1, ("domain_recipient_limit", 100000, 86400): 1},
    "defaults: the README's limits are in force and counted (submitctl limits)")
d.stop()

# ------------------------------------------------------------ login limits
d = start([("login_message_limit", "3/1h"), ("login_recipient_limit", "5/1h"),
           ("domain_message_limit", "none"), ("domain_recipient_limit", "none")], "submitd-login")
a = login(d, "alice@example.com")
for i in range(3):
    rm, rr, fin = send(a, "alice@example.com", ["a%d@example.net" % i])
    ok(fin is not None and fin.code == 250, "alice: message %d of 3 accepted" % (i + 1), str(fin or rm))
rm, rr, fin = send(a, "alice@example.com", ["a3@example.net"])
ok(rm.code == 450 and rm.enhanced == "4.7.1", "alice: the 4th message gets 450 4.7.1 at MAIL", str(rm))
like(str(rm), r"login_message_limit 3/1h reached, try again in \d+ s", "the reply names the limit and when it frees up")
m = re.search(r"try again in (\d+) s", str(rm))
ok(m and 3500 <= int(m.group(1)) <= 3660, "it frees up in an hour, give or take a slot of 1/60 (%s s)" % (m and m.group(1)))
is_(delivered_to("a3@example.net"), 0, "the refused message never reached the downstream")
unlike(sink.log(), r"a3@example\.net", "the downstream never heard of its recipient")
like(d.log(), r"MAIL: login_message_limit 3/1h reached for alice@example\.com", "submitd logs the refusal")

b = login(d, "bob@example.com")
rcpts = ["b%d@example.net" % i for i in range(6)]
rm, rr, fin = send(b, "bob@example.com", rcpts)
ok(rm.code == 250, "bob: MAIL accepted (alice's limit is hers)", str(rm))
ok(all(r.code == 250 for r in rr[:5]), "bob: recipients 1-5 accepted", " / ".join(map(str, rr)))
ok(rr[5].code == 450 and rr[5].enhanced == "4.7.1", "bob: the 6th recipient gets 450 4.7.1", str(rr[5]))
like(str(rr[5]), r"login_recipient_limit 5/1h reached, try again in \d+ s", "the RCPT reply names the limit")
ok(fin is not None and fin.code == 250, "bob: the message goes to the five accepted", str(fin))
is_(delivered_to("b5@example.net"), 0, "the 6th recipient never reached the downstream")
unlike(sink.log(), r"b5@example\.net", "nor did the downstream hear of it")
is_(delivered_to("b4@example.net"), 1, "the 5th did")
rm, rr, fin = send(b, "bob@example.com", ["b6@example.net"])
ok(rm.code == 250 and rr[0].code == 450, "bob: next transaction, still no recipient budget", "%s %s" % (rm, rr))

# SIGHUP keeps the counters
d.proc.send_signal(1)
d.wait_log(r"configuration reloaded", 10)
a2 = login(d, "alice@example.com")
rm, rr, fin = send(a2, "alice@example.com", ["a4@example.net"])
is_(rm.code, 450, "after SIGHUP: alice still over her limit (the store outlives reloads)")
for c in (a, a2, b):
    c.cmd("QUIT")
    c.close()

# trusted listener, no AUTH: per address
c = client(d, "plain", certs)
codes = []
for i in range(3):
    rm, rr, fin = send(c, "app@example.com", ["t%d@example.net" % i])
    codes.append(rm.code)
is_(codes[:2], [250, 250], "trusted client without AUTH: two messages")
d.stop()

d = start([("client_message_limit", "2/1h")], "submitd-client")
c = client(d, "plain", certs)
got = [send(c, "app@example.com", ["u%d@example.net" % i]) for i in range(3)]
ok(got[0][2] and got[0][2].code == 250 and got[1][2] and got[1][2].code == 250, "trusted client: 2 accepted")
ok(got[2][0].code == 450 and "client_message_limit 2/1h" in str(got[2][0]),
   "trusted client: the 3rd gets 450 4.7.1 naming client_message_limit", str(got[2][0]))
is_(delivered_to("u2@example.net"), 0, "and is not delivered")
c.close()
d.stop()

# ------------------------------------------------------------ domain limits
d = start([("login_message_limit", "100/1h"), ("domain_message_limit", "4/1h")], "submitd-domain")
a = login(d, "alice@example.com")
b = login(d, "bob@example.com")
res = [send(a, "alice@example.com", ["d1@example.net"])[0].code,
       send(b, "bob@example.com", ["d2@example.net"])[0].code,
       send(a, "alice@example.com", ["d3@example.net"])[0].code,
       send(b, "bob@example.com", ["d4@example.net"])[0].code]
is_(res, [250] * 4, "example.com: four messages from two logins")
rm = send(b, "bob@example.com", ["d5@example.net"])[0]
ok(rm.code == 450 and "domain_message_limit 4/1h" in str(rm), "the 5th of the domain: 450 naming domain_message_limit", str(rm))
cz = login(d, "erin@example.org")
rm, rr, fin = send(cz, "erin@example.org", ["d6@example.net"])
ok(fin is not None and fin.code == 250, "another domain is unaffected", str(fin or rm))
for c in (a, b, cz):
    c.close()
d.stop()

# ------------------------------------------------------------ overrides
for kind, spec in (("mysql", "mysql:" + mysql_cf), ("texthash", "texthash:" + texthash)):
    d = start([("login_message_limit", "3/1h"), ("login_recipient_limit", "10/1h"),
               ("login_limit_maps", spec)], "submitd-override-" + kind)
    c = login(d, "carol@example.org")
    rm, rr, fin = send(c, "carol@example.org", ["o1@example.net", "o2@example.net", "o3@example.net"])
    ok(rm.code == 250 and [r.code for r in rr] == [250, 250, 450],
       "%s override: carol's recipient limit is 2/1h" % kind, "%s %s" % (rm, rr))
    like(str(rr[2]), r"login_recipient_limit 2/1h", "%s override: the reply names her limit" % kind)
    rm = send(c, "carol@example.org", ["o4@example.net"])[0]
    ok(rm.code == 450 and "login_message_limit 1/1h" in str(rm), "%s override: her 2nd message is refused (1/1h)" % kind, str(rm))
    c.close()
    c = login(d, "dave@example.org")
    codes = [send(c, "dave@example.org", ["o%d@example.net" % i])[0].code for i in range(5)]
    is_(codes, [250] * 5, "%s override 'none': dave has no limit" % kind)
    c.close()
    c = login(d, "erin@example.org")
    codes = [send(c, "erin@example.org", ["e%d@example.net" % i])[0].code for i in range(4)]
    is_(codes, [250, 250, 250, 450], "%s: a login not in the table keeps the default 3/1h" % kind)
    c.close()
    d.stop()

# ------------------------------------------------------------ the window rolls over
d = start([("login_message_limit", "2/3s"), ("login_recipient_limit", "none")], "submitd-roll")
a = login(d, "alice@example.com")
codes = [send(a, "alice@example.com", ["r%d@example.net" % i])[0].code for i in range(2)]
t0 = time.time()
rm = send(a, "alice@example.com", ["r2@example.net"])[0]
ok(codes == [250, 250] and rm.code == 450, "2/3s: two accepted, the third refused", "%s %s" % (codes, rm))
m = re.search(r"try again in (\d+) s", str(rm))
wait = int(m.group(1)) if m else 3
ok(1 <= wait <= 4, "it frees up within the period (%d s)" % wait)
time.sleep(max(0, wait - (time.time() - t0)) + 0.3)
rm, rr, fin = send(a, "alice@example.com", ["r3@example.net"])
ok(fin is not None and fin.code == 250, "after the time the reply gave: accepted again", str(fin or rm))
a.close()
ok(d.wait_idle(), "every session ended")
d.stop()

# ------------------------------------------------------------ bad settings
for key, value in (("login_message_limit", "200"), ("login_message_limit", "0/1h"),
                   ("domain_recipient_limit", "5/1x"), ("hold_burst", "10/100/10m/1d"),
                   ("limit_store", "nosuch")):
    conf = standard_config(certs, sink, [(key, value)])
    p = env.submitd(conf, start=False, name="submitd-bad")
    p.write_config()
    st, out = run([env.binary, "-t", "-c", p.conf])
    ok(st != 0 and key in out, "%s = %s is refused" % (key, value), out[-300:])

done()
