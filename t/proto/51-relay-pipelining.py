#!/usr/bin/env python3
"""Pipelined relaying (issue 18, docs/pipelining.md): with a downstream that
offers PIPELINING, MAIL goes out with the first RCPT, and DATA behind the
last RCPT when the client pipelined its own DATA. A counting downstream
shows the round trips per message (2 for a pipelining client, 3 for one
that waits, 4 with relay_pipelining = no or a downstream without
PIPELINING). Every recipient still gets the downstream's own verdict: a
refused MAIL is the verdict of the RCPT sent with it, never a 250; a
downstream that hangs up mid-pipeline, answers a byte at a time or sends
more replies than commands never turns into a wrong verdict or a 250 for
a message it does not have (docs/design.md invariant 2). The real Postfix
delivers with pipelining on and off."""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403
import postfix as pfmod  # noqa: E402

env = Env()
env.require_binary()
certs = env.certs()

QUIET = 0.3  # no byte for this long: submitd is waiting for our replies


class Counting:
    """A downstream that answers like a pipelining server and counts the
    round trips of each transaction: a round trip ends each time it has
    read everything submitd sent and submitd waits (QUIET) for replies.
    replies(cmd) gives the reply for a command (None: the default)."""

    def __init__(self, pipelining=True, replies=None, byte_at_a_time=False, after=None):
        self.pipelining = pipelining
        self.replies = replies or (lambda cmd: None)
        self.byte_at_a_time = byte_at_a_time
        self.after = after        # after(cmds_in_batch) -> extra bytes, or "close"
        self.port = free_port()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(8)
        self.rounds = []          # per transaction: batches of commands
        self.delivered = 0
        accept_loop(self.sock, self.one)

    def send(self, c, data):
        if self.byte_at_a_time:
            for i in range(len(data)):
                c.sendall(data[i:i + 1])
                time.sleep(0.002)
        else:
            c.sendall(data)

    def batch(self, c, buf):
        """Reads until submitd stops sending; returns the complete lines."""
        c.settimeout(None)
        while b"\r\n" not in buf[0]:
            d = c.recv(65536)
            if not d:
                raise EOFError
            buf[0] += d
        c.settimeout(QUIET)
        while True:
            try:
                d = c.recv(65536)
            except socket.timeout:
                break
            if not d:
                break
            buf[0] += d
        *lines, buf[0] = buf[0].split(b"\r\n")
        return lines

    def one(self, c):
        try:
            self.talk(c)
        except (OSError, EOFError):
            pass
        finally:
            c.close()

    def talk(self, c):
        buf = [b""]
        c.sendall(b"220 counting\r\n")
        txn = None
        in_data = False
        while True:
            lines = self.batch(c, buf)
            out = b""
            cmds = []
            for l in lines:
                if in_data:
                    if l == b".":
                        in_data = False
                        self.delivered += 1
                        out += b"250 2.0.0 queued\r\n"
                        cmds.append(".")
                    continue
                u = l.upper()
                verb = u.split(b" ")[0].split(b":")[0].decode()
                cmds.append(verb)
                r = self.replies(l)
                if verb == "EHLO":
                    out += b"250-counting\r\n" + (b"250-PIPELINING\r\n" if self.pipelining
                                                 else b"") + b"250 8BITMIME\r\n"
                elif verb == "QUIT":
                    c.sendall(out + b"221 bye\r\n")
                    return
                elif r is not None:
                    out += r
                elif verb == "DATA":
                    out += b"354 go\r\n"
                    in_data = True
                else:
                    out += b"250 ok\r\n"
                if verb == "DATA" and r is not None and r.startswith(b"354"):
                    in_data = True
            if "MAIL" in cmds:
                txn = []
                self.rounds.append(txn)
            if txn is not None and cmds and cmds != ["RSET"]:
                txn.append(cmds)
            extra = self.after(cmds) if self.after else None
            if extra == "close":
                if out:
                    self.send(c, out.split(b"\r\n")[0] + b"\r\n")
                return
            self.send(c, out + (extra or b""))


def config(fake, extra=()):
    return standard_config(certs, None, [("relayhost", "[127.0.0.1]:%d" % fake.port),
                                         ("relay_timeout", "5s")] + list(extra))


def pipelined_send(c, mail_from, rcpts, msg):
    """MAIL, RCPT..., DATA in one write, as a pipelining client does."""
    cmds = "MAIL FROM:<%s>\r\n" % mail_from + "".join("RCPT TO:<%s>\r\n" % r for r in rcpts)
    c.send((cmds + "DATA\r\n").encode())
    out = [c.reply() for _ in range(len(rcpts) + 2)]
    if out[-1].code == 354:
        c.send(stuff(msg))
        out.append(c.reply())
    return out


def codes(out):
    return [r.code for r in out]


def scenario(name, fake, pipelined=True, rcpts=("b@example.net",), extra=()):
    d = env.submitd(config(fake, extra), name=name)
    c = client(d, "plain", certs)
    msg = make_message(subject=name)
    if pipelined:
        out = pipelined_send(c, "a@example.com", list(rcpts), msg)
    else:
        out = c.send_message("a@example.com", list(rcpts), stuff(msg))
    c.cmd("QUIT")
    c.close()
    return d, out


def rounds(fake):
    return len(fake.rounds[0]) if fake.rounds else -1


# ---------------------------------------------------------- round trips
for name, fake, pipelined, extra, want, what in (
        ("pipelined-client", Counting(), True, [], 2,
         "pipelining client: 2 round trips per message (MAIL+RCPT+DATA, then the dot)"),
        ("waiting-client", Counting(), False, [], 3,
         "client without pipelining: 3 round trips (MAIL+RCPT, DATA, the dot)"),
        ("pipelining-off", Counting(), True, [("relay_pipelining", "no")], 4,
         "relay_pipelining = no: 4 round trips, one per command"),
        ("no-pipelining-offered", Counting(pipelining=False), True, [], 4,
         "downstream without PIPELINING: one command at a time"),
        ("byte-at-a-time", Counting(byte_at_a_time=True), True, [], 2,
         "replies a byte at a time: still 2 round trips")):
    d, out = scenario(name, fake, pipelined=pipelined, extra=extra)
    is_(codes(out), [250, 250, 354, 250], "%s: delivered" % name)
    is_(rounds(fake), want, what)
    if name == "pipelined-client":
        is_(fake.rounds[0][0] if fake.rounds else None, ["MAIL", "RCPT", "DATA"],
            "MAIL, RCPT, DATA in one write")
    d.stop()

# two recipients, the second refused: each gets its own verdict
f = Counting(replies=lambda l: b"550 5.1.1 no such user\r\n" if b"<c@" in l else None)
d, out = scenario("two-rcpts", f, rcpts=("b@example.net", "c@example.net"))
is_(codes(out), [250, 250, 550, 354, 250], "second recipient refused downstream: 550 for it only")
is_(rounds(f), 3, "two recipients: MAIL+RCPT, RCPT+DATA, the dot")
is_(f.delivered, 1, "delivered once")
d.stop()

# ---------------------------------------------------------- a refused MAIL
f = Counting(replies=lambda l: b"550 5.7.1 sender refused\r\n" if l.startswith(b"MAIL")
             else b"503 5.5.1 need MAIL\r\n" if l.startswith(b"RCPT") or l == b"DATA" else None)
d, out = scenario("mail-refused", f)
is_(codes(out[:3]), [250, 550, 554],
    "MAIL refused downstream: the pipelined RCPT gets the refusal of MAIL, DATA no 354")
like(str(out[1]), r"sender refused", "the RCPT's reply is the downstream's reply to MAIL")
is_(f.delivered, 0, "nothing delivered")
d.stop()

# ...and a second RCPT after the refusal sends MAIL again
f = Counting(replies=lambda l: b"550 5.7.1 sender refused\r\n" if l.startswith(b"MAIL")
             else b"503 5.5.1 need MAIL\r\n" if l.startswith(b"RCPT") else None)
d, out = scenario("mail-refused-twice", f, pipelined=False, rcpts=("b@example.net",
                                                                     "c@example.net"))
is_(codes(out[:3]), [250, 550, 550], "each RCPT of a refused MAIL: the MAIL's refusal")
is_(f.delivered, 0, "nothing delivered")
d.stop()

# a liar: refuses MAIL, accepts the RCPT sent with it
f = Counting(replies=lambda l: b"550 5.7.1 sender refused\r\n" if l.startswith(b"MAIL") else None)
d, out = scenario("mail-refused-rcpt-ok", f)
ok(len(out) >= 2 and out[1].code == 451, "RCPT accepted after a refused MAIL: 451, never 250",
   [str(x) for x in out])
ok(all(r.code != 354 for r in out), "and no 354", [str(x) for x in out])
like(d.log(), r"RCPT accepted after MAIL was refused", "logged as a protocol error")
is_(f.delivered, 0, "nothing delivered")
d.stop()

# ---------------------------------------------------------- hostile timing
# hangs up after the reply to MAIL, with RCPT and DATA unanswered
f = Counting(after=lambda cmds: "close" if "MAIL" in cmds else None)
d, out = scenario("hangup-mid-pipeline", f)
ok(len(out) >= 3 and out[1].code == 451 and out[2].code >= 400,
   "hang-up mid-pipeline: the RCPT gets 451, DATA is refused", [str(x) for x in out])
ok(all(r.code != 250 for r in out[1:]), "no 250 after MAIL", [str(x) for x in out])
ok(d.running(), "submitd survived")
d.stop()

# more replies than commands: an extra 250 behind the pipelined replies
f = Counting(after=lambda cmds: b"250 2.0.0 extra\r\n" if "MAIL" in cmds else None)
d, out = scenario("extra-replies", f)
ok(out[-1].code >= 400, "more replies than commands: refused", [str(x) for x in out])
like(d.log(), r"unsolicited data after a reply", "logged")
is_(f.delivered, 0, "nothing delivered")
ok(d.running(), "submitd survived")
d.stop()

f = Counting(after=lambda cmds: b"250 2.1.5 extra\r\n" if "MAIL" in cmds else None)
d, out = scenario("extra-replies-waiting", f, pipelined=False)
ok(out[-1].code >= 400, "more replies than commands (client not pipelining): refused",
   [str(x) for x in out])
is_(f.delivered, 0, "nothing delivered")
d.stop()

# ---------------------------------------------------------- the real Postfix
if not pfmod.available():
    skip("real Postfix", "needs root and Debian's postfix package (scripts/deps.sh)")
else:
    os.chmod(env.dir, 0o711)
    sink = env.sink()
    PF_PORT = free_port()
    EXTRA = """127.0.0.1:{port} inet n - n - - smtpd
  -o syslog_name=postfix/pipelining
  -o smtpd_sasl_auth_enable=no
  -o smtpd_tls_security_level=none
  -o mynetworks=127.0.0.1/32
  -o smtpd_client_restrictions=
  -o smtpd_helo_restrictions=
  -o smtpd_relay_restrictions=permit_mynetworks,reject
  -o smtpd_recipient_restrictions=permit_mynetworks,reject
""".format(port=PF_PORT)
    pf = pfmod.Postfix(env, certs, env.path("no-dovecot"), sink, name="postfix-pipe",
                       extra_master=EXTRA)
    pf.start()
    for onoff in ("yes", "no"):
        d = env.submitd(standard_config(certs, None, [
            ("relayhost", "[127.0.0.1]:%d" % PF_PORT), ("relay_pipelining", onoff)]),
            name="postfix-" + onoff)
        for pipelined in (True, False):
            subj = "pf-%s-%s" % (onoff, pipelined)
            c = client(d, "plain", certs)
            msg = make_message(subject=subj)
            rc = ["x@example.net", "y@example.net"]
            out = pipelined_send(c, "a@example.com", rc, msg) if pipelined \
                else c.send_message("a@example.com", rc, stuff(msg))
            c.cmd("QUIT")
            c.close()
            is_(codes(out), [250, 250, 250, 354, 250],
                "Postfix, relay_pipelining = %s, client pipelining %s: accepted" % (onoff, pipelined))
            m = wait_for(lambda: next((m for m in sink.messages()
                                       if b"Subject: " + subj.encode() + b"\r\n" in m.content),
                                      None), 15)
            ok(m is not None and sorted(m.rcpts) == rc, "...and delivered to both recipients")
        d.stop()
    pf.stop()

done()
