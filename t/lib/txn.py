"""One mail transaction over a harness.SMTP client, for the tests of limits
and holds (t/proto/57-login-limits.py, t/proto/58-hold.py)."""
import os
import subprocess

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


def start(env, certs, dv, sink, conf, name, limits=False):
    """A submitd with an implicit-TLS listener for AUTH through Dovecot dv,
    relaying to sink; the pairs in conf replace the base ones of the same
    key (listen included). Waits for both workers' Dovecot connections."""
    from harness import MYHOST, free_port, wait_for
    base = [("myhostname", MYHOST),
            ("listen", "127.0.0.1:%d tls" % free_port()),
            ("tls_cert_file", certs.fullchain), ("tls_key_file", certs.key),
            ("relayhost", sink.relayhost),
            ("dovecot_auth_socket", dv.socket),
            ("workers", "2"),
            ("error_limit", "1000")]
    over = {k for k, _ in conf}
    d = env.submitd([(k, v) for k, v in base if k not in over] + list(conf), name=name,
                    limits=limits)
    wait_for(lambda: d.log().count("connected, mechanisms") >= 2, 10)
    return d


def login(d, certs, user, password, source=None):
    """An AUTH PLAIN session on d's tls listener (from source, if given):
    (client, AUTH reply)."""
    from harness import b64, client, client_from
    c = client_from(source, d, "tls", certs) if source else client(d, "tls", certs)
    return c, c.cmd("AUTH PLAIN " + b64("\0%s\0%s" % (user, password)))


def submitctl(env, sock, *args):
    """Runs the built submitctl against control socket sock: (exit status,
    its output)."""
    exe = os.path.join(os.path.dirname(env.binary), "submitctl")
    p = subprocess.run([exe, "-s", sock] + list(args), capture_output=True, text=True, timeout=30)
    return p.returncode, (p.stdout + p.stderr).strip()
