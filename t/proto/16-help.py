#!/usr/bin/env python3
"""HELP lists only what the listener offers in the session's state, as EHLO
does: no STARTTLS or AUTH on a plain listener, STARTTLS (not AUTH) before TLS,
AUTH (not STARTTLS) inside TLS."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

env, certs, sink = setup()
fd = FakeDovecot(env.path("fake-auth.sock")).start()
d = env.submitd(standard_config(certs, sink, [("dovecot_auth_socket", fd.path)]))
ok(wait_dovecot_connected(d, 2), "connected to the fake Dovecot")


def words(r):
    return set(r.text.replace(",", " ").split()) if r.code == 214 else set()


def ehlo_caps(r):
    return {l[4:].split()[0].upper() for l in r.lines[1:] if len(l) > 4}


c = SMTP(*d.addr("plain"))
caps = ehlo_caps(c.ehlo())
w = words(c.cmd("HELP"))
ok("MAIL" in w and "STARTTLS" not in w and "AUTH" not in w,
   "plain listener: HELP lists neither STARTTLS nor AUTH (%s)" % sorted(w))
ok("STARTTLS" not in caps and "AUTH" not in caps, "and EHLO agrees")
c.close()

c = SMTP(*d.addr("starttls"))
caps = ehlo_caps(c.ehlo())
w = words(c.cmd("HELP"))
ok("STARTTLS" in w and "AUTH" not in w, "before STARTTLS: STARTTLS, not AUTH (%s)" % sorted(w))
ok("STARTTLS" in caps and "AUTH" not in caps, "and EHLO agrees")
c.starttls()
caps = ehlo_caps(c.ehlo())
w = words(c.cmd("HELP"))
ok("AUTH" in w and "STARTTLS" not in w, "inside TLS: AUTH, not STARTTLS (%s)" % sorted(w))
ok("AUTH" in caps and "STARTTLS" not in caps, "and EHLO agrees")
c.close()
done()
