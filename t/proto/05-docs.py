#!/usr/bin/env python3
"""Documentation follows the code: every configuration key in the table of
src/core/config.c appears in README.md's key table (generated, must not be
stale), in the annotated conf/submitd.conf, and in the man page when there
is one; and the annotated example parses (`submitd -t`)."""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import ok, done, Env  # noqa: E402

TOP = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(TOP, "scripts"))
import importlib.util  # noqa: E402

spec = importlib.util.spec_from_file_location("config_keys", os.path.join(TOP, "scripts", "config-keys.py"))
ck = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ck)

keys = [k for k, _, _ in ck.keys()]
ok(len(keys) > 30, "the key table of config.c was read (%d keys)" % len(keys))
ok(ck.main(["--check"]) == 0, "README.md's key table matches src/core/config.c")

conf = open(os.path.join(TOP, "conf", "submitd.conf")).read()
missing = [k for k in keys if not re.search(r"^#?\s*%s\s*=" % re.escape(k), conf, re.M)]
ok(not missing, "conf/submitd.conf shows every key (missing: %s)" % ", ".join(missing))

man = os.path.join(TOP, "man", "submitd.conf.5")
if os.path.exists(man):
    text = open(man).read().replace("\\_", "_").replace("\\-", "-")
    missing = [k for k in keys if k not in text]
    ok(not missing, "submitd.conf(5) documents every key (missing: %s)" % ", ".join(missing))

# The annotated example is a real configuration: with its paths pointed at
# files that exist, `submitd -t` accepts it.
submitd = os.environ.get("SUBMITD")
if submitd:
    env = Env()   # its temp dir (the certificates' private keys too) goes at exit
    certs = env.certs()
    text = conf.replace("/etc/letsencrypt/live/mail.example.org/fullchain.pem", certs.cert) \
               .replace("/etc/letsencrypt/live/mail.example.org/privkey.pem", certs.key) \
               .replace("/etc/submitd/mysql-sender-login.cf", os.path.join(TOP, "conf", "mysql-sender-login.cf"))
    with open(env.path("submitd.conf"), "w") as f:
        f.write(text)
    r = subprocess.run([submitd, "-c", f.name, "-t"], capture_output=True, text=True, timeout=60)
    # The example names a Dovecot socket and a relay that are not running
    # here: -t must accept the file and report exactly those neighbours.
    ok("syntax, certificates and tables: ok" in r.stdout,
       "submitd -t accepts conf/submitd.conf (%s)" % (r.stdout + r.stderr).strip())
    ok("dovecot_auth_socket /run/dovecot/auth-submitd: FAILED" in r.stdout and r.returncode == 1,
       "submitd -t reports the missing Dovecot socket and exits 1")
    # ... and a broken one is refused with file and line
    with open(f.name, "a") as g:
        g.write("no_such_key = 1\n")
    r = subprocess.run([submitd, "-c", f.name, "-t"], capture_output=True, text=True)
    nlines = len(open(f.name).read().splitlines())
    ok(r.returncode != 0 and ("%s:%d: unknown key" % (f.name, nlines)) in r.stderr,
       "submitd -t names file and line of an unknown key (%s)" % r.stderr.strip())
done()
