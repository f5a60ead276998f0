#!/usr/bin/env python3
"""check_client_access behind a proxy (docs/restrictions.md): the address
looked up is the client's, as the PROXY header names it, never the
proxy's; an IPv4-mapped IPv6 address is looked up as IPv4 (as Postfix's
smtpd does), an IPv6 one by its compressed form and its ':' prefixes."""
import os
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

env, certs, sink = setup()
port = free_port()
TABLE = "texthash:" + env.path("clients")
with open(env.path("clients"), "w") as f:
    f.write("192.0.2.17   REJECT\n127.0.0.1    REJECT the proxy itself\n"
            "2001:db8:1   550 5.7.0 v6 prefix\n")
d = env.submitd(standard_config(certs, sink, extra=[
    ("listen", "127.0.0.1:%d plain trusted proxy" % port),
    ("proxy_networks", "127.0.0.1/32"),
    ("mynetworks", "0.0.0.0/0, ::/0"),
    ("sender_restrictions", "check_client_access " + TABLE)]), name="submitd-proxy-access")


def mail_via_proxy(header):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    f = s.makefile("rb")
    s.sendall(header + b"\r\n")
    f.readline()  # greeting
    s.sendall(b"EHLO client.test.example\r\n")
    while True:
        line = f.readline()
        if line[3:4] != b"-":
            break
    s.sendall(b"MAIL FROM:<a@example.com>\r\n")
    r = f.readline().decode().rstrip()
    s.sendall(b"QUIT\r\n")
    s.close()
    return r


for hdr, want, name in (
        (b"PROXY TCP4 192.0.2.17 127.0.0.1 40000 587",
         r"^554 5\.7\.1 <unknown\[192\.0\.2\.17\]>: Client host rejected: Access denied$",
         "the client's IPv4 address from the PROXY header"),
        (b"PROXY TCP4 198.51.100.1 127.0.0.1 40000 587", r"^250 ",
         "the proxy's own address (in the table) is not looked up"),
        (b"PROXY TCP6 ::ffff:192.0.2.17 ::1 40000 587",
         r"^554 5\.7\.1 <unknown\[192\.0\.2\.17\]>: Client host rejected: Access denied$",
         "an IPv4-mapped IPv6 client is looked up as IPv4"),
        (b"PROXY TCP6 2001:DB8:1:0::5 ::1 40000 587",
         r"^550 5\.7\.0 <unknown\[2001:db8:1::5\]>: Client host rejected: v6 prefix$",
         "IPv6: the compressed form, then its ':' prefixes"),
        (b"PROXY TCP6 2001:db8:10::5 ::1 40000 587", r"^250 ",
         "IPv6: 2001:db8:10 is not under 2001:db8:1")):
    like(mail_via_proxy(hdr), want, name)
d.stop()
done()
