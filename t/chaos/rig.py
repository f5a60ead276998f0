"""The fault-injection rig: a private Dovecot, MariaDB and recording
downstream (t/lib/), submitd checking logins in Dovecot and sender ownership
in MariaDB, and a steady authenticated load in which every message carries a
unique token. After the faults, reconcile() compares every 250 the clients got
with what the downstream stored, and the downstream with the client log.

Used by t/chaos/chaos.py (the driver) and by the t/proto/9x files that test
one fault each. Python standard library only; needs root (Dovecot).
"""
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import harness  # noqa: E402
from harness import (MYHOST, SMTP, Env, b64, free_port, spawn, stuff,  # noqa: E402,F401
                     wait_for, diag)
import dovecot  # noqa: E402
import sink as sinkmod  # noqa: E402

USERS = {
    "alice@example.com": "alice-secret",
    "bob@example.com": "bob-secret",
    "john@example.org": "john-secret",
}
REFUSE_MARK = b"X-Chaos-Refuse: yes"


def skip_unless_available():
    """For a TAP test file: a plan of 0 with the reason, and exit, when the
    rig cannot run here."""
    why = available()
    if why:
        print("1..0 # SKIP %s" % why, flush=True)
        sys.exit(0)


def available():
    """None when the rig can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root (Dovecot)"
    path = os.environ.get("PATH", "") + ":/usr/sbin"
    import shutil
    if not shutil.which("mariadbd", path=path):
        return "needs mariadb-server (scripts/deps.sh)"
    if not os.access(os.environ.get("DOVECOT", "/usr/sbin/dovecot"), os.X_OK):
        return "needs dovecot-core (scripts/deps.sh)"
    return None


class Rig:
    def __init__(self, env=None, workers=2, refuse=False, mysql_extra="", submitd_extra=(),
                 nofile=None):
        from dovecot import Dovecot
        from mariadb import DBNAME, PASSWORD, USER, MariaDB
        self.env = env or Env()
        self.env.require_binary()
        self.nofile = nofile
        if nofile:
            # submitd under a hard descriptor limit it cannot raise
            harness.raise_nofile(nofile * 4)
            wrapper = self.env.path("limited-submitd")
            with open(wrapper, "w") as f:
                f.write("#!/bin/sh\nulimit -Sn %d && ulimit -Hn %d || exit 111\n"
                        "exec \"$SUBMITD_REAL\" \"$@\"\n" % (nofile, nofile))
            os.chmod(wrapper, 0o755)
            os.environ["SUBMITD_REAL"] = os.path.abspath(self.env.binary)
            self.env.binary = wrapper
        self.certs = self.env.certs()
        self.dv = Dovecot(users={u: (p, "SSHA256", "") for u, p in USERS.items()},
                          failure_delay="0", spawn=spawn)
        self.dv.start()
        harness._cleanups.append(self.dv.stop)
        self.db = MariaDB(self.env.path("mariadb"))
        harness._cleanups.append(self.db.stop)
        self.db.start()
        args = []
        if refuse:
            args = ["--reject-data", "554", "5.7.1 Refused by the chaos downstream",
                    "--reject-data-match", re.escape(REFUSE_MARK.decode())]
        self.sink = self.env.sink(*args)
        with open(os.path.join(harness.TOP, "conf", "mysql-sender-login.cf")) as f:
            query = [ln.split("=", 1)[1].strip() for ln in f if re.match(r"\s*query\s*=", ln)][-1]
        self.cf = self.env.path("mysql-sender-login.cf")
        with open(self.cf, "w") as f:
            f.write("hosts = inet:127.0.0.1:%d\nuser = %s\npassword = %s\ndbname = %s\n"
                    "query = %s\nconnect_timeout = 2\nquery_timeout = 3\n%s"
                    % (self.db.port(), USER, PASSWORD, DBNAME, query, mysql_extra))
        self.tls_port = free_port()
        self.conf = [("myhostname", MYHOST),
                     ("listen", "127.0.0.1:%d tls" % self.tls_port),
                     ("tls_cert_file", self.certs.fullchain), ("tls_key_file", self.certs.key),
                     ("mynetworks", "127.0.0.0/8"),
                     ("relayhost", self.sink.relayhost),
                     ("dovecot_auth_socket", self.dv.socket),
                     ("workers", str(workers)),
                     ("log_level", "info"),
                     ("relay_timeout", "10s"),
                     ("sender_login_maps", "mysql:" + self.cf),
                     # every MAIL asks MariaDB: faults there show at once
                     ("sender_login_cache_ttl", "0"),
                     ("sender_login_negative_cache_ttl", "0")]
        over = {k for k, _ in submitd_extra}
        self.conf = [(k, v) for k, v in self.conf if k not in over] + list(submitd_extra)
        self.d = None
        self.events = []          # (token, outcome, code, t_start, t_end, login)
        self.lock = threading.Lock()
        self.stop_load = threading.Event()
        self.threads = []
        self.seq = 0
        self.tag = "%x" % int(time.time() * 1000)

    # ---- processes ----
    def start_submitd(self, name="submitd"):
        self.d = self.env.submitd(self.conf, name=name)
        wait_for(lambda: self.d.log().count("connected, mechanisms") >= 1, 10)
        return self.d

    def restart_submitd(self):
        """After a SIGKILL: a new process on the same config and ports."""
        self.d.proc = None
        self.d.start()
        wait_for(lambda: "ready" in self.d.log(), 10)

    def mysql_threads(self):
        out = self.db.client("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                             "WHERE USER='submitd';")
        return int(out.strip() or 0)

    # ---- load ----
    def _token(self):
        with self.lock:
            self.seq += 1
            return "chaos-%s-%06d" % (self.tag, self.seq)

    def _record(self, *ev):
        with self.lock:
            self.events.append(ev)

    def _session(self, login, timeout):
        c = SMTP("127.0.0.1", self.tls_port, tls=True, certs=self.certs, timeout=timeout)
        if c.greeting is None or c.greeting.code != 220:
            raise OSError("greeting: %s" % (c.greeting,))
        c.ehlo("chaos.test.example")
        r = c.cmd("AUTH PLAIN " + b64("\0%s\0%s" % (login, USERS[login])))
        if r.code != 235:
            c.close()
            raise OSError("AUTH: %s" % r)
        return c

    def _worker(self, n, per_session, refuse_every, timeout, pause):
        logins = sorted(USERS)
        login = logins[n % len(logins)]
        k = 0
        while not self.stop_load.is_set():
            try:
                c = self._session(login, timeout)
            except Exception as e:  # noqa: BLE001
                self._record(None, "connect", str(e)[:80], time.time(), time.time(), login)
                time.sleep(0.2)
                continue
            try:
                for _ in range(per_session):
                    if self.stop_load.is_set():
                        break
                    k += 1
                    tok = self._token()
                    refuse = refuse_every and k % refuse_every == 0
                    extra = b"X-Chaos-Token: " + tok.encode() + b"\r\n"
                    if refuse:
                        extra += REFUSE_MARK + b"\r\n"
                    msg = (b"From: <%s>\r\nTo: <sink@example.net>\r\nSubject: %s\r\n%s"
                           b"Date: Thu, 1 Jan 2026 00:00:00 +0000\r\nMessage-ID: <%s@chaos>\r\n"
                           b"\r\nbody of %s\r\n" % (login.encode(), tok.encode(), extra,
                                                     tok.encode(), tok.encode()))
                    t0 = time.time()
                    code = None
                    try:
                        out = c.send_message(login, ["sink@example.net"], stuff(msg))
                        codes = [r.code for r in out]
                        if codes[:3] == [250, 250, 354]:
                            what = "final"
                            code = codes[-1] if len(codes) > 3 else None
                        else:
                            # the first refusal (a 451 to RCPT, not the 554
                            # "no valid recipients" to DATA that follows it)
                            what = "early"
                            code = next((x for x in codes if x not in (250, 354)), None)
                    except Exception:  # noqa: BLE001
                        what = "error"
                    self._record(tok, what, code, t0, time.time(), login, bool(refuse))
                    if code is None:
                        break
                    if pause:
                        time.sleep(pause)
                    if code != 250 and not refuse:
                        time.sleep(0.1)   # a client backs off after a failure
                    if what != "final":
                        c.cmd("RSET")
            except Exception:  # noqa: BLE001
                pass
            finally:
                try:
                    c.close()
                except Exception:  # noqa: BLE001
                    pass

    def start_load(self, clients=4, per_session=5, refuse_every=0, timeout=30, pause=0.0):
        self.stop_load.clear()
        for n in range(clients):
            t = threading.Thread(target=self._worker,
                                 args=(n, per_session, refuse_every, timeout, pause), daemon=True)
            t.start()
            self.threads.append(t)

    def end_load(self, wait=60):
        self.stop_load.set()
        for t in self.threads:
            t.join(wait)
        self.threads = []

    def accepted_since(self, t):
        with self.lock:
            return sum(1 for e in self.events if e[0] and e[1] == "final" and e[2] == 250
                       and e[4] >= t)

    def wait_flowing(self, since, timeout=60):
        """Seconds from `since` until a message started after it got 250, or None."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                done = [e[4] for e in self.events if e[0] and e[2] == 250 and e[3] >= since]
            if done:
                return min(done) - since
            time.sleep(0.1)
        return None

    # ---- reconciliation ----
    def reconcile(self, settle=15):
        """Returns a dict of counts; lost and dup must be 0."""
        stored = {}
        deadline = time.time() + settle
        want = None
        while True:
            stored = {}
            for m in sinkmod.load_messages(self.sink.dir):
                for tok in re.findall(rb"X-Chaos-Token: (chaos-[0-9a-f]+-\d+)", m.content):
                    tok = tok.decode()
                    stored[tok] = stored.get(tok, 0) + 1
            with self.lock:
                events = list(self.events)
            want = [e for e in events if e[0] and e[2] == 250]
            if all(e[0] in stored for e in want) or time.time() > deadline:
                break
            time.sleep(0.5)
        sent = {e[0]: e for e in events if e[0]}
        res = {
            "attempts": len(sent),
            "accepted_250": len(want),
            "deferred_4xx": sum(1 for e in sent.values() if e[2] is not None and 400 <= e[2] < 500),
            "refused_5xx": sum(1 for e in sent.values() if e[2] is not None and e[2] >= 500),
            "no_reply": sum(1 for e in sent.values() if e[2] is None),
            "connect_failures": sum(1 for e in events if e[0] is None),
            "in_sink": len(stored),
            "lost": sorted(e[0] for e in want if e[0] not in stored),
            "dup": sorted(t for t, n in stored.items() if n > 1),
            "unknown": sorted(t for t in stored if t not in sent),
            # stored although the client did not get 250 (it would send again):
            # allowed by RFC 5321 §6 (a lost reply), counted
            "stored_without_250": sorted(t for t in stored if t in sent and sent[t][2] != 250),
            "refused_but_stored": sorted(t for t, e in sent.items()
                                         if len(e) > 6 and e[6] and t in stored),
            "refusal_not_5xx": sorted(t for t, e in sent.items()
                                      if len(e) > 6 and e[6] and e[2] is not None
                                      and e[2] < 500 and e[2] >= 200 and e[2] < 300),
        }
        return res


def pgrep_children(pid):
    return dovecot.child_pids(pid)


def sigstop(pid, seconds):
    os.kill(pid, signal.SIGSTOP)
    time.sleep(seconds)
    os.kill(pid, signal.SIGCONT)


# ---- faults: each returns when the fault is over (the component is back or
# resumed); the driver measures recovery from then.

def _pids_tree(pid):
    out = [pid]
    for k in dovecot.child_pids(pid):
        out += _pids_tree(k)
    return out


def _signal_all(pids, sig):
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def fault_dovecot_kill(r, seconds):
    pids = _pids_tree(r.dv.proc.pid)
    _signal_all(pids, signal.SIGKILL)
    r.dv.proc.wait()
    r.dv.proc = None
    time.sleep(seconds)
    r.dv.start()


def fault_dovecot_stop(r, seconds):
    pids = _pids_tree(r.dv.proc.pid)
    _signal_all(pids, signal.SIGSTOP)
    time.sleep(seconds)
    _signal_all(pids, signal.SIGCONT)


def fault_mariadb_kill(r, seconds):
    pid = r.db.pid()
    os.kill(pid, signal.SIGKILL)
    try:
        os.waitpid(pid, 0)    # t/lib/mariadb.py started it as our child
    except ChildProcessError:
        pass
    try:
        os.unlink(r.db.pidfile)
    except FileNotFoundError:
        pass
    wait_for(lambda: r.db.pid() is None, 10)
    time.sleep(seconds)
    r.db.start()


def _pause(pid, seconds):
    os.kill(pid, signal.SIGSTOP)
    time.sleep(seconds)
    os.kill(pid, signal.SIGCONT)


def _kill_and_start(proc_holder, seconds):
    """SIGKILL proc_holder.proc (a harness SinkProc or Submitd), start it again."""
    p = proc_holder.proc
    p.kill()
    p.wait()
    proc_holder.proc = None
    time.sleep(seconds)
    proc_holder.start()


def fault_mariadb_stop(r, seconds):
    _pause(r.db.pid(), seconds)


def fault_downstream_kill(r, seconds):
    _kill_and_start(r.sink, seconds)


def fault_downstream_stop(r, seconds):
    _pause(r.sink.proc.pid, seconds)


def fault_submitd_kill(r, seconds):
    _kill_and_start(r.d, seconds)


def fault_submitd_stop(r, seconds):
    _pause(r.d.proc.pid, seconds)


def fault_reload_storm(r, seconds):
    end = time.time() + seconds
    while time.time() < end:
        os.kill(r.d.proc.pid, signal.SIGHUP)
        time.sleep(0.1)


def fault_fd_exhaustion(r, seconds):
    """Idle connections until submitd runs out of descriptors (it runs with
    r.nofile), held for `seconds`, then closed."""
    idle = []
    n0 = r.d.log().count("pausing new connections")
    try:
        for _ in range(r.nofile + 200):
            idle.append(socket.create_connection(("127.0.0.1", r.tls_port), timeout=5))
        wait_for(lambda: r.d.log().count("pausing new connections") > n0, 10)
        time.sleep(seconds)
    finally:
        for s in idle:
            s.close()


FAULTS = {
    "dovecot-kill": fault_dovecot_kill,
    "dovecot-stop": fault_dovecot_stop,
    "mariadb-kill": fault_mariadb_kill,
    "mariadb-stop": fault_mariadb_stop,
    "downstream-kill": fault_downstream_kill,
    "downstream-stop": fault_downstream_stop,
    "submitd-kill": fault_submitd_kill,
    "submitd-stop": fault_submitd_stop,
    "reload-storm": fault_reload_storm,
    "fd-exhaustion": fault_fd_exhaustion,
}
