#!/usr/bin/env python3
"""Several certificate/key pairs at once (tls_cert_file and tls_key_file
repeated, pairing up in order): with an RSA, an ECDSA and an Ed25519 pair
(RSA written first), a client that can verify ECDSA gets the ECDSA
certificate, one that only does RSA (openssl s_client -sigalgs, gnutls-cli
with a priority string, TLS 1.2 ECDHE-RSA suites, Python ssl) the RSA one,
one that asks for Ed25519 the Ed25519 one; on the STARTTLS and the
implicit-TLS port, and per SNI name (tls_sni repeated with the same name).
The startup line and `submitd -t` list every pair; -t refuses different
numbers of certificate and key files, a key that does not match its
certificate, and two pairs of one key type (default and per SNI name); a
single file holding key and chain works as both. Hostile files are refused
by name and at once: a named pipe, /dev/zero, a file past 1 MiB, a chain with
the leaf not first, an encrypted key; a subject with control characters is
escaped in -t's output; a configuration where a second tls_cert_file meant to
replace the first gets a message saying what to delete. SIGHUP swaps the RSA pair
while ECDSA stays; certificate watching notices a changed ECDSA pair."""
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

def make_pair(name, kind, cn=MYHOST):
    """A key ("ec", "rsa", "ed25519") and a certificate from the test CA; returns (chain, key)."""
    return certs.issue(pairs, name, kind, cn, (cn, "localhost"))


def fp_file(path):
    return fp_pem(open(path).read())


def fp_pem(text):
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(m.group(0))).hexdigest() if m else None


rsa_crt, rsa_key = make_pair("rsa", "rsa")
ec_crt, ec_key = make_pair("ec", "ec")
ed_crt, ed_key = make_pair("ed", "ed25519")
a_rsa_crt, a_rsa_key = make_pair("a-rsa", "rsa", "mail.customer-a.example")
a_ec_crt, a_ec_key = make_pair("a-ec", "ec", "mail.customer-a.example")
FP = {"rsa": fp_file(rsa_crt), "ec": fp_file(ec_crt), "ed": fp_file(ed_crt),
      "a-rsa": fp_file(a_rsa_crt), "a-ec": fp_file(a_ec_crt)}
NAMES = {v: k for k, v in FP.items()}


def conf_pairs(*kinds):
    """tls_cert_file/tls_key_file lines for pairs given as (crt, key)."""
    return [("tls_cert_file", [c for c, _ in kinds]), ("tls_key_file", [k for _, k in kinds])]


SNI = [("tls_sni", ["mail.customer-a.example %s %s" % (a_rsa_crt, a_rsa_key),
                    "mail.customer-a.example %s %s" % (a_ec_crt, a_ec_key)])]
# RSA first in the file: the ECDSA pair is still the one modern clients get.
cfg = standard_config(certs, sink, conf_pairs((rsa_crt, rsa_key), (ec_crt, ec_key),
                                              (ed_crt, ed_key)) + SNI)
d = env.submitd(cfg)
ok(d.wait_log(r"ready: .*certificate ECDSA P-256 .*SHA-256.*; certificate Ed25519 .*; "
              r"certificate RSA-2048 .*, 2 SNI pairs", 10),
   "the startup line names the three pairs (ECDSA first) and the SNI pairs", d.log()[-1500:])


def s_client(mode, *args, name=None):
    host, port = d.addr(mode)
    argv = ["openssl", "s_client", "-connect", "%s:%d" % (host, port), "-CAfile", certs.ca]
    argv += ["-servername", name] if name else ["-noservername"]
    if mode == "starttls":
        argv += ["-starttls", "smtp"]
    st, out = run(argv + list(args), input=b"QUIT\r\n", timeout=20)
    return NAMES.get(fp_pem(out), fp_pem(out)), out


RSA_ONLY = ("-sigalgs", "RSA-PSS+SHA256:RSA+SHA256")
for mode in ("starttls", "tls"):
    for args, want, label in (((), "ec", "a client offering every algorithm"),
                              (("-sigalgs", "ECDSA+SHA256:RSA-PSS+SHA256"), "ec",
                               "ECDSA and RSA (TLS 1.3)"),
                              (RSA_ONLY, "rsa", "RSA only (TLS 1.3, -sigalgs)"),
                              (("-sigalgs", "ed25519"), "ed", "Ed25519 only"),
                              (("-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"), "rsa",
                               "TLS 1.2 ECDHE-RSA suite only"),
                              (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"), "ec",
                               "TLS 1.2 ECDHE-ECDSA suite only"),
                              (("-tls1_2", "-cipher",
                                "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256"),
                               "ec", "TLS 1.2 preferring ECDHE-RSA: the server's order wins"),
                              (("-tls1_2", "-sigalgs", "RSA+SHA256"), "rsa",
                               "TLS 1.2 RSA signatures only")):
        got, out = s_client(mode, *args)
        ok(got == want, "%s, %s: the %s certificate" % (mode, label, want),
           "got %s\n%s" % (got, out[-1500:]))
    for args, want, label in (((), "a-ec", "any client"), (RSA_ONLY, "a-rsa", "RSA only")):
        got, out = s_client(mode, *args, name="mail.customer-a.example")
        ok(got == want, "%s, SNI mail.customer-a.example, %s: %s" % (mode, label, want),
           "got %s\n%s" % (got, out[-1500:]))
    got, out = s_client(mode, *RSA_ONLY, name="unknown.example")
    is_(got, "rsa", "%s, an unknown SNI name, RSA only: the default RSA pair" % mode)

# gnutls-cli with a priority string, verifying chain and name.
host, port = d.addr("tls")
for prio, want in (("NORMAL", "ec"),
                   ("NORMAL:-SIGN-ALL:+SIGN-RSA-PSS-RSAE-SHA256:+SIGN-RSA-SHA256", "rsa")):
    st, out = run(["gnutls-cli", "--x509cafile", certs.ca, "-p", str(port), "--priority", prio,
                   "--print-cert", "--verify-hostname", MYHOST, host], input=b"", timeout=20)
    like(out, r"Handshake was completed", "gnutls-cli --priority %s: verified handshake" % prio)
    is_(NAMES.get(fp_pem(out)), want, "gnutls-cli --priority %s: the %s certificate" % (prio, want))

# Python ssl: both certificates verify; a TLS 1.2 RSA-only client gets RSA.
c = SMTP(*d.addr("tls"), tls=True, certs=certs)
is_(NAMES.get(hashlib.sha256(c.sock.getpeercert(binary_form=True)).hexdigest()), "ec",
    "Python ssl over implicit TLS: ECDSA certificate, verified")
c.close()
ctx = certs.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
c = SMTP(*d.addr("starttls"))
c.ehlo()
c.starttls(ctx=ctx)
c.ehlo()
is_(NAMES.get(hashlib.sha256(c.sock.getpeercert(binary_form=True)).hexdigest()), "rsa",
    "Python ssl, STARTTLS, TLS 1.2 ECDHE-RSA only: RSA certificate, verified")
out = c.send_message("a@example.com", ["b@example.net"], stuff(make_message(subject="rsa")))
is_([x.code for x in out], [250, 250, 354, 250], "delivery over the RSA pair")
c.close()


# ---------------------------------------------------------------- submitd -t
def check(extra, timeout=60):
    conf = env.path("check.conf")
    with open(conf, "w") as f:
        for k, v in standard_config(certs, sink, extra):
            for one in (v if isinstance(v, list) else [v]):
                f.write("%s = %s\n" % (k, one))
    return subprocess.run([env.binary, "-c", conf, "-t"], capture_output=True, text=True,
                          timeout=timeout)


r = check(conf_pairs((rsa_crt, rsa_key), (ec_crt, ec_key)) + SNI)
ok(re.search(r"tls: pair 1: ECDSA P-256 \"CN=%s\" valid until .*SHA-256" % re.escape(MYHOST),
             r.stdout), "-t lists the ECDSA pair first", r.stdout + r.stderr)
like(r.stdout, r"tls: pair 2: RSA-2048 ", "-t lists the RSA pair")
like(r.stdout, r"tls: SNI pair 1: ECDSA P-256 \"CN=mail.customer-a.example\"",
     "-t lists the SNI pairs")
like(r.stdout, r"tls: SNI pair 2: RSA-2048 ", "... both of them")

for extra, pattern, label in (
        ([("tls_cert_file", [rsa_crt, ec_crt]), ("tls_key_file", rsa_key)],
         r"2 tls_cert_file but 1 tls_key_file", "a certificate without its key"),
        (conf_pairs((rsa_crt, ec_key), (ec_crt, rsa_key)),
         r"tls_cert_file .*rsa\.pem: the key in .*ec-key\.pem \(ECDSA P-256\) does not match "
         r"the certificate \(RSA-2048\)", "keys in the wrong order"),
        (conf_pairs((ec_crt, ec_key), (certs.fullchain, certs.key)),
         r"two ECDSA P-256 pairs", "two ECDSA pairs"),
        (conf_pairs((ec_crt, ec_key)) + [("tls_sni", ["x.example %s %s" % (a_ec_crt, a_ec_key),
                                                      "y.example,X.example %s %s"
                                                      % (ec_crt, ec_key)])],
         r"tls_sni .*two ECDSA P-256 pairs for x\.example", "two ECDSA pairs for one SNI name"),
        (conf_pairs((ec_crt, "")), r"empty file name", "an empty key file name")):
    r = check(extra)
    ok(r.returncode != 0 and re.search(pattern, r.stderr), "-t refuses %s" % label, r.stderr)

# Files that are not what they should be: refused with the file's name.
empty = os.path.join(pairs, "empty.pem")
open(empty, "w").close()
junk = os.path.join(pairs, "junk.pem")
with open(junk, "wb") as f:
    f.write(b"-----BEGIN CERTIFICATE-----\n\x00\r\n" + b"A" * 200000 + b"\n-----END CERTIFICATE-----\n")
long_chain = os.path.join(pairs, "long-chain.pem")
with open(long_chain, "w") as f:
    f.write(open(ec_crt).read() * 17)
for crt, key, pattern, label in (
        (empty, ec_key, r"tls_cert_file .*empty\.pem: ", "an empty certificate file"),
        (junk, ec_key, r"tls_cert_file .*junk\.pem: ", "a certificate file of garbage with NUL and CR"),
        (ec_crt, pairs, r"key %s: " % re.escape(pairs), "a directory as the key file"),
        (ec_crt, empty, r"key .*empty\.pem: ", "an empty key file"),
        (long_chain, ec_key, r"long-chain\.pem: .*at most 16 certificates in a chain", "a chain of 34 certificates")):
    r = check(conf_pairs((rsa_crt, rsa_key), (crt, key)))
    ok(r.returncode != 0 and re.search(pattern, r.stderr), "-t refuses %s" % label, r.stderr)

# A named pipe would block the open (and with it the main thread: no more
# reloads, signals or certificate watching) until a writer came; /dev/zero
# never ends; a file past 1 MiB is no certificate. Refused at once, by name.
fifo = os.path.join(pairs, "fifo.pem")
os.mkfifo(fifo)
big = os.path.join(pairs, "big.pem")
with open(big, "w") as f:
    f.write(open(ec_crt).read() + "#" * (2 << 20))
for crt, key, pattern, label in (
        (fifo, ec_key, r"fifo\.pem: not a regular file", "a named pipe as the certificate file"),
        (ec_crt, fifo, r"fifo\.pem: not a regular file", "a named pipe as the key file"),
        ("/dev/zero", ec_key, r"/dev/zero: not a regular file", "/dev/zero as the certificate"),
        (ec_crt, "/dev/zero", r"/dev/zero: not a regular file", "/dev/zero as the key"),
        (big, ec_key, r"big\.pem: larger than 1 MiB", "a certificate file of 2 MiB")):
    try:
        r = check(conf_pairs((rsa_crt, rsa_key), (crt, key)), timeout=15)
        ok(r.returncode != 0 and re.search(pattern, r.stderr), "-t refuses %s" % label, r.stderr)
    except subprocess.TimeoutExpired:
        ok(False, "-t refuses %s" % label, "still waiting after 15 s")

# The chain in the wrong order (the CA before the server's certificate):
# named as that, not as keys paired with the wrong certificates.
rev = os.path.join(pairs, "ec-reversed.pem")
with open(rev, "w") as f:
    leaf = open(ec_crt).read().split("-----END CERTIFICATE-----")[0]
    f.write(open(certs.ca).read() + leaf + "-----END CERTIFICATE-----\n")
r = check(conf_pairs((rev, ec_key)))
ok(r.returncode != 0 and re.search(r"ec-reversed\.pem: the certificate of the key .*is number 2;"
                                   r" it must come first", r.stderr) and
   "pair up in the order" not in r.stderr, "-t names a chain whose leaf is not first", r.stderr)

# A single pair whose key does not match: no word about the order of pairs.
r = check(conf_pairs((ec_crt, rsa_key)))
ok(r.returncode != 0 and "does not match" in r.stderr and "pair up in the order" not in r.stderr,
   "-t: a single mismatched pair is not blamed on the order of pairs", r.stderr)

# An SNI name with an RSA pair while the default pairs have none: an
# RSA-only client without that name would get this name's certificate
# (GnuTLS falls back to any pair that suits it); -t says so.
r = check(conf_pairs((ec_crt, ec_key)) + [("tls_sni", "mail.customer-a.example %s %s"
                                                     % (a_rsa_crt, a_rsa_key))])
like(r.stderr, r"tls_sni mail\.customer-a\.example: an RSA-2048 pair, but no tls_cert_file pair "
     r"of that key type: .*gets mail\.customer-a\.example's certificate",
     "-t warns of an SNI pair whose key type no default pair has")
r = check(conf_pairs((ec_crt, ec_key), (rsa_crt, rsa_key)) + SNI)
unlike(r.stderr, r"no tls_cert_file pair of that key type", "... and only then")

# An encrypted key: said so, with the way out.
enc = os.path.join(pairs, "ec-enc-key.pem")
subprocess.run(["openssl", "pkey", "-in", ec_key, "-aes256", "-passout", "pass:x", "-out", enc],
               check=True)
r = check(conf_pairs((ec_crt, enc)))
ok(r.returncode != 0 and re.search(r"ec-enc-key\.pem: an encrypted key", r.stderr),
   "-t names an encrypted key", r.stderr)

# Configurations written when a second tls_cert_file replaced the first:
# the error says how to fix them.
for extra, label in (
        ([("tls_cert_file", [rsa_crt, ec_crt]), ("tls_key_file", ec_key)],
         "a second tls_cert_file line (one key)"),
        (conf_pairs((certs.fullchain, certs.key), (ec_crt, ec_key)),
         "a second pair of the same key type")):
    r = check(extra)
    ok(r.returncode != 0 and re.search(r"no longer replaces? .*delete the", r.stderr),
       "-t explains the changed meaning for %s" % label, r.stderr)

# A certificate whose subject carries a line break and terminal escapes:
# -t prints it escaped, on one line (as the log does).
hk, hc = os.path.join(pairs, "hostile-key.pem"), os.path.join(pairs, "hostile.pem")
subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", hk, "-x509", "-days", "2", "-out", hc, "-subj",
                "/CN=evil\nsubmitd: tls: pair 9: forged\x1b[2J\x07"], check=True,
               capture_output=True)
r = check(conf_pairs((hc, hk)))
ok(r.returncode == 0 and "\x1b" not in r.stdout and "\x07" not in r.stdout and
   "pair 9" not in "".join(l for l in r.stdout.splitlines(True) if l.startswith("submitd: tls"))
   and re.search(r"tls: pair 1: ECDSA P-256 \"CN=evil\\x0asubmitd: tls: pair 9: forged"
                 r"\\x1b\[2J\\x07\" valid until", r.stdout),
   "-t escapes control characters in a certificate's subject", repr(r.stdout + r.stderr))

# Key and chain in one file (as Postfix's smtpd_tls_chain_files).
both = os.path.join(pairs, "ec-both.pem")
with open(both, "w") as f:
    f.write(open(ec_key).read() + open(ec_crt).read())
r = check(conf_pairs((both, both), (rsa_crt, rsa_key)))
ok(re.search(r"tls: pair 1: ECDSA P-256 .*\n.*tls: pair 2: RSA-2048", r.stdout),
   "one file holding key and chain serves as both", r.stdout + r.stderr)

# ---------------------------------------------------------------- reload
def renew(label, kind, crt, key, sighup, why):
    """Replaces the files of one pair by a new pair `label`; waits for the reload."""
    new_crt, new_key = make_pair(label, kind)
    FP[label] = fp_file(new_crt)
    NAMES[FP[label]] = label
    n = len(re.findall(r"configuration reloaded", d.log()))
    os.replace(new_key, key)
    os.replace(new_crt, crt)
    if sighup:
        os.kill(d.proc.pid, signal.SIGHUP)
    ok(wait_for(lambda: len(re.findall(r"configuration reloaded", d.log())) > n, 15), why,
       "\n".join(l for l in d.log().splitlines() if "reload" in l))


# SIGHUP after the RSA pair's files were replaced: new RSA, same ECDSA.
renew("rsa2", "rsa", rsa_crt, rsa_key, True, "reload after the RSA pair was replaced")
for mode in ("starttls", "tls"):
    is_(s_client(mode, *RSA_ONLY)[0], "rsa2", "%s after reload: the new RSA certificate" % mode)
    is_(s_client(mode)[0], "ec", "%s after reload: the same ECDSA certificate" % mode)

# Certificate watching: a renewed ECDSA pair is picked up without SIGHUP.
renew("ec2", "ec", ec_crt, ec_key, False, "certificate watching notices the changed ECDSA pair")
like(d.log(), r"reloading .*\(.*ec(-key)?\.pem changed\)", "the log names the changed file")
for mode in ("starttls", "tls"):
    is_(s_client(mode)[0], "ec2", "%s: the renewed ECDSA certificate" % mode)
    is_(s_client(mode, *RSA_ONLY)[0], "rsa2", "%s: the RSA certificate unchanged" % mode)

# A reload with a mismatched pair is refused; the pairs in use stay.
ec3_crt, ec3_key = make_pair("ec3", "ec")
FP["ec3"] = fp_file(ec3_crt)
NAMES[FP["ec3"]] = "ec3"
os.replace(ec3_key, ec_key)
ok(d.wait_log(r"reload refused: .*does not match", 15), "a key swapped alone: reload refused")
is_(s_client("tls")[0], "ec2", "the previous ECDSA pair is still served")

# A new, valid RSA pair while the ECDSA one is still half renewed: the reload
# is refused whole, never half new: RSA clients keep the previous RSA pair.
rsa3_crt, rsa3_key = make_pair("rsa3", "rsa")
FP["rsa3"] = fp_file(rsa3_crt)
NAMES[FP["rsa3"]] = "rsa3"
nref = len(re.findall(r"reload refused", d.log()))
os.replace(rsa3_key, rsa_key)
os.replace(rsa3_crt, rsa_crt)
os.kill(d.proc.pid, signal.SIGHUP)
ok(wait_for(lambda: len(re.findall(r"reload refused", d.log())) > nref, 15),
   "a new RSA pair next to a half-renewed ECDSA one: reload refused")
is_(s_client("tls", *RSA_ONLY)[0], "rsa2", "RSA clients still get the previous RSA pair")
is_(s_client("tls")[0], "ec2", "... and the others the previous ECDSA pair")
# The ECDSA certificate arrives: both new pairs are served.
n = len(re.findall(r"configuration reloaded", d.log()))
os.replace(ec3_crt, ec_crt)
ok(wait_for(lambda: len(re.findall(r"configuration reloaded", d.log())) > n, 15),
   "the renewal completed: reloaded")
is_(s_client("tls")[0], "ec3", "the new ECDSA pair")
is_(s_client("tls", *RSA_ONLY)[0], "rsa3", "the new RSA pair")

# ---------------------------------------------------------------- privileges
# Reloads read the files as the unprivileged user (as t/proto/90 runs it:
# user = nobody): a key only root can read is named at start, not found out
# at the renewal months later.
d.stop()
env.open_up()
p_crt, p_key = make_pair("private", "rsa")
os.chmod(p_key, 0o600)
d = env.submitd(standard_config(certs, sink, conf_pairs((ec_crt, ec_key), (p_crt, p_key)) +
                                [("user", "nobody")]))
ok(d.wait_log(r"submitd \S+ ready", 10), "ready with user = nobody", d.log()[-800:])
like(d.log(), r"warning: .*private-key\.pem: Permission denied after the privilege drop: "
     r"reloads will be refused", "the key nobody can read is named at start")
unlike(d.log(), r"ec-key\.pem: Permission denied", "... and only that one")
done()
