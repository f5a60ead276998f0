"""dkimtest.py: keys, DNS records and the two independent verifiers for the
DKIM tests (t/proto/61-dkim-lib.py, t/proto/62-dkim.py).

  keys = Keys(dir)                         # openssl-made keys, as OpenDKIM users have
  keys.rsa("r2048", 2048); keys.ed("e1")   # PEM files; their TXT records in keys.dns
  res = verify(keys, [path, ...])          # {path: [(verifier, idx, d, s, a, result, detail)]}

dkimpy runs under Debian's /usr/bin/python3 (where python3-dkim puts it),
Mail::DKIM under perl, OpenDKIM 2.11 as `opendkim -t FILE` (its test mode,
the keys from TestPublicKeys); all get DNS from a file, never from the
network. Mail::DKIM in Debian 12 (1.20230212) knows rsa-sha256 only: it
reports an ed25519-sha256 signature as "invalid (unsupported algorithm)";
Ed25519 is checked by dkimpy and OpenDKIM."""
import base64
import os
import re
import subprocess

LIB = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"
OPENDKIM = "/usr/sbin/opendkim"
VERIFIERS = ("dkimpy", "Mail::DKIM", "OpenDKIM")


def missing():
    """What is missing to run the verifiers, or None."""
    if subprocess.run([PY, "-c", "import dkim, nacl"], capture_output=True).returncode != 0:
        return "python3-dkim (Debian's dkimpy) is not installed"
    if subprocess.run(["perl", "-MMail::DKIM::Verifier", "-MNet::DNS", "-e1"],
                      capture_output=True).returncode != 0:
        return "libmail-dkim-perl is not installed"
    if not os.access(OPENDKIM, os.X_OK):
        return "opendkim is not installed"
    if subprocess.run(["openssl", "version"], capture_output=True).returncode != 0:
        return "openssl is not installed"
    return None


class Keys:
    def __init__(self, d, domain="example.org"):
        self.dir = d
        self.domain = domain
        self.dns = {}     # name -> TXT text
        self.path = {}    # selector -> key file

    def _pub_der(self, path):
        return subprocess.run(["openssl", "pkey", "-in", path, "-pubout", "-outform", "DER"],
                              capture_output=True, check=True).stdout

    def rsa(self, sel, bits=2048, domain=None, pkcs1=True):
        p = os.path.join(self.dir, "%s.private" % sel)
        # opendkim-genkey writes PKCS#1 ("BEGIN RSA PRIVATE KEY")
        argv = ["openssl", "genrsa", "-out", p, str(bits)]
        if pkcs1:
            argv[2:2] = ["-traditional"]
        subprocess.run(argv, capture_output=True, check=True)
        self.path[sel] = p
        self.dns["%s._domainkey.%s" % (sel, domain or self.domain)] = (
            "v=DKIM1; k=rsa; p=" + base64.b64encode(self._pub_der(p)).decode())
        return p

    def ed(self, sel, domain=None):
        p = os.path.join(self.dir, "%s.private" % sel)
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", p],
                       capture_output=True, check=True)
        self.path[sel] = p
        raw = self._pub_der(p)[-32:]  # RFC 8463 §4: the bare key
        self.dns["%s._domainkey.%s" % (sel, domain or self.domain)] = (
            "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode())
        return p

    def write_dns(self):
        p = os.path.join(self.dir, "dns.txt")
        with open(p, "w") as f:
            for k, v in self.dns.items():
                f.write("%s %s\n" % (k, v))
        return p


def verify(keys, paths):
    """Runs both verifiers on the files; returns {path: [(verifier, idx, d, s,
    a, result, detail)]} where result is "pass", "fail", "invalid", ...."""
    dns = keys.write_dns()
    out = {p: [] for p in paths}
    for name, argv in (("dkimpy", [PY, os.path.join(LIB, "dkimverify.py"), dns]),
                       ("Mail::DKIM", ["perl", os.path.join(LIB, "dkimverify.pl"), dns])):
        r = subprocess.run(argv + list(paths), capture_output=True, timeout=300)
        for line in r.stdout.decode("utf-8", "replace").splitlines():
            f = line.split(" ", 6)
            if len(f) < 6 or f[0] not in out:
                continue
            out[f[0]].append((name, int(f[1]), f[2][2:], f[3][2:], f[4][2:], f[5],
                              f[6] if len(f) > 6 else ""))
        if r.returncode != 0:
            for p in paths:
                out[p].append((name, -1, "", "", "", "crashed",
                               r.stderr.decode("utf-8", "replace")[-300:]))
    conf = os.path.join(keys.dir, "opendkim.conf")
    with open(conf, "w") as f:
        f.write("Mode v\nSyslog no\nTestPublicKeys %s\nAlwaysAddARHeader yes\n" % dns)
    for p in paths:
        # -vvv prints the Authentication-Results field it would add: one
        # "dkim=RESULT ... header.a=ALG header.s=SEL" per signature
        r = subprocess.run([OPENDKIM, "-x", conf, "-vvv", "-t", p], capture_output=True,
                           timeout=300)
        text = (r.stdout + r.stderr).decode("utf-8", "replace")
        m = re.search(r"hname='Authentication-Results' hvalue='([^']*)'", text)
        found = 0
        for part in (m.group(1) if m else "").split(";"):
            res = re.search(r"dkim=(\w+)", part)
            if not res:
                continue
            tag = {k: v for k, v in re.findall(r"header\.(\w)=(\S+)", part)}
            out[p].append(("OpenDKIM", found, tag.get("d", ""), tag.get("s", ""),
                           tag.get("a", ""), res.group(1), " ".join(part.split())))
            found += 1
        if found == 0:
            out[p].append(("OpenDKIM", -1, "", "", "", "none", text[-300:]))
    return out


def judge(results, want_sigs, verifiers=VERIFIERS):
    """True when each verifier saw want_sigs signatures and passed every one
    it supports (Mail::DKIM: rsa-sha256 only), and a text for diagnostics."""
    good = True
    for v in verifiers:
        mine = [r for r in results if r[0] == v]
        if len(mine) != want_sigs:
            good = False
        for r in mine:
            if v == "Mail::DKIM" and r[4] == "ed25519-sha256":
                good = good and r[6].startswith("invalid (unsupported algorithm")
            elif v == "OpenDKIM" and r[3] == "r4096":
                # its test mode does not take the 4096-bit key's record
                # (784 octets) from TestPublicKeys: "neutral", never "fail"
                good = good and r[5] in ("pass", "neutral")
            else:
                good = good and r[5] == "pass"
    return good, "; ".join("%s #%d d=%s s=%s %s %s %s" % r[:7] for r in results)
