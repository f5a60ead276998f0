"""A private Cyrus saslauthd (Debian's sasl2-bin) for the tests, configured
as the LibreLAMP guide's "smtpd_sasl_type = cyrus" setups run it, but with
the sasldb mechanism on a private database.

saslauthd's sasldb mechanism always opens /etc/sasldb2, so it runs in its
own mount namespace (unshare -m) where a private sasldb, made with
saslpasswd2 -f, is bind-mounted over that path; the machine's file is never
touched. Its socket directory (-m) is private too; -d keeps it in the
foreground (one process in a session of its own: on SIGTERM it signals
its whole process group). A login "user@realm" reaches
it as user and realm (submitd splits it, as Cyrus SASL's library does), so
sasldb entries are made with saslpasswd2 -u realm user."""
import os
import shutil
import subprocess
import time

from harness import terminate

SASLAUTHD = "/usr/sbin/saslauthd"
SASLPASSWD2 = "/usr/sbin/saslpasswd2"
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"


def available():
    return (os.geteuid() == 0 and os.access(SASLAUTHD, os.X_OK) and
            os.access(SASLPASSWD2, os.X_OK) and os.path.exists("/etc/sasldb2"))


class Saslauthd:
    def __init__(self, dir, users, spawn=subprocess.Popen, realm_split=False):
        """users: {"alice@example.org": "secret"}; a login with "@" is stored
        as user alice in realm example.org (saslpasswd2 -u)."""
        self.dir = dir
        self.users = users
        self.spawn = spawn
        self.realm_split = realm_split
        self.db = os.path.join(dir, "sasldb2")
        self.run = os.path.join(dir, "run")
        self.socket = os.path.join(self.run, "mux")
        self.log = os.path.join(dir, "saslauthd.log")
        self.proc = None

    def start(self, timeout=10):
        os.makedirs(self.run, exist_ok=True)
        if not os.path.exists(self.db):
            for login, pw in self.users.items():
                user, _, realm = login.partition("@")
                argv = [SASLPASSWD2, "-p", "-c", "-f", self.db]
                if realm:
                    argv += ["-u", realm]
                subprocess.run(argv + [user], input=pw.encode(), check=True, timeout=30)
        args = [SASLAUTHD, "-a", "sasldb", "-m", self.run, "-d", "-n", "0"]
        if self.realm_split:
            args.append("-r")
        script = 'mount --bind "$0" /etc/sasldb2 && exec "$@"'
        self.logf = open(self.log, "ab")
        self.proc = self.spawn([UNSHARE, "-m", "--propagation", "private", "sh", "-c", script,
                                self.db] + args, stdout=self.logf, stderr=self.logf,
                               stdin=subprocess.DEVNULL, start_new_session=True)
        end = time.time() + timeout
        while time.time() < end:
            if os.path.exists(self.socket):
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("saslauthd did not start: %s" % open(self.log, errors="replace").read())

    def stop(self):
        terminate(self.proc)
        self.proc = None
        for f in ("mux", "saslauthd.pid", "saslauthd.pid.lock", "mux.accept"):
            try:
                os.unlink(os.path.join(self.run, f))
            except OSError:
                pass

    def text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""
