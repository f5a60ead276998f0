#!/usr/bin/env python3
"""Lines copied from a Postfix main.cf load as they are written
(src/core/config_file.c, README "Configuration"):

- a value continued on lines that start with white space (the LibreLAMP
  guide's restriction lists), with comments and blank lines between;
- $config_directory, ${config_directory} and $(config_directory): the
  directory of submitd's configuration file, so
  "check_sender_access hash:${config_directory}/rbl_override" names a
  table next to it (made with the real postmap);
- the guide's "basic spam reduction" block: strict_rfc821_envelopes = yes,
  disable_vrfy_command = yes, unknown_address_reject_code = 554,
  unknown_hostname_reject_code = 554, unknown_client_reject_code = 554,
  helo_required = yes (smtpd_helo_required's name here);
- what is refused, with the file and line: a first line that starts with
  white space, a joined line over 8 KiB, helo_required = no.
"""
import os
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

BLOCK = [
    ("strict_rfc821_envelopes", "yes"),
    ("disable_vrfy_command", "yes"),
    ("unknown_address_reject_code", "554"),
    ("unknown_hostname_reject_code", "554"),
    ("unknown_client_reject_code", "554"),
    ("helo_required", "yes"),
    ("mynetworks", "127.0.0.1/32"),
    # the value goes on over the next lines, as in the guide
    ("recipient_restrictions", "\n         check_sender_access hash:${config_directory}/rbl_override,"
                               "\n\n# a comment between\n"
                               "\t permit_mynetworks,\n    reject"),
    ("sender_restrictions", "reject_non_fqdn_sender,\n  check_sender_access "
                            "texthash:$(config_directory)/senders"),
]
d = env.submitd(standard_config(certs, sink, extra=BLOCK), start=False)
with open(os.path.join(d.dir, "rbl_override"), "w") as f:
    f.write("blocked@example.com REJECT listed in rbl_override\n")
rc, errs = postfixmod.postmap(env, "hash:" + os.path.join(d.dir, "rbl_override"))
ok(rc == 0, "postmap hash:rbl_override", errs)
with open(os.path.join(d.dir, "senders"), "w") as f:
    f.write("shout@example.com REJECT no shouting\n")
d.start()


def reply(line, pre=("EHLO client.test.example",)):
    c = SMTP(*d.addr("plain"))
    for p in pre:
        c.cmd(p)
    r = c.cmd(line)
    c.cmd("QUIT")
    c.close()
    return str(r)


def rcpt_after(sender):
    c = SMTP(*d.addr("plain"))
    c.ehlo()
    c.cmd("MAIL FROM:<%s>" % sender)
    r = c.cmd("RCPT TO:<someone@example.net>")
    c.cmd("QUIT")
    c.close()
    return str(r)


like(rcpt_after("blocked@example.com"),
     r"^554 5\.7\.1 <blocked@example\.com>: Sender address rejected: listed in rbl_override$",
     "continued recipient_restrictions: hash:${config_directory}/rbl_override is the table "
     "next to the configuration")
like(rcpt_after("a@example.com"), r"^250 ", "... the next continued item (permit_mynetworks) "
     "lets a listed client through")
like(reply("MAIL FROM:<shout@example.com>"),
     r"^554 5\.7\.1 <shout@example\.com>: Sender address rejected: no shouting$",
     "$(config_directory) in a continued sender_restrictions")
like(reply("VRFY postmaster"), r"^502 5\.5\.1 VRFY command is disabled$", "disable_vrfy_command = yes")
like(reply("MAIL FROM:<a@example.com>", pre=()), r"^503 5\.5\.1 Error: send HELO/EHLO first$",
     "helo_required = yes: HELO first")
like(reply("MAIL FROM:a@example.com"), r"^501 5\.1\.7 Bad sender address syntax$",
     "strict_rfc821_envelopes = yes: <> required")
d.stop()


def check(text, name):
    path = env.path(name)
    with open(path, "w") as f:
        f.write(text)
    r = subprocess.run([env.binary, "-t", "-c", path], capture_output=True, text=True,
                       timeout=60)
    return r.returncode, r.stdout + r.stderr


rc, out = check("  listen = 127.0.0.1:2587 plain\n", "leading.conf")
ok(rc != 0, "a first line that starts with white space is refused")
like(out, r"leading\.conf:1: a line that starts with white space continues", "... naming the line")
rc, out = check("listen = 127.0.0.1:2587 plain\n# x\nsender_restrictions = reject_non_fqdn_sender\n" +
                "".join("  , reject_non_fqdn_sender\n" for _ in range(400)), "long.conf")
ok(rc != 0, "a joined line over 8 KiB is refused, not cut")
like(out, r"long\.conf:3: line too long", "... naming the line it began on")
rc, out = check("listen = 127.0.0.1:2587 plain\nhelo_required = no\n", "helo.conf")
ok(rc != 0, "helo_required = no is refused")
like(out, r"helo\.conf:2: helo_required: always on in submitd", "... saying why")
rc, out = check("listen = 127.0.0.1:2587 plain\nstrict_rfc821_envelopes = yes\n"
                "unknown_client_reject_code = 700\n", "code.conf")
ok(rc != 0 and "code.conf:3" in out, "unknown_client_reject_code outside 400-599 is refused", out)
done()
