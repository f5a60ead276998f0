#!/usr/bin/env python3
"""The default tls_priority has forward secrecy only: with an RSA
certificate, TLS 1.2 static-RSA key exchange (AES128-GCM-SHA256) is
refused while ECDHE-RSA works, on the implicit-TLS and the STARTTLS
listener; TLS 1.3 works."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

env, certs, sink = setup()
rsa_dir = env.subdir("rsa")
rsa_key = os.path.join(rsa_dir, "key.pem")
rsa_cert = os.path.join(rsa_dir, "cert.pem")
subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", rsa_key,
                "-out", rsa_cert, "-days", "2", "-subj", "/CN=" + MYHOST,
                "-addext", "subjectAltName=DNS:%s,IP:127.0.0.1" % MYHOST],
               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
d = env.submitd(standard_config(certs, sink, [("tls_cert_file", rsa_cert),
                                              ("tls_key_file", rsa_key)]))
th, tp = d.addr("tls")
sh, sp = d.addr("starttls")


def s_client(host, port, *args, starttls=False):
    argv = ["openssl", "s_client", "-connect", "%s:%d" % (host, port), "-brief"]
    if starttls:
        argv += ["-starttls", "smtp"]
    return run(argv + list(args), input=b"QUIT\r\n", timeout=20)


for name, (h, p, st) in (("tls", (th, tp, False)), ("starttls", (sh, sp, True))):
    code, out = s_client(h, p, "-tls1_2", "-cipher", "AES128-GCM-SHA256", starttls=st)
    unlike(out, r"Ciphersuite: AES128-GCM-SHA256", "%s: TLS 1.2 static RSA (AES128-GCM-SHA256) refused"
           % name)
    ok(code != 0, "%s: s_client fails the handshake (status %s)" % (name, code), out[-400:])
    code, out = s_client(h, p, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256", starttls=st)
    like(out, r"Ciphersuite: ECDHE-RSA-AES128-GCM-SHA256", "%s: TLS 1.2 ECDHE-RSA works" % name)
    code, out = s_client(h, p, "-tls1_3", starttls=st)
    like(out, r"Protocol version: TLSv1\.3", "%s: TLS 1.3 works" % name)
done()
