"""One mail transaction over a harness.SMTP client, for the tests of limits
and holds (t/proto/57-login-limits.py, t/proto/58-hold.py)."""
import os

from harness import make_message, stuff

_n = [0]


def send(c, frm, rcpts, tag="txn"):
    """MAIL, one RCPT per address, DATA and a message. Returns (MAIL reply,
    [RCPT replies], final reply or None); stops at the first 421 (the
    session ended), which is then the final reply."""
    _n[0] += 1
    rm = c.cmd("MAIL FROM:<%s>" % frm)
    if rm.code != 250:
        return rm, [], None
    rr = []
    for a in rcpts:
        rr.append(c.cmd("RCPT TO:<%s>" % a))
        if rr[-1].code == 421:
            return rm, rr, rr[-1]
    if not any(r.code == 250 for r in rr):
        c.cmd("RSET")
        return rm, rr, None
    r = c.cmd("DATA")
    if r.code != 354:
        return rm, rr, r
    c.send(stuff(make_message(subject="%s %d %d" % (tag, os.getpid(), _n[0]))))
    return rm, rr, c.reply()
