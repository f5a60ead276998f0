#!/usr/bin/env python3
"""hash: and btree: tables, the Berkeley DB files Postfix's postmap writes
(src/lookup/table_db.c, docs/restrictions.md): a table built for Postfix
with the real postmap works in submitd as it is.

- check_sender_access over hash: files made with postmap's default, -N
  (keys with a trailing NUL) and -n (without), and over btree:, gives the
  replies the texthash: source gives;
- keys stored in upper case (postmap -f) are found, as every lookup is
  lower-cased;
- a file rewritten by postmap is read again on SIGHUP, not before;
- a missing .db is refused at load with a hint to run postmap, and a hash:
  name on a btree file is refused.
"""
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403
import postfix as postfixmod  # noqa: E402

if not os.path.exists(postfixmod.POSTMAP):
    skip_all("needs postfix's postmap (scripts/deps.sh)")

env = Env()
env.require_binary()
certs = env.certs()
sink = env.sink()


ACCESS_TEXT = """# sender access, as a Postfix user writes it
blocked@example.com      REJECT
Shout@Example.COM        REJECT loud
example.org              550 5.7.0 go away
deferred.example         DEFER
ok@example.net           OK
"""


def postmap(kind, name, *flags, text=ACCESS_TEXT):
    path = env.path(name)
    with open(path, "w") as f:
        f.write(text)
    rc, errs = postfixmod.postmap(env, "%s:%s" % (kind, path), *flags)
    ok(rc == 0 and os.path.exists(path + ".db"),
       "postmap %s %s:%s" % (" ".join(flags), kind, name), errs)
    return path


TABLES = [
    ("hash", postmap("hash", "access-default")),
    ("hash", postmap("hash", "access-nul", "-N")),
    ("hash", postmap("hash", "access-nonul", "-n")),
    ("hash", postmap("hash", "access-nofold", "-f")),
    ("btree", postmap("btree", "access-btree")),
]

CASES = [
    ("a@example.com", r"^250 "),
    ("blocked@example.com", r"^554 5\.7\.1 <blocked@example\.com>: Sender address rejected: Access denied$"),
    ("BLOCKED@example.com", r"^554 5\.7\.1 <BLOCKED@example\.com>: Sender address rejected: Access denied$"),
    ("shout@example.com", r"^554 5\.7\.1 <shout@example\.com>: Sender address rejected: loud$"),
    ("someone@example.org", r"^550 5\.7\.0 <someone@example\.org>: Sender address rejected: go away$"),
    ("x@deferred.example", r"^450 4\.7\.1 <x@deferred\.example>: Sender address rejected: Access denied$"),
    ("ok@example.net", r"^250 "),
]


def mail_from(d, sender):
    c = SMTP(*d.addr("plain"))
    c.ehlo()
    r = c.cmd("MAIL FROM:<%s>" % sender)
    c.cmd("QUIT")
    c.close()
    return str(r)


def config(spec):
    return standard_config(certs, sink, extra=[
        ("mynetworks", "127.0.0.1/32"),
        ("sender_restrictions", "check_sender_access %s" % spec),
    ])


texthash_d = env.submitd(config("texthash:" + env.path("access-default")), name="submitd-text")
want = {s: mail_from(texthash_d, s) for s, _ in CASES}
texthash_d.stop()

for kind, path in TABLES:
    spec = "%s:%s" % (kind, path)
    d = env.submitd(config(spec), name="submitd-" + os.path.basename(path))
    for sender, pat in CASES:
        got = mail_from(d, sender)
        like(got, pat, "%s (%s): MAIL FROM:<%s>" % (os.path.basename(path), kind, sender))
        is_(got, want[sender], "... the same reply as the texthash: source")
    d.stop()

# A rewritten file counts from the next SIGHUP on, not before.
path = TABLES[0][1]
d = env.submitd(config("hash:" + path), name="submitd-reload")
like(mail_from(d, "new@example.com"), r"^250 ", "before: new@example.com is not listed")
postmap("hash", os.path.basename(path), text=ACCESS_TEXT + "new@example.com REJECT listed now\n")
like(mail_from(d, "new@example.com"), r"^250 ", "postmap alone changes nothing")
os.kill(d.proc.pid, signal.SIGHUP)
ok(d.wait_log(r"configuration reloaded", 10), "SIGHUP: configuration reloaded", d.log()[-2000:])
like(mail_from(d, "new@example.com"), r"^554 5\.7\.1 .*: listed now$", "after SIGHUP: the new line")
d.stop()


def check(spec):
    d = env.submitd(config(spec), name="submitd-check", start=False)
    d.write_config()
    r = subprocess.run([env.binary, "-t", "-c", d.conf], capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


rc, out = check("hash:" + env.path("never-postmapped"))
ok(rc != 0, "submitd -t: a hash: table without its .db is refused")
like(out, r"never-postmapped\.db: No such file or directory \(run postmap on the source file\)",
     "... naming the file and the fix")
rc, out = check("hash:" + TABLES[4][1])
ok(rc != 0, "submitd -t: hash: on a btree file is refused")
like(out, r"not a hash file", "... saying so")
rc, out = check("btree:" + TABLES[4][1])
ok(rc == 0, "submitd -t: btree: on the btree file loads", out)

done()
