#!/usr/bin/env python3
"""`submitd -t -u LOGIN [-s ADDRESS]` proves a login end to end: a real
AUTH PLAIN through Dovecot (password on standard input, never on the
command line), then a real sender-ownership lookup for that login, and
says what failed in words an admin can act on: the socket, the mechanism
list, a refused password, an empty table answer, an owner that is someone
else.

Runs against a real private Dovecot (t/lib/dovecot.py) in both deployments
(passwd-file passdb, and the ISPmail guide's SQL passdb) and a texthash:
sender_login_maps."""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

PASSDB = variants(PASSDBS)   # the passwd-file Dovecot and the ISPmail guide's SQL one

ALICE, ALICE_PW = "alice@example.com", "alice-secret"
BOB, BOB_PW = "bob@example.com", "bob-secret"

env, certs, sink = setup()
dv = private_dovecot(env, PASSDB, failure_delay="0")

owners = env.path("sender-login.txt")
with open(owners, "w") as f:
    f.write("alice@example.com alice@example.com\n"
            "shared@example.com alice@example.com, bob@example.com\n"
            "boss@example.com bob@example.com\n")


def conf(**over):
    pairs = [("myhostname", MYHOST), ("listen", "127.0.0.1:%d tls" % free_port()),
             ("tls_cert_file", certs.fullchain), ("tls_key_file", certs.key),
             ("relayhost", sink.relayhost),
             ("dovecot_auth_socket", dv.socket),
             ("sender_login_maps", "texthash:" + owners)]
    pairs = [(k, over.pop(k, v)) for k, v in pairs] + list(over.items())
    path = env.path("check-%d.conf" % free_port())
    with open(path, "w") as f:
        for k, v in pairs:
            if v is not None:
                f.write("%s = %s\n" % (k, v))
    return path


def check(path, *args, password=""):
    r = subprocess.run([env.binary, "-c", path, "-t"] + list(args), input=password + "\n",
                       capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


good = conf()
rc, out = check(good, "-u", ALICE, password=ALICE_PW)
ok(rc == 0, "right password, own address: exit 0", out)
like(out, r"login alice@example\.com: ok, Dovecot's user name is alice@example\.com", "the login is proven")
like(out, r"sender alice@example\.com: ok, owned by alice@example\.com", "and its address is owned")
unlike(out, re.escape(ALICE_PW), "the password is never printed")

rc, out = check(good, "-u", ALICE, "-s", "shared@example.com", password=ALICE_PW)
ok(rc == 0 and "sender shared@example.com: ok" in out, "-s: a shared address owned among others", out)

rc, out = check(good, "-u", ALICE, password="Wrong-password")
ok(rc == 1, "wrong password: exit 1", out)
like(out, r"login alice@example\.com: FAILED: Dovecot refused it.*doveadm auth test alice@example\.com",
     "names the refusal and the command to look further")
unlike(out, r"Wrong-password", "the wrong password is never printed either")

rc, out = check(good, "-u", ALICE, "-s", "boss@example.com", password=ALICE_PW)
ok(rc == 1, "someone else's address: exit 1", out)
like(out, r'sender boss@example\.com: FAILED: sender_login_maps says it belongs to "bob@example\.com", not to '
     r"the login alice@example\.com", "names the owner the table gave")

rc, out = check(good, "-u", ALICE, "-s", "nobody@example.com", password=ALICE_PW)
ok(rc == 1, "an address the table does not list: exit 1", out)
like(out, r"sender nobody@example\.com: FAILED: sender_login_maps has no entry for it \(an empty SQL result\?\)",
     "says the table had no entry")

missing = conf(dovecot_auth_socket=env.path("no-such.sock"))
rc, out = check(missing, "-u", ALICE, password=ALICE_PW)
ok(rc == 1, "wrong socket path: exit 1", out)
like(out, r"no-such\.sock: FAILED: no auth handshake", "names the socket that did not answer")

nomap = conf(sender_login_maps=None)
rc, out = check(nomap, "-u", ALICE, password=ALICE_PW)
ok(rc == 0 and "not checked: sender_login_maps is not set" in out, "no map: the login is proven, ownership "
   "reported as not checked", out)

r = subprocess.run([env.binary, "-c", good, "-u", ALICE], capture_output=True, text=True, input="x\n")
is_(r.returncode, 2, "-u without -t is a usage error")
rc, out = check(good, "-u", ALICE, password="")
ok(rc == 1, "an empty password is refused by Dovecot, not crashed on", out)
r = subprocess.run([env.binary, "-c", good, "-t", "-u", ALICE], capture_output=True, text=True,
                   stdin=subprocess.DEVNULL, timeout=60)
ok(r.returncode == 1 and "no password on standard input" in r.stdout, "no password at all: said so", r.stdout)

done()
