#!/usr/bin/env python3
"""DNS (docs/dns.md): relayhost and sender_relay_maps routes without brackets
looked up by MX through c-ares, against a private dnsmasq (t/lib/dnsmasq.py)
on loopback serving MX, A, AAAA, NXDOMAIN and null MX answers:

  * relayhost = mx.test:PORT: the preferred MX (mx1, 127.0.0.2) refuses the
    connection, the message goes through the second (mx2, 127.0.0.1);
  * a domain without MX: its own address (RFC 5321 §5.1);
  * an MX host that refuses us in its greeting (554): the next MX;
  * TLS with relay_tls_security_level = verify: the name checked is the MX
    host's (mail.test.example matches the certificate, another name fails
    with 451 4.7.5);
  * NXDOMAIN for the relay: 4xx, nothing delivered;
  * the DNS server down: 451 4.4.3, never a 250;
  * reject_unknown_sender_domain / reject_unknown_recipient_domain with
    Postfix's codes and texts (unknown_address_reject_code, 450 on a DNS
    failure with unknown_address_tempfail_action defer_if_permit or defer,
    RFC 7505 null MX);
  * answers cached by TTL: a second transaction asks dnsmasq nothing;
  * a slow DNS answer (a server that answers after 2 s) does not delay
    another session's EHLO on the same worker (invariant 1);
  * a transport_maps next hop without brackets is looked up by MX too.

docs/design.md invariants 1, 2 and 4."""
import os
import re
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403
import dnsmasq as dnsmod  # noqa: E402

if not dnsmod.available():
    skip_all("needs dnsmasq (Debian's dnsmasq-base, scripts/deps.sh)")

env, certs, sink = setup()
P = sink.port
tls_sink = env.sink(starttls=True)
P2 = tls_sink.port


class Listener(threading.Thread):
    """A TCP server on one loopback address; handle(conn) gets each client."""

    def __init__(self, addr, port, handle):
        super().__init__(daemon=True)
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind((addr, port))
        self.srv.listen(8)
        self.handle = handle
        self.count = 0
        self.held = []

    def run(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.count += 1
            self.handle(self, c)


def refuse(srv, c):
    """Refuses the client in the greeting."""
    try:
        c.sendall(b"554 5.3.2 not accepting mail now\r\n")
        c.settimeout(2)
        c.recv(512)
    except OSError:
        pass
    c.close()


def hold(srv, c):
    """Never greets (a stuck MX)."""
    srv.held.append(c)


refuser = Listener("127.0.0.3", P, refuse)
silent = Listener("127.0.0.4", P, hold)
silent.start()
refuser.start()
dns = dnsmod.Dnsmasq(env, mx=[("mx.test", "mx1.mx.test", 10), ("mx.test", "mx2.mx.test", 20),
                              ("good.test", "mx2.mx.test", 10),
                              ("greet.test", "greet.mx.test", 10), ("greet.test", "mx2.mx.test", 20),
                              ("tls.test", "mail.test.example", 10),
                              ("test.example", "mail.test.example", 10),
                              ("wrongname.test", "mx2.mx.test", 10),
                              ("null.test", ".", 0),
                              ("badmx.test", "nowhere.test", 10),
                              ("evil.test", "bad!host.test", 10),
                              ("silent.test", "silent.mx.test", 10),
                              ("silent.test", "mx2.mx.test", 20)] +
                             # 100 MX records, more than a 512-octet UDP answer holds (truncated:
                             # c-ares asks over TCP); only the best preference has an address
                             [("big.test", "h%02d.big.test" % i, 100 + i) for i in range(99)] +
                             [("big.test", "mx2.mx.test", 1)],
                     hosts=[("mx1.mx.test", "127.0.0.2"), ("mx2.mx.test", "127.0.0.1"),
                            ("nomx.test", "127.0.0.1"), ("greet.mx.test", "127.0.0.3"),
                            ("silent.mx.test", "127.0.0.4"),
                            ("mail.test.example", "127.0.0.1")],
                     extra=["--txt-record=noaddr.test,nothing here",
                            # an alias of a name with an address and no MX
                            "--cname=alias.test,nomx.test"])
dns.start()

ROUTES = env.path("routes")
with open(ROUTES, "w") as f:
    f.write("fallback@good.test nomx.test:%d\n" % P)
    f.write("nx@good.test nx.test:%d\n" % P)
    f.write("bracket@good.test [127.0.0.1]:%d\n" % P)
    f.write("greet@good.test greet.test:%d\n" % P)
    f.write("alias@good.test alias.test:%d\n" % P)
    f.write("big@good.test big.test:%d\n" % P)

conf = standard_config(certs, sink, extra=[
    ("relayhost", "mx.test:%d" % P),
    ("dns_servers", dns.servers),
    ("dns_timeout", "1s"),
    ("dns_tries", "1"),
    ("workers", "1"),
    ("relay_tls_security_level", "none"),
    ("relay_idle_timeout", "0"),
    ("sender_relay_maps", "texthash:" + ROUTES),
    ("sender_restrictions", "reject_unknown_sender_domain"),
    ("recipient_restrictions", "reject_unknown_recipient_domain, permit_mynetworks, reject"),
])
d = env.submitd(conf)


def send(dd, sender, rcpt="rcpt@good.test", subject="dns"):
    c = client(dd, "plain", certs)
    out = c.send_message(sender, [rcpt], stuff(make_message(subject)))
    c.cmd("QUIT")
    c.close()
    return out


def codes(out):
    return [r.code for r in out]


# ---------------------------------------------------------------- relay by MX
n0 = sink.count()
out = send(d, "alice@good.test", subject="by mx")
is_(codes(out), [250, 250, 354, 250], "relayhost mx.test: delivered")
ok(sink.wait_count(n0 + 1), "the sink has it")
log = d.log()
like(log, r"relay=mx1\.mx\.test\[127\.0\.0\.2\]:%d: connect failed" % P,
     "the first MX (127.0.0.2) was tried and refused")
like(log, r"relay=mx2\.mx\.test\[127\.0\.0\.1\]:%d" % P, "delivered through the second MX")

n0 = sink.count()
out = send(d, "fallback@good.test", subject="no mx")
is_(codes(out), [250, 250, 354, 250], "route nomx.test (no MX): delivered to its A record")
ok(sink.wait_count(n0 + 1), "the sink has it")
like(d.log(), r"relay=nomx\.test\[127\.0\.0\.1\]:%d" % P, "the domain's own address was used")

n0 = sink.count()
out = send(d, "nx@good.test", subject="nx")
ok(out[0].code == 250 and out[1].code // 100 == 4, "route nx.test (NXDOMAIN): RCPT gets 4xx", out)
like(d.log(), r"cannot find the mail servers of nx\.test", "the log says why")
time.sleep(0.3)
is_(sink.count(), n0, "nothing delivered")

n0 = sink.count()
out = send(d, "greet@good.test", subject="greeting refused")
is_(codes(out), [250, 250, 354, 250], "route greet.test: first MX refuses in its greeting, delivered")
ok(refuser.count >= 1, "the refusing MX (127.0.0.3) was asked first")
like(d.log(), r"relay=greet\.mx\.test\[127\.0\.0\.3\]:%d: refused us: 554" % P,
     "the log names the refusing MX and its reply")
ok(sink.wait_count(n0 + 1), "the sink has it")

n0 = sink.count()
out = send(d, "alias@good.test", subject="alias")
is_(codes(out), [250, 250, 354, 250],
    "route alias.test (a CNAME to a name without MX): delivered to the alias's address")
ok(sink.wait_count(n0 + 1), "the sink has it")

n0 = sink.count()
out = send(d, "big@good.test", subject="big")
is_(codes(out), [250, 250, 354, 250], "route big.test (100 MX records): delivered")
ok(sink.wait_count(n0 + 1), "the sink has it")
like(d.log(), r"relay=mx2\.mx\.test\[127\.0\.0\.1\]:%d" % P, "through the best MX")

out = send(d, "bracket@good.test", subject="bracket")
is_(codes(out), [250, 250, 354, 250], "a bracketed route still connects as written")

rc, txt = run([env.binary, "-c", d.conf, "-t"], timeout=60)
ok(rc == 0 and re.search(r"relay mx\.test:%d .*: ok" % P, txt) is not None,
   "submitd -t: the relayhost by MX checks out", txt)

# ---------------------------------------------------------------- cache
before = [q for q in dns.queries() if q == ("MX", "mx.test")]
out = send(d, "alice@good.test", subject="cached")
is_(codes(out), [250, 250, 354, 250], "second message by MX delivered")
after = [q for q in dns.queries() if q == ("MX", "mx.test")]
is_(len(after), len(before), "the MX answer came from the cache (TTL 60 s)")

# ---------------------------------------------------------------- restrictions
def replies(c, verb, what, cases, rset):
    """Each address with verb (MAIL FROM / RCPT TO): 250, or exactly want."""
    for addr, want in cases:
        r = c.cmd("%s:<%s>" % (verb, addr))
        if want == "250":
            is_(r.code, 250, "reject_unknown_%s_domain: <%s> accepted" % (what, addr))
        else:
            is_(r.lines[-1], want, "reject_unknown_%s_domain: <%s>" % (what, addr))
        if rset:
            c.cmd("RSET")


c = client(d, "plain", certs)
replies(c, "MAIL FROM", "sender", [
        ("a@good.test", "250"),
        ("a@nomx.test", "250"),
        ("a@nx.test", "450 4.1.8 <a@nx.test>: Sender address rejected: Domain not found"),
        ("a@noaddr.test", "450 4.1.8 <a@noaddr.test>: Sender address rejected: Domain not found"),
        ("a@badmx.test", "250"),
        ("a@alias.test", "250"),
        # Postfix's DNS_INVAL: every MX host name is malformed
        ("a@evil.test", "450 4.1.8 <a@evil.test>: Sender address rejected: "
                        "Malformed DNS server reply"),
        ("a@null.test", "550 5.7.27 <a@null.test>: Sender address rejected: Domain null.test "
                        "does not accept mail (nullMX)"),
        ("", "250"),
        ("a@[127.0.0.1]", "250")], rset=True)
r = c.cmd("MAIL FROM:<a@good.test>")
replies(c, "RCPT TO", "recipient", [
        ("b@good.test", "250"),
        ("b@NOMX.test", "250"),
        ("b@nx.test", "450 4.1.2 <b@nx.test>: Recipient address rejected: Domain not found"),
        ("b@null.test", "556 5.1.10 <b@null.test>: Recipient address rejected: Domain null.test "
                        "does not accept mail (nullMX)")], rset=False)
c.cmd("QUIT")
c.close()
like(d.log(), r"reject_unknown_sender_domain: <a@nx\.test>: nx\.test: no such domain \(NXDOMAIN\)",
     "the reject is logged, with why")

# TLS names for MX hosts
TROUTES = env.path("troutes")
SROUTES = env.path("sroutes")
with open(TROUTES, "w") as f:
    f.write("wrong@good.test wrongname.test:%d\n" % P2)
conf6 = standard_config(certs, tls_sink, extra=[
    ("relayhost", "tls.test:%d" % P2), ("dns_servers", dns.servers),
    ("relay_tls_security_level", "verify"), ("relay_tls_ca_file", certs.ca),
    ("sender_relay_maps", "texthash:" + TROUTES)])
d6 = env.submitd(conf6, name="submitd-tls")
n0 = tls_sink.count()
out = send(d6, "a@good.test", subject="tls by mx")
is_(codes(out), [250, 250, 354, 250], "verify: MX host mail.test.example matches the certificate")
ok(tls_sink.wait_count(n0 + 1), "the TLS sink has it")
like(d6.log(), r"relay=mail\.test\.example\[127\.0\.0\.1\]:%d: Verified TLS" % P2,
     "Verified TLS with the MX host's name")
out = send(d6, "wrong@good.test", subject="tls wrong name")
ok(out[1].code == 451 and out[1].enhanced == "4.7.5",
   "verify: MX host mx2.mx.test is not in the certificate: 451 4.7.5", out)
like(d6.log(), r'certificate not verified for "mx2\.mx\.test"', "the log names the MX host")

# secure (Postfix's smtp_tls_secure_cert_match = nexthop, dot-nexthop): the
# name DNS gave is not trusted, the certificate must be the next hop's, so an
# MX host outside the next-hop domain fails (a forged MX answer would name one).
conf7 = standard_config(certs, tls_sink, extra=[
    ("relayhost", "test.example:%d" % P2), ("dns_servers", dns.servers),
    ("relay_tls_security_level", "secure"), ("relay_tls_ca_file", certs.ca),
    ("sender_relay_maps", "texthash:" + SROUTES)])
with open(SROUTES, "w") as f:
    f.write("out@good.test tls.test:%d\n" % P2)
d7 = env.submitd(conf7, name="submitd-secure")
n0 = tls_sink.count()
out = send(d7, "a@good.test", subject="secure in domain")
is_(codes(out), [250, 250, 354, 250],
    "secure: MX host mail.test.example is in the next hop test.example: delivered")
ok(tls_sink.wait_count(n0 + 1), "the TLS sink has it")
out = send(d7, "out@good.test", subject="secure outside")
ok(out[1].code == 451 and out[1].enhanced == "4.7.5",
   "secure: MX host mail.test.example is outside the next hop tls.test: 451 4.7.5", out)
like(d7.log(), r"mail\.test\.example is not in the next-hop domain tls\.test",
     "the log says why")
time.sleep(0.3)
is_(tls_sink.count(), n0 + 1, "nothing more delivered")

# unknown_address_reject_code on a listen line
conf5 = standard_config(certs, sink, extra=[
    ("dns_servers", dns.servers), ("sender_restrictions", "reject_unknown_sender_domain"),
    ("unknown_address_reject_code", "554")])
d5 = env.submitd(conf5, name="submitd-550")
c = client(d5, "plain", certs)
r = c.cmd("MAIL FROM:<a@nx.test>")
is_(r.lines[-1], "554 5.1.8 <a@nx.test>: Sender address rejected: Domain not found",
    "unknown_address_reject_code = 554 (the LibreLAMP seed's line)")
c.close()

# A first MX that accepts and never greets must not take the whole
# relay_timeout: its greeting gets relay_connect_timeout while another
# address is left, so the second MX is reached within the budget.
conf8 = standard_config(certs, sink, extra=[
    ("relayhost", "silent.test:%d" % P), ("dns_servers", dns.servers),
    ("relay_tls_security_level", "none"), ("relay_timeout", "4s"),
    ("relay_connect_timeout", "1s")])
d8 = env.submitd(conf8, name="submitd-silentmx")
n0 = sink.count()
t0 = time.time()
out = send(d8, "a@good.test", subject="silent mx")
took = time.time() - t0
is_(codes(out), [250, 250, 354, 250], "first MX silent after connect: delivered through the second")
ok(sink.wait_count(n0 + 1), "the sink has it")
ok(len(silent.held) >= 1, "the silent MX (127.0.0.4) was tried first")
like(d8.log(), r"relay=silent\.mx\.test\[127\.0\.0\.4\]:%d: timeout during greeting" % P,
     "the log names the silent MX")
ok(took < 4, "within relay_timeout (%.1f s)" % took)

# ---------------------------------------------------------------- DNS down
dead = free_port()
conf2 = standard_config(certs, sink, extra=[
    ("relayhost", "mx.test:%d" % P), ("dns_servers", "127.0.0.1:%d" % dead),
    ("dns_timeout", "300ms"), ("dns_tries", "1"),
    ("recipient_restrictions", "reject_unknown_recipient_domain, permit_mynetworks, reject"),
    ("listen", "127.0.0.1:%d plain trusted" % free_port()),
    ("listen", "127.0.0.1:%d plain trusted "
     "recipient_restrictions=reject_unknown_recipient_domain,reject" % free_port()),
    ("listen", "127.0.0.1:%d plain trusted unknown_address_tempfail_action=defer "
     "recipient_restrictions=reject_unknown_recipient_domain,reject" % free_port())])
d2 = env.submitd(conf2, name="submitd-dnsdown")
n0 = sink.count()
c = client(d2, "plain", certs)
r = c.cmd("MAIL FROM:<a@good.test>")
r = c.cmd("RCPT TO:<b@good.test>")
is_(r.lines[-1], "450 4.1.2 <b@good.test>: Recipient address rejected: Domain not found",
    "DNS down: reject_unknown_recipient_domain answers 450")
c.cmd("RSET")
c.close()
for idx, want, name in [
        (1, "554 5.7.1 <b@good.test>: Recipient address rejected: Access denied",
         "defer_if_permit (the default): a later reject wins"),
        (2, "450 4.1.2 <b@good.test>: Recipient address rejected: Domain not found",
         "unknown_address_tempfail_action = defer: 450 at once")]:
    c = client(d2, idx, certs)
    c.cmd("MAIL FROM:<a@good.test>")
    is_(c.cmd("RCPT TO:<b@good.test>").lines[-1], want, "DNS down, " + name)
    c.close()
conf3 = standard_config(certs, sink, extra=[
    ("relayhost", "mx.test:%d" % P), ("dns_servers", "127.0.0.1:%d" % dead),
    ("dns_timeout", "300ms"), ("dns_tries", "1")])
d3 = env.submitd(conf3, name="submitd-dnsdown2")
out = send(d3, "a@good.test", subject="dns down")
ok(out[1].code == 451 and out[1].enhanced == "4.4.3", "DNS down: relay by MX answers 451 4.4.3", out)
ok(250 not in codes(out)[1:], "never a 250 after MAIL", out)
time.sleep(0.3)
is_(sink.count(), n0, "nothing delivered")


# ---------------------------------------------------------------- a slow DNS server
class SlowDNS(threading.Thread):
    """Answers every query NXDOMAIN after delay seconds."""

    def __init__(self, delay):
        super().__init__(daemon=True)
        self.delay = delay
        self.port = dnsmod.udp_port()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", self.port))

    def run(self):
        while True:
            try:
                q, peer = self.sock.recvfrom(512)
            except OSError:
                return
            if len(q) < 12:
                continue
            threading.Timer(self.delay, self.answer, (q, peer)).start()

    def answer(self, q, peer):
        flags = struct.unpack(">H", q[2:4])[0]
        head = q[:2] + struct.pack(">HHHHH", 0x8000 | (flags & 0x0100) | 0x0080 | 3, 1, 0, 0, 0)
        try:
            self.sock.sendto(head + q[12:], peer)
        except OSError:
            pass


slow = SlowDNS(2.0)
slow.start()
conf4 = standard_config(certs, sink, extra=[
    ("dns_servers", "127.0.0.1:%d" % slow.port), ("dns_timeout", "5s"), ("workers", "1"),
    ("sender_restrictions", "reject_unknown_sender_domain")])
d4 = env.submitd(conf4, name="submitd-slowdns")
a = client(d4, "plain", certs)
t0 = time.time()
a.send("MAIL FROM:<x@slow.test>\r\n")
time.sleep(0.2)
b_start = time.time()
b = client(d4, "plain", certs)
b_took = time.time() - b_start
r = a.reply(timeout=10)
a_took = time.time() - t0
ok(a_took >= 1.8, "the slow answer took its time (%.2f s)" % a_took)
is_(r.lines[-1], "450 4.1.8 <x@slow.test>: Sender address rejected: Domain not found",
    "...and was NXDOMAIN")
ok(b_took < 1.5, "another session's greeting and EHLO meanwhile took %.2f s" % b_took)
a.close()
b.close()
slow.sock.close()

# ---------------------------------------------------------------- transport_maps by MX
# A transport_maps next hop without brackets is an MX lookup like relayhost
# (docs/routing.md): smtp:mx.test:PORT tries mx1 (refused), then mx2.
TRANSPORT = env.path("transport")
with open(TRANSPORT, "w") as f:
    f.write("mxroute.test smtp:mx.test:%d\n" % P)
    f.write(".sub.test smtp:nomx.test:%d\n" % P)
dead_relay = free_port()
conf9 = standard_config(certs, sink, extra=[
    ("relayhost", "[127.0.0.1]:%d" % dead_relay), ("dns_servers", dns.servers),
    ("dns_timeout", "1s"), ("dns_tries", "1"), ("workers", "1"),
    ("relay_tls_security_level", "none"), ("transport_maps", "texthash:" + TRANSPORT)])
d9 = env.submitd(conf9, name="submitd-transport-mx")
n0 = sink.count()
out = send(d9, "alice@good.test", rcpt="rcpt@mxroute.test", subject="transport by mx")
is_(codes(out), [250, 250, 354, 250], "transport_maps smtp:mx.test: delivered by MX")
ok(sink.wait_count(n0 + 1), "the sink has it")
like(d9.log(), r"relay=mx1\.mx\.test\[127\.0\.0\.2\]:%d: connect failed" % P,
     "the first MX of the next hop was tried and refused")
n0 = sink.count()
out = send(d9, "alice@good.test", rcpt="rcpt@a.sub.test", subject="transport no mx")
is_(codes(out), [250, 250, 354, 250], "transport_maps .sub.test smtp:nomx.test: delivered to its A record")
ok(sink.wait_count(n0 + 1), "the sink has it")
out = send(d9, "alice@good.test", rcpt="rcpt@elsewhere.test", subject="default route")
ok(out[1].code // 100 == 4, "a domain without an entry takes relayhost (dead here): 4xx", out)

refuser.srv.close()
silent.srv.close()
for c in silent.held:
    c.close()
for dd in (d, d2, d3, d4, d5, d6, d7, d8, d9):
    ok(not unsafe_log_lines(dd.logfile), "%s: every log line escaped" % dd.name)
    ok(dd.sanitizer_report() is None, "%s: no sanitizer report" % dd.name)
done()
