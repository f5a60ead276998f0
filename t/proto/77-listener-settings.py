#!/usr/bin/env python3
"""Settings per listener (Postfix's master.cf "-o"): KEY=VALUE on a listen
line applies to that listener's sessions only.

The deployment of the classic guides: Roundcube on localhost sends through
a trusted listener without logging in (Postfix's port 25 with mynetworks);
587/465 hold logged-in users to their addresses (the guide's -o
smtpd_sender_restrictions=reject_sender_login_mismatch on submission only).

  - defaults: 50 unauthenticated messages from mynetworks on a trusted
    listener, from the address of a user in the SQL map, are relayed;
    the same client on a non-trusted listener is refused (530);
  - a listen line that sets sender_login_policy switches the check on for
    that listener only (553 ... not logged in);
  - logged-in users (465) are held to the map as before;
  - other keys per listener: message_size_limit, header_from_policy;
  - settings that cannot be per listener, unknown keys and bad values are
    refused at load, naming the listener."""
import base64
import os
import re
import signal
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import harness  # noqa: E402
from harness import *  # noqa: E402,F401,F403
from dovecot import Dovecot  # noqa: E402
from mariadb import DBNAME, PASSWORD, USER, MariaDB  # noqa: E402

env, certs, sink = setup()
os.chmod(env.dir, 0o711)  # Dovecot's auth process (user dovecot) reads its files in here
dv = Dovecot(dir=env.path("dovecot"), users={"john@example.org": ("john-secret", "SHA512-CRYPT", "")},
             failure_delay="0")
dv.start()
harness._cleanups.append(lambda: dv.stop(remove=False))
db = MariaDB(env.path("mariadb"))
harness._cleanups.append(db.stop)
db.start()
with open(os.path.join(harness.TOP, "conf", "mysql-sender-login.cf")) as f:
    QUERY = [l.split("=", 1)[1].strip() for l in f if re.match(r"\s*query\s*=", l)][-1]
cf = env.path("mysql-sender-login.cf")
with open(cf, "w") as f:
    f.write("hosts = unix:%s\nuser = %s\npassword = %s\ndbname = %s\nquery = %s\n"
            % (db.socket, USER, PASSWORD, DBNAME, QUERY))

P = {k: free_port() for k in ("sub", "tls", "web", "webcheck", "untrusted", "small")}
d = env.submitd([
    ("myhostname", MYHOST),
    ("listen", "127.0.0.1:%d starttls" % P["sub"]),
    ("listen", "127.0.0.1:%d tls" % P["tls"]),
    ("listen", "127.0.0.1:%d plain trusted" % P["web"]),
    ("listen", "127.0.0.1:%d plain trusted sender_login_policy=reject_sender_login_mismatch" % P["webcheck"]),
    ("listen", "127.0.0.1:%d plain" % P["untrusted"]),
    ("listen", "127.0.0.1:%d starttls message_size_limit=2048 header_from_policy=off" % P["small"]),
    ("tls_cert_file", certs.fullchain), ("tls_key_file", certs.key),
    ("mynetworks", "127.0.0.1/32"),
    ("relayhost", sink.relayhost),
    ("dovecot_auth_socket", dv.socket),
    ("sender_login_maps", "mysql:" + cf),
    ("workers", "2"),
])
ok(wait_dovecot_connected(d, 2), "submitd is up with Dovecot")


def plain(port):
    c = SMTP("127.0.0.1", port)
    c.ehlo()
    return c


def send(c, sender, rcpt="friend@example.net", body=None, frm=None):
    r = c.cmd("MAIL FROM:<%s>" % sender)
    if r.code != 250:
        c.cmd("RSET")
        return r.code
    r = c.cmd("RCPT TO:<%s>" % rcpt)
    if r.code != 250:
        c.cmd("RSET")
        return r.code
    r = c.cmd("DATA")
    if r.code != 354:
        return r.code
    msg = body or ("From: %s\r\nTo: %s\r\nSubject: t\r\n\r\nhello\r\n" % (frm or sender, rcpt))
    c.send(msg.replace("\r\n.", "\r\n..") + ".\r\n")
    return c.reply(30).code


# ---------------------------------------------------------------- webmail, defaults
before = sink.count()
c = plain(P["web"])
codes = [send(c, "john@example.org") for _ in range(50)]
c.cmd("QUIT")
is_(codes, [250] * 50, "trusted listener, defaults: 50 unauthenticated messages from a user's own "
    "address (in the SQL map) are relayed")
ok(sink.wait_count(before + 50), "and all 50 reached the downstream")
c = plain(P["web"])
is_(send(c, "alice@example.com"), 250, "trusted listener: any sender of a trusted client is relayed "
    "(as Postfix's port 25 with permit_mynetworks)")
c.cmd("QUIT")

c = plain(P["untrusted"])
r = c.cmd("MAIL FROM:<john@example.org>")
is_(r.code, 530, "the same client on a listener not marked trusted: 530, authentication required")
c.cmd("QUIT")

# ---------------------------------------------------------------- switched on for one listener
c = plain(P["webcheck"])
r = c.cmd("MAIL FROM:<john@example.org>")
ok(r.code == 553 and "not logged in" in r.text,
   "listen ... sender_login_policy=reject_sender_login_mismatch: 553 not logged in", str(r))
r = c.cmd("MAIL FROM:<stranger@elsewhere.example>")
is_(r.code, 250, "an address nobody owns passes that policy unauthenticated (Postfix semantics)")
c.cmd("QUIT")

# ---------------------------------------------------------------- logged-in users are always checked
c = client(d, "tls", certs)
r = c.cmd("AUTH PLAIN " + base64.b64encode(b"\0john@example.org\0john-secret").decode())
is_(r.code, 235, "john logs in on 465")
is_(send(c, "alice@example.com"), 553, "on 465 john may not send as alice (global policy)")
is_(send(c, "john@example.org"), 250, "but as himself")
c.close()

# ---------------------------------------------------------------- other keys per listener
c = SMTP("127.0.0.1", P["small"])
r = c.ehlo()
ok(any(re.match(r"SIZE 2048$", l[4:]) for l in r.lines), "message_size_limit=2048 on one listener: "
   "its EHLO says SIZE 2048", r.lines)
c.close()
c = SMTP("127.0.0.1", P["sub"])
r = c.ehlo()
ok(any(re.match(r"SIZE 10240000$", l[4:]) for l in r.lines), "the others keep the global SIZE", r.lines)
c.close()

# ---------------------------------------------------------------- refused at load
def check(listen_line):
    path = env.path("bad-%d.conf" % free_port())
    with open(path, "w") as f:
        f.write("listen = %s\ntls_cert_file = %s\ntls_key_file = %s\nrelayhost = %s\n"
                % (listen_line, certs.fullchain, certs.key, sink.relayhost))
    r = subprocess.run([env.binary, "-c", path, "-t"], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


rc, out = check("127.0.0.1:2525 plain workers=4")
ok(rc == 1 and 'the setting "workers" cannot be set for one listener' in out, "a process-wide key is "
   "refused on a listen line", out)
rc, out = check("127.0.0.1:2525 plain auth_timeout=5s")
ok(rc == 1 and 'the setting "auth_timeout" cannot be set for one listener' in out, "auth_timeout "
   "(one Dovecot client per worker) is process-wide", out)
rc, out = check("127.0.0.1:2525 plain\n\0sender_login_maps = texthash:/x")
ok(rc == 1 and "NUL byte in the file" in out, "a NUL byte in the file is refused (the lines after it "
   "would not apply)", out)
rc, out = check("127.0.0.1:2525 plain no_such_key=1")
ok(rc == 1 and 'unknown setting "no_such_key"' in out, "an unknown key is refused", out)
rc, out = check("127.0.0.1:2525 plain sender_login_policy=bogus")
ok(rc == 1 and "listen 127.0.0.1:2525" in out and "bogus" in out, "a bad value is refused, naming "
   "the listener", out)
rc, out = check("127.0.0.1:2525 plain message_size_limit=12")
ok(rc == 1 and "listen 127.0.0.1:2525" in out and "out of range" in out, "an out-of-range value too",
   out)
rc, out = check("127.0.0.1:2525 plain trusted mynetworks=10.0.0.0/8 max_connections_per_ip=500")
ok("syntax, certificates and tables: ok" in out, "mynetworks and max_connections_per_ip per listener "
   "are accepted", out)

# ---------------------------------------------------------------- reload keeps them
with open(d.conf) as f:
    text = f.read()
with open(d.conf, "w") as f:
    f.write(text.replace("message_size_limit=2048", "message_size_limit=4096"))
os.kill(d.proc.pid, signal.SIGHUP)
ok(wait_for(lambda: "configuration reloaded" in d.log(), 10), "reload with a changed listener setting")
c = SMTP("127.0.0.1", P["small"])
r = c.ehlo()
ok(any(re.match(r"SIZE 4096$", l[4:]) for l in r.lines), "after reload the listener's new value applies",
   r.lines)
c.close()
c = plain(P["web"])
is_(send(c, "john@example.org"), 250, "webmail still relayed after the reload")
c.cmd("QUIT")

done()
