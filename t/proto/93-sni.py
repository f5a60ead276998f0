#!/usr/bin/env python3
"""SNI: one certificate per hosted domain (tls_sni = NAMES CERTFILE KEYFILE).
`openssl s_client -servername` on the STARTTLS and the implicit-TLS port gets
the certificate for each of two names (and for a second name of the same
pair, written in mixed case in the configuration: names are lower-cased
there; GnuTLS compares the client's SNI exactly); no SNI or an unknown name gets tls_cert_file.
A tls_sni pair that does not match is refused at start (-t) and on reload.
Also with Python's ssl and gnutls-cli as clients."""
import hashlib
import os
import re
import signal
import ssl
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

env, certs, sink = setup()
pairs = env.subdir("pairs")


def make_pair(name, cn):
    key = os.path.join(pairs, name + "-key.pem")
    crt = os.path.join(pairs, name + ".pem")
    csr = os.path.join(pairs, name + ".csr")
    ext = os.path.join(pairs, name + ".ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n" % cn)
    for argv in (["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                  "-keyout", key, "-out", csr, "-subj", "/CN=" + cn],
                 ["x509", "-req", "-in", csr, "-CA", certs.ca, "-CAkey", certs.ca_key,
                  "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext]):
        subprocess.run(["openssl"] + argv, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, cwd=pairs)
    return crt, key


def fp_pem(text):
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(m.group(0))).hexdigest() if m else None


crt_a, key_a = make_pair("a", "mail.customer-a.example")
crt_b, key_b = make_pair("b", "smtp.customer-b.example")
fp_def, fp_a, fp_b = fp_pem(open(certs.cert).read()), fp_pem(open(crt_a).read()), \
    fp_pem(open(crt_b).read())

d = env.submitd(standard_config(certs, sink, [
    ("tls_sni", ["mail.customer-a.example %s %s" % (crt_a, key_a),
                 "smtp.customer-b.example,Mail.Customer-B.example %s %s" % (crt_b, key_b)]),
]))
ok(d.wait_log(r"ready: .*2 SNI pairs", 10), "ready with 2 SNI pairs")


def s_client(mode, name):
    host, port = d.addr(mode)
    argv = ["openssl", "s_client", "-connect", "%s:%d" % (host, port), "-CAfile", certs.ca]
    argv += ["-servername", name] if name else ["-noservername"]
    if mode == "starttls":
        argv += ["-starttls", "smtp"]
    st, out = run(argv, input=b"QUIT\r\n", timeout=20)
    return fp_pem(out), out


for mode in ("starttls", "tls"):
    for name, want, label in (("mail.customer-a.example", fp_a, "customer A"),
                              ("smtp.customer-b.example", fp_b, "customer B"),
                              ("mail.customer-b.example", fp_b, "customer B's second name"),
                              (MYHOST, fp_def, "the server's own name"),
                              ("unknown.example", fp_def, "an unknown name"),
                              (None, fp_def, "no SNI")):
        got, out = s_client(mode, name)
        ok(got == want, "%s, openssl s_client -servername %s: %s's certificate" % (mode, name, label),
           out[-1500:] if got is None else None)

# Python's ssl verifies the chain and the name.
for name in ("mail.customer-a.example", "smtp.customer-b.example"):
    c = SMTP(*d.addr("tls"), tls=True, certs=certs, server_hostname=name)
    like(str(c.greeting), r"^220 ", "Python ssl verifies %s's certificate over implicit TLS" % name)
    c.close()
host, port = d.addr("tls")
st, out = run(["gnutls-cli", "--x509cafile", certs.ca, "-p", str(port), "--sni-hostname",
               "mail.customer-a.example", "--verify-hostname", "mail.customer-a.example", host],
              input=b"", timeout=20)
like(out, r"Handshake was completed", "gnutls-cli with SNI: handshake verified")
c = client(d, "starttls", certs)
out = c.send_message("a@example.com", ["b@example.net"], stuff(make_message(subject="sni")))
is_([x.code for x in out], [250, 250, 354, 250], "delivery still works")
c.close()

# A pair that does not match: refused by -t; refused on reload, old kept.
bad = [("tls_sni", "x.example %s %s" % (crt_a, key_b))]
conf = env.path("bad.conf")
with open(conf, "w") as f:
    for k, v in standard_config(certs, sink, bad):
        f.write("%s = %s\n" % (k, v))
r = subprocess.run([env.binary, "-c", conf, "-t"], capture_output=True, text=True)
ok(r.returncode != 0 and "tls_sni x.example" in r.stderr, "-t refuses a tls_sni pair that does not match",
   r.stderr)
with open(d.conf, "a") as f:
    f.write("tls_sni = x.example %s %s\n" % (crt_a, key_b))
os.kill(d.proc.pid, signal.SIGHUP)
ok(d.wait_log(r"reload refused: tls_sni x\.example", 10), "reload with a mismatched tls_sni pair: refused")
got, _ = s_client("tls", "smtp.customer-b.example")
is_(got, fp_b, "the previous certificates are still served")
with open(conf, "w") as f:
    for k, v in standard_config(certs, sink, [("tls_sni", "bad_name! %s %s" % (crt_a, key_a))]):
        f.write("%s = %s\n" % (k, v))
r = subprocess.run([env.binary, "-c", conf, "-t"], capture_output=True, text=True)
ok(r.returncode != 0 and "is not a host name" in r.stderr, "-t refuses a tls_sni name that is not a host name",
   r.stderr)
done()
