#!/usr/bin/python3
"""dkimverify.py: Debian's python3-dkim (dkimpy) checks every DKIM-Signature
of each message, with DNS answered from a file instead of the network.

  /usr/bin/python3 t/lib/dkimverify.py DNSFILE MSG...
DNSFILE: one record a line, "NAME TXT-TEXT" (the strings already joined).
Prints one line per signature: "MSG INDEX d=D s=S a=A pass|fail".
Run with Debian's interpreter (/usr/bin/python3): that is where the package
puts the module."""
import re
import sys

import dkim

records = {}
with open(sys.argv[1]) as f:
    for line in f:
        name, _, txt = line.rstrip("\n").partition(" ")
        records[name.rstrip(".").lower()] = txt.encode()


def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    return records.get(name.rstrip(".").lower())


for path in sys.argv[2:]:
    msg = open(path, "rb").read()
    d = dkim.DKIM(msg)
    # the signature fields, in order, to name them
    head = msg.split(b"\r\n\r\n", 1)[0]
    sigs = re.findall(rb"(?im)^dkim-signature:.*(?:\r\n[ \t].*)*", head)
    for i, sig in enumerate(sigs):
        flat = re.sub(rb"\s+", b"", sig)
        tags = dict(re.findall(rb"[;:](\w+)=([^;]*)", flat))
        try:
            res = d.verify(idx=i, dnsfunc=dnsfunc)
        except Exception as e:  # noqa: BLE001 - a verifier crash is a failure
            res = False
            sys.stderr.write("%s: %s\n" % (path, e))
        print("%s %d d=%s s=%s a=%s %s" % (path, i, tags.get(b"d", b"").decode(),
                                          tags.get(b"s", b"").decode(),
                                          tags.get(b"a", b"").decode(), "pass" if res else "fail"))
