"""harness.py: the protocol-test harness for submitd (Python 3 stdlib only).

  from harness import *          # (t/proto files put t/lib on sys.path)
  env = Env()                    # private temp dir, removed at exit
  certs = env.certs()            # CA + server cert (localhost, mail.test.example, 127.0.0.1, ::1)
  sink = env.sink()              # recording downstream (t/lib/sink.py), started
  d = env.submitd(config)        # $SUBMITD -c FILE, started, ports waited for
  env, certs, sink = setup()     # the three above, the submitd binary required
  c = d.connect("starttls")      # raw SMTP client on that listener (greeting read)
  ...
  done()                         # stops everything (sanitizer check), prints the plan

TAP helpers: ok, is_, like, unlike, diag, skip, skip_all, done.
Every process started here is killed at exit, even when the test crashes.

A skip is a gap: under CI (CI=true in the environment) skip() and skip_all()
report "not ok" instead, so a neighbour or tool missing on the CI machine
fails the run rather than hiding the tests that need it.

  VARIANT = variants(["passwd-file", "sql"])   # before Env(): the rest of
      # the file runs once per variant (a forked child each, one TAP stream,
      # test names prefixed "sql: "); private_dovecot(env, VARIANT) then
      # starts the Dovecot of that deployment.
"""

import atexit
import ctypes
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

LIB = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(LIB))
sys.path.insert(0, LIB)
import sink as sinkmod  # noqa: E402

undot = sinkmod.undot
MYHOST = "mail.test.example"

# ---------------------------------------------------------------- TAP

_n = 0
_failed = 0
_procs = []
_cleanups = []
_prefix = ""


def under_ci():
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def ok(cond, name="", diag_=None):
    global _n, _failed
    _n += 1
    name = (_prefix + name).replace("\n", " ").replace("#", "\\#")
    if cond:
        print("ok %d - %s" % (_n, name), flush=True)
    else:
        _failed += 1
        print("not ok %d - %s" % (_n, name), flush=True)
        if diag_ is not None:
            diag(diag_)
    _count(_n, _failed)
    return bool(cond)


def diag(msg):
    text = msg if isinstance(msg, str) else repr(msg)
    for line in text.splitlines() or [""]:
        print("# " + line, flush=True)


def is_(got, want, name=""):
    if got == want:
        return ok(True, name)
    return ok(False, name, "     got: %s\n  wanted: %s" % (_short(got), _short(want)))


def like(got, pattern, name="", flags=0):
    s = got if isinstance(got, str) else (got.decode("utf-8", "replace")
                                          if isinstance(got, (bytes, bytearray)) else repr(got))
    if re.search(pattern, s, flags):
        return ok(True, name)
    return ok(False, name, "     got: %s\n  wanted match: %s" % (_short(s), pattern))


def unlike(got, pattern, name="", flags=0):
    s = got if isinstance(got, str) else (got.decode("utf-8", "replace")
                                          if isinstance(got, (bytes, bytearray)) else repr(got))
    if not re.search(pattern, s, flags):
        return ok(True, name)
    return ok(False, name, "     got: %s\n  wanted no match: %s" % (_short(s), pattern))


def skip(name, why):
    """One skipped test; under CI a failure (see the module comment)."""
    global _n, _failed
    if under_ci():
        ok(False, "%s: skipped under CI=true: %s" % (name, why))
        return
    _n += 1
    print("ok %d - %s%s # SKIP %s" % (_n, _prefix, name.replace("#", "\\#"), why), flush=True)
    _count(_n, _failed)


def skip_all(why):
    """The whole file cannot run (a neighbour or tool is missing): prints
    "1..0 # SKIP why" and exits 0; under CI one failing test and exit 1.
    After tests ran already, the rest of the file is one skip."""
    if _n > 0 or _variant_counts is not None:
        skip("the rest of this file", why)
        done()
    if under_ci():
        print("not ok 1 - skipped under CI=true: %s\n1..1" % why.replace("#", "\\#"), flush=True)
        sys.stdout.flush()
        os._exit(1)
    print("1..0 # SKIP %s" % why, flush=True)
    sys.stdout.flush()
    os._exit(0)


def _short(v, limit=600):
    r = repr(v)
    return r if len(r) <= limit else r[:limit] + "... (%d chars)" % len(r)


def failures():
    return _failed


_variant_counts = None   # shared with the variants() parent: tests run, failed


def _count(n, failed):
    if _variant_counts is not None:
        _variant_counts[0:16] = b"%8d%8d" % (n, failed)


def done():
    """Stops everything (runs checks such as the sanitizer scan), prints the
    plan and exits: status 1 if anything failed."""
    _cleanup()
    sys.stdout.flush()
    if _variant_counts is not None:
        # a variants() child: the parent continues the numbering and prints the plan
        os._exit(0)
    print("1..%d" % _n, flush=True)
    sys.stdout.flush()
    os._exit(1 if _failed else 0)


def small_asan_quarantine(binary):
    """Under AddressSanitizer freed memory sits in a quarantine (256 MB by
    default) and would count as RSS growth: for a binary built with it, keep
    the quarantine small so that RSS shows what is live. Call before
    starting submitd."""
    with open(binary, "rb") as f:
        if b"__asan_init" in f.read():
            os.environ["ASAN_OPTIONS"] = (os.environ.get("ASAN_OPTIONS", "") +
                                          ":quarantine_size_mb=1:thread_local_quarantine_size_kb=64")


def variants(names, env_var="T_VARIANT"):
    """Runs the rest of the calling test file once per name, each in a
    forked child, as one TAP stream (names other than the first are
    prefixed "NAME: " in test names); returns the name in the child. Call
    it before anything is started. T_VARIANT=NAME runs only that one."""
    import mmap
    global _n, _failed, _prefix, _variant_counts
    only = os.environ.get(env_var)
    if only and only not in names:
        print("Bail out! %s=%s: not one of %s" % (env_var, only, ", ".join(names)), flush=True)
        os._exit(1)
    sys.stdout.flush()
    counts = mmap.mmap(-1, 16)   # MAP_SHARED: the child's counts are seen here
    stopped = []

    def on_signal(signum, frame):
        # the child got it too (one process group): let it clean up, then stop
        stopped.append(signum)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    for name in names:
        if only and name != only:
            continue
        counts[0:16] = b"%8d%8d" % (_n, _failed)
        pid = os.fork()
        if pid == 0:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, _on_signal)
            _variant_counts = counts
            _prefix = "" if name == names[0] else "%s: " % name
            diag("variant: %s" % name)
            return name
        _, status = os.waitpid(pid, 0)
        _n, _failed = int(counts[0:8]), int(counts[8:16])
        if stopped:
            print("# killed by signal %d" % stopped[0], flush=True)
            os._exit(128 + stopped[0])
        if status != 0:
            ok(False, "variant %s ran to its end (wait status %d)" % (name, status))
    print("1..%d" % _n, flush=True)
    os._exit(1 if _failed else 0)


def _cleanup():
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            ok(False, "cleanup %s" % getattr(fn, "__name__", fn), repr(e))
    for p in _procs:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(5)
            except Exception:  # noqa: BLE001
                pass


def _on_signal(signum, frame):
    print("# killed by signal %d" % signum, flush=True)
    _cleanup()
    os._exit(128 + signum)


atexit.register(_cleanup)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)
signal.signal(signal.SIGHUP, _on_signal)


def _die_with_parent():
    # children die if the test process dies (even by SIGKILL)
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


def spawn(argv, **kw):
    kw.setdefault("preexec_fn", _die_with_parent)
    p = subprocess.Popen(argv, **kw)
    _procs.append(p)
    return p


def terminate(proc, timeout=5):
    """SIGTERM, then SIGKILL after timeout seconds; reaps it. None is fine."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def accept_loop(sock, handle):
    """A thread accepting on the listening sock; each connection runs
    handle(conn) in a thread of its own (scripted neighbours)."""
    import threading

    def loop():
        while True:
            try:
                c, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(c,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()


def raise_nofile(n=65536):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(n, hard) if hard != resource.RLIM_INFINITY else n
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---------------------------------------------------------------- ports

_used_ports = set()


def free_port(host="127.0.0.1"):
    """A TCP port currently free on host (and not handed out before)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(200):
        s = socket.socket(fam, socket.SOCK_STREAM)
        try:
            s.bind((host, 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port not in _used_ports and port > 1024:
            _used_ports.add(port)
            return port
    raise RuntimeError("no free port")


def split_hostport(hp):
    return sinkmod.split_hostport(hp)


def wait_port(host, port, timeout=10.0, proc=None):
    deadline = time.time() + timeout
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(1)
        try:
            s.connect((host, port))
            return True
        except OSError:
            time.sleep(0.05)
        finally:
            s.close()
    return False


def wait_unix(path, timeout=10.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return True
        except OSError:
            time.sleep(0.05)
        finally:
            s.close()
    return False


def wait_for(fn, timeout=10.0, interval=0.05):
    """Polls fn() until it returns something truthy; returns the last value."""
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v or time.time() >= deadline:
            return v
        time.sleep(interval)


# ---------------------------------------------------------------- environment

class Env:
    """A private temp dir and everything started in it."""

    def __init__(self, name=None):
        name = name or os.path.splitext(os.path.basename(sys.argv[0]))[0]
        self.dir = tempfile.mkdtemp(prefix="submitd-t-%s-" % name)
        self.binary = os.environ.get("SUBMITD") or os.path.join(TOP, "build", "submitd")
        self._certs = None
        self._n = 0
        _cleanups.insert(0, self._remove)

    def _remove(self):
        if os.environ.get("T_KEEP"):
            diag("kept temp dir %s" % self.dir)
            return
        shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def open_up(self):
        """Makes everything in the test directory readable by every user (test
        keys only), for a submitd that drops to "user = nobody" and reads its
        files again on reload."""
        os.chmod(self.dir, 0o755)
        for root, dirs, files in os.walk(self.dir):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
            for f in files:
                os.chmod(os.path.join(root, f), 0o644)

    def subdir(self, prefix):
        self._n += 1
        d = self.path("%s%d" % (prefix, self._n))
        os.makedirs(d)
        return d

    def certs(self):
        if self._certs is None:
            self._certs = Certs(self.path("certs"))
        return self._certs

    def sink(self, *args, **kw):
        s = SinkProc(self, *args, **kw)
        s.start()
        return s

    def submitd(self, config, start=True, **kw):
        d = Submitd(self, config, **kw)
        if start:
            d.start()
        return d

    def require_binary(self):
        if not os.access(self.binary, os.X_OK):
            print("Bail out! submitd binary not found at %s (set SUBMITD)" % self.binary,
                  flush=True)
            _cleanup()
            os._exit(1)


# ---------------------------------------------------------------- certificates

class Certs:
    """A private CA and a server certificate for localhost, mail.test.example,
    127.0.0.1 and ::1. Attributes: ca, cert, key, fullchain (paths)."""

    def __init__(self, d):
        os.makedirs(d, exist_ok=True)
        self.dir = d
        self.ca = os.path.join(d, "ca.pem")
        self.ca_key = os.path.join(d, "ca-key.pem")
        self.cert = os.path.join(d, "server.pem")
        self.key = os.path.join(d, "server-key.pem")
        self.fullchain = os.path.join(d, "fullchain.pem")

        def run(*a):
            subprocess.run(["openssl"] + list(a), check=True, cwd=d,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", self.ca_key, "-out", self.ca, "-days", "2", "-subj", "/CN=submitd test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", self.key, "-out", "server.csr", "-subj", "/CN=" + MYHOST)
        with open(os.path.join(d, "ext.cnf"), "w") as f:
            f.write("subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1,IP:::1\n"
                    "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n" % MYHOST)
        run("x509", "-req", "-in", "server.csr", "-CA", self.ca, "-CAkey", self.ca_key,
            "-CAcreateserial", "-out", self.cert, "-days", "2", "-extfile", "ext.cnf")
        with open(self.fullchain, "w") as out:
            for p in (self.cert, self.ca):
                with open(p) as f:
                    out.write(f.read())

    def issue(self, d, name, key="ec", cn=MYHOST, sans=(MYHOST, "localhost")):
        """A new pair from this CA in directory d: key "ec" (P-256), "rsa"
        (2048) or "ed25519"; SANs sans and 127.0.0.1. Returns (fullchain, key)."""
        newkey = {"ec": ["ec", "-pkeyopt", "ec_paramgen_curve:P-256"], "rsa": ["rsa:2048"],
                  "ed25519": ["ed25519"]}[key]
        keyf, crt = os.path.join(d, name + "-key.pem"), os.path.join(d, name + ".pem")
        csr, ext = os.path.join(d, name + ".csr"), os.path.join(d, name + ".ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=%s,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
                    % ",".join("DNS:" + s for s in sans))
        for argv in (["req", "-newkey"] + newkey + ["-nodes", "-keyout", keyf, "-out", csr,
                                                    "-subj", "/CN=" + cn],
                     ["x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
                      "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext]):
            subprocess.run(["openssl"] + argv, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, cwd=d)
        with open(crt, "a") as out, open(self.ca) as ca:
            out.write(ca.read())
        return crt, keyf

    def client_context(self, **kw):
        ctx = ssl.create_default_context(cafile=self.ca)
        for k, v in kw.items():
            setattr(ctx, k, v)
        return ctx


# ---------------------------------------------------------------- sink

class SinkProc:
    """The recording downstream (t/lib/sink.py) as a process.
    sink.port / sink.host / sink.unix; sink.messages(); sink.log()."""

    def __init__(self, env, *extra, lmtp=False, unix=None, port=None, host="127.0.0.1",
                 starttls=False, args=()):
        self.env = env
        self.dir = env.subdir("sink")
        self.logfile = os.path.join(self.dir, "sink.log")
        self.lmtp = lmtp
        self.unix = unix
        self.host = host
        self.port = None if unix else (port or free_port(host))
        self.args = list(extra) + list(args)
        if starttls:
            c = env.certs()
            self.args += ["--starttls", c.fullchain, c.key]
        self.proc = None

    @property
    def listen(self):
        return "[%s]:%d" % (self.host, self.port) if ":" in self.host else \
            "%s:%d" % (self.host, self.port)

    @property
    def relayhost(self):
        """The submitd relayhost value for this sink."""
        if self.unix:
            return "lmtp:unix:" + self.unix if self.lmtp else "unix:" + self.unix
        return ("lmtp:" if self.lmtp else "") + "[%s]:%d" % (self.host, self.port)

    def start(self):
        argv = [sys.executable, os.path.join(LIB, "sink.py"), "--dir", self.dir]
        argv += ["--unix", self.unix] if self.unix else ["--listen", self.listen]
        if self.lmtp:
            argv.append("--lmtp")
        argv += self.args
        self.errf = open(os.path.join(self.dir, "sink.stderr"), "ab")
        self.proc = spawn(argv, stdout=self.errf, stderr=self.errf, stdin=subprocess.DEVNULL)
        up = wait_unix(self.unix, 10, self.proc) if self.unix else \
            wait_port(self.host, self.port, 10, self.proc)
        if not up:
            diag("sink did not start: " + self.stderr())
            raise RuntimeError("sink did not start")
        _cleanups.append(self.stop)
        return self

    def stop(self):
        terminate(self.proc)
        self.proc = None

    def stderr(self):
        try:
            with open(os.path.join(self.dir, "sink.stderr"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def messages(self):
        return sinkmod.load_messages(self.dir)

    def count(self):
        return len(self.messages())

    def wait_count(self, n, timeout=10):
        return wait_for(lambda: self.count() >= n, timeout)

    def violations(self):
        return [l for l in self.log().splitlines() if "violation:" in l]

    def clear(self):
        for name in os.listdir(self.dir):
            if re.fullmatch(r"\d+\.(eml|json)", name):
                os.unlink(os.path.join(self.dir, name))


# ---------------------------------------------------------------- submitd

SANITIZER_PATTERNS = [r"ERROR: AddressSanitizer", r"ERROR: LeakSanitizer", r"runtime error:",
                      r"SUMMARY: UndefinedBehaviorSanitizer", r"WARNING: ThreadSanitizer"]


# What submitd's log escapes (src/core/log.c): C0 controls and DEL, C1 controls
# (NEL too), LINE/PARAGRAPH SEPARATOR and the bidi controls.
LOG_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
LOG_LINE = re.compile(r"^(\S+ )?submitd\[\d+\]: ")


def _json_object(line):
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def unsafe_log_lines(path):
    """Lines of submitd's stderr at path that are not whole, clean log lines:
    a log line holding a byte below 0x20, a bidi control or invalid UTF-8, or
    a line that is not a log line at all (the tail of an entry a line break
    split). Startup errors ("submitd: ...") and sanitizer output (reports are
    checked on their own) are not log lines. Returned repr'd."""
    try:
        data = open(path, "rb").read()
    except OSError:
        return []
    bad = []
    report = any(re.search(p.encode(), data) for p in SANITIZER_PATTERNS)
    for raw in data.split(b"\n"):
        text = raw.decode("latin-1")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = None
        if LOG_LINE.match(text):
            if line is None or LOG_UNSAFE.search(line):
                bad.append(repr(raw))
        elif raw.startswith(b'{"ts":'):  # log_format = json: one object a line
            if line is None or LOG_UNSAFE.search(line) or not _json_object(line):
                bad.append(repr(raw))
        elif raw and not raw.startswith(b"submitd: ") and not report and \
                not re.match(rb"==\d+==", raw):  # the sanitizers' runtime notes
            bad.append(repr(raw))
    return bad


class Submitd:
    """submitd as a process. config: dict or list of (key, value) pairs (a
    list value in a dict repeats the key). Listeners are named by mode:
    d.port("starttls"), d.addr("tls") -> (host, port)."""

    # Per-login limits and hold rules (docs/limits.md) are on by default, and
    # tests that send hundreds of messages from one login in seconds look
    # like the bot they are meant to stop: they are off here unless a test
    # sets them, or asks for the defaults (limits=True, t/proto/57).
    LIMITS_OFF = ("login_message_limit", "login_recipient_limit", "domain_message_limit",
                  "domain_recipient_limit", "client_message_limit", "client_recipient_limit",
                  "hold_limit_hits", "hold_client_addresses", "hold_refused_recipients",
                  "hold_burst")

    def __init__(self, env, config, name="submitd", limits=False):
        self.env = env
        self.name = name
        self.dir = env.subdir(name)
        self.conf = os.path.join(self.dir, "submitd.conf")
        self.logfile = os.path.join(self.dir, "submitd.log")
        self.pairs = []
        items = config.items() if isinstance(config, dict) else config
        for k, v in items:
            for one in (v if isinstance(v, (list, tuple)) else [v]):
                self.pairs.append((k, str(one)))
        if not limits:
            have = {k for k, _ in self.pairs}
            self.pairs += [(k, "none") for k in self.LIMITS_OFF if k not in have]
        self.listeners = []   # (host, port, mode, flags)
        for k, v in self.pairs:
            if k == "listen":
                parts = v.split()
                host, port = split_hostport(parts[0])
                self.listeners.append((host, port, parts[1] if len(parts) > 1 else "plain",
                                       parts[2:]))
        self.proc = None
        self.checked = False

    def write_config(self):
        with open(self.conf, "w") as f:
            f.write("# written by t/lib/harness.py\n")
            for k, v in self.pairs:
                f.write("%s = %s\n" % (k, v))

    def addr(self, mode_or_index="starttls"):
        for i, (h, p, m, fl) in enumerate(self.listeners):
            if mode_or_index == i or mode_or_index == m:
                return h, p
        raise KeyError(mode_or_index)

    def port(self, mode="starttls"):
        return self.addr(mode)[1]

    def start(self, timeout=10):
        self.env.require_binary()
        self.write_config()
        self.logf = open(self.logfile, "ab")
        self.proc = spawn([self.env.binary, "-c", self.conf], stdin=subprocess.DEVNULL,
                          stdout=self.logf, stderr=self.logf)
        _cleanups.append(self.stop)
        deadline = time.time() + timeout
        for h, p, m, fl in self.listeners:
            if not wait_port(h, p, max(0.1, deadline - time.time()), self.proc):
                st = self.proc.poll()
                diag("submitd did not come up on %s:%d (%s); exit status %s; config:\n%s\nlog:\n%s"
                     % (h, p, m, st, open(self.conf).read(), self.log()))
                ok(False, "%s started" % self.name)
                done()
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait_log(self, pattern, timeout=5):
        r = re.compile(pattern)
        return wait_for(lambda: r.search(self.log()), timeout)

    def wait_idle(self, timeout=10):
        """Waits until every client session submitd logged as begun ("ID:
        connect from") it has also logged as ended ("ID: disconnect from";
        needs log_level info): then no session can still deliver or send
        anything, which a sleep can only hope for."""
        def idle():
            log = self.log()
            return len(re.findall(r": connect from ", log)) == \
                len(re.findall(r": disconnect from ", log))
        return wait_for(idle, timeout)

    def wait_closed(self, *clients, timeout=10):
        """Waits until submitd has logged the end of each client's session
        ("ID: disconnect from [ip]:port ..."; needs log_level info): after
        that nothing more can come of it, unlike after a sleep."""
        pats = [re.compile(r": disconnect from \[%s\]:%d " % (re.escape(c.local[0]), c.local[1]))
                for c in clients]
        return wait_for(lambda: all(p.search(self.log()) for p in pats), timeout)

    def sanitizer_report(self):
        text = self.log()
        for pat in SANITIZER_PATTERNS:
            m = re.search(pat, text)
            if m:
                return text[max(0, m.start() - 200):m.start() + 3000]
        return None

    def stop(self):
        """SIGTERM, SIGKILL after 5 s; then TAP checks: exited by itself, no
        sanitizer report in its log."""
        if self.proc is None:
            return
        p, self.proc = self.proc, None
        alive_before = p.poll() is None
        if alive_before:
            p.terminate()
            try:
                p.wait(5)
                killed = False
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                killed = True
        else:
            killed = False
        st = p.returncode
        if not alive_before:
            ok(False, "%s was still running at the end of the test (exit status %s)"
               % (self.name, st), self.log()[-3000:])
        else:
            ok(not killed and st in (0, -signal.SIGTERM),
               "%s stopped on SIGTERM (status %s%s)" % (self.name, st, ", needed SIGKILL" if killed
                                                        else ""),
               self.log()[-3000:])
        rep = self.sanitizer_report()
        ok(rep is None, "%s: no sanitizer report in its log" % self.name, rep)
        bad = unsafe_log_lines(self.logfile)
        ok(not bad, "%s: no control character, bidi control or invalid UTF-8 in its log lines"
           % self.name, "\n".join(bad[:5]))

    def restart(self):
        self.stop()
        self.start()


# ---------------------------------------------------------------- raw SMTP client

class Reply:
    def __init__(self, lines):
        self.lines = lines                        # list of str without CRLF
        self.code = int(lines[-1][:3]) if lines and lines[-1][:3].isdigit() else None
        self.text = "\n".join(l[4:] for l in lines)

    @property
    def enhanced(self):
        m = re.match(r"\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})(\s|$)", self.lines[-1])
        return m.group(1) if m else None

    def __str__(self):
        return " | ".join(self.lines)

    __repr__ = __str__


class Timeout(Exception):
    pass


class SMTP:
    """A byte-level SMTP client. Every byte sent and received is kept in
    .transcript for diagnostics."""

    def __init__(self, host, port, tls=False, certs=None, timeout=15, greeting=True,
                 server_hostname=MYHOST, family=None, source=None):
        fam = family or (socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.local = self.sock.getsockname()[:2]   # (ip, port): submitd logs it as [ip]:port
        self.source = source
        self.timeout = timeout
        self.certs = certs
        self.buf = bytearray()
        self.transcript = []
        self.tls = False
        self.closed = False
        self.greeting = None
        if tls:
            self._wrap(server_hostname)
        if greeting:
            self.greeting = self.reply()

    def _wrap(self, server_hostname, ctx=None):
        if ctx is None:
            ctx = self.certs.client_context() if self.certs else ssl._create_unverified_context()
        self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname)
        self.tls = True
        self.transcript.append(("--", "TLS %s %s" % (self.sock.version(), self.sock.cipher()[0])))

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.transcript.append((">>", data))
        self.sock.sendall(data)

    def _fill(self, timeout=None):
        self.sock.settimeout(timeout if timeout is not None else self.timeout)
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            raise Timeout()
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
            d = b""
        if not d:
            self.closed = True
            raise EOFError("connection closed by server")
        self.transcript.append(("<<", d))
        self.buf += d

    def line(self, timeout=None):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                l = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return l.decode("utf-8", "replace")
            self._fill(timeout)

    def reply(self, timeout=None):
        """Reads one full (possibly multi-line) reply. Returns Reply; on EOF
        or timeout returns a Reply with code None (text 'EOF'/'TIMEOUT')."""
        lines = []
        try:
            while True:
                l = self.line(timeout)
                lines.append(l)
                if len(l) < 4 or l[3] != "-":
                    return Reply(lines)
        except EOFError:
            return Reply(lines + ["EOF"]) if lines else Reply(["EOF"])
        except Timeout:
            return Reply(lines + ["TIMEOUT"]) if lines else Reply(["TIMEOUT"])

    def cmd(self, line, timeout=None):
        self.send(line if isinstance(line, bytes) else line + "\r\n")
        return self.reply(timeout)

    def ehlo(self, name="client.test.example"):
        return self.cmd("EHLO " + name)

    def starttls(self, server_hostname=MYHOST, ctx=None):
        r = self.cmd("STARTTLS")
        if r.code != 220:
            return r
        if self.buf:
            raise AssertionError("server sent bytes after 220 to STARTTLS: %r" % bytes(self.buf))
        self._wrap(server_hostname, ctx)
        return r

    def pending(self, wait=0.5):
        """Whatever the server sends within `wait` seconds (b'' if nothing;
        None if the connection was closed)."""
        out = bytes(self.buf)
        self.buf.clear()
        deadline = time.time() + wait
        while True:
            left = deadline - time.time()
            if left <= 0:
                return out
            try:
                self._fill(left)
            except Timeout:
                return out
            except EOFError:
                return out if out else None
            out += bytes(self.buf)
            self.buf.clear()

    def is_closed(self, wait=3):
        """True if the server closes the connection within `wait` seconds
        (anything it still sends is discarded)."""
        deadline = time.time() + wait
        while time.time() < deadline:
            try:
                self._fill(max(0.01, deadline - time.time()))
                self.buf.clear()
            except EOFError:
                return True
            except Timeout:
                return False
            except OSError:
                return True
        return False

    def send_message(self, mail_from, rcpts, data_wire):
        """MAIL, RCPT..., DATA, then data_wire (already dot-stuffed, ending
        in CRLF.CRLF). Returns the list of replies (stops at the first
        failure of MAIL or DATA)."""
        out = [self.cmd("MAIL FROM:<%s>" % mail_from)]
        if out[-1].code != 250:
            return out
        for r in rcpts:
            out.append(self.cmd("RCPT TO:<%s>" % r))
        out.append(self.cmd("DATA"))
        if out[-1].code != 354:
            return out
        self.send(data_wire)
        out.append(self.reply(timeout=120))
        return out

    def dump(self, limit=4000):
        parts = []
        for d, data in self.transcript:
            s = data if isinstance(data, str) else data.decode("utf-8", "replace")
            if len(s) > 400:
                s = s[:300] + "...(%d bytes)..." % len(s) + s[-80:]
            parts.append("%s %s" % (d, s.rstrip("\r\n").replace("\r\n", "\n" + d + " ")))
        t = "\n".join(parts)
        return t[-limit:]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def stuff(content):
    """Dot-stuffs canonical CRLF content and appends the end-of-data marker."""
    out = re.sub(rb"(?m)^\.", b"..", content)
    if out and not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out + b".\r\n"


# ---------------------------------------------------------------- messages

def make_message(subject="test", body=b"Hello.\r\n", date=True, msgid=True, extra=b"",
                 frm="sender@example.com", to="rcpt@example.net"):
    """A canonical (CRLF) message as bytes."""
    h = b"From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n" % (frm.encode(), to.encode(),
                                                         subject.encode("utf-8"))
    if date:
        h += b"Date: Sat, 22 Nov 2025 12:00:00 +0000\r\n"
    if msgid:
        h += b"Message-ID: <%d.%d@client.test.example>\r\n" % (
            int(time.time() * 1000), random.randrange(1 << 30))
    return h + extra + b"\r\n" + body


def split_added(content, client):
    """Splits stored content into (added_headers, rest) where rest is the
    tail that should equal the client's message. Headers submitd may add are
    Received: first, and Date:/Message-ID: (anywhere in the header section)
    when the client left them out. Returns (added: list of bytes fields,
    rest: bytes)."""
    fields, body_off = header_fields(content)
    cfields, _ = header_fields(client)
    cnames = [f.split(b":", 1)[0].lower() for f in cfields]
    added = []
    kept = []
    first = True
    for f in fields:
        name = f.split(b":", 1)[0].lower()
        if first and name == b"received":
            added.append(f)
        elif name in (b"date", b"message-id") and name not in cnames:
            added.append(f)
        else:
            kept.append(f)
        first = False
    return added, b"".join(kept) + content[body_off:]


def header_fields(content):
    """Header fields (each with its CRLF and folded continuation lines) and
    the offset where the header section ends (the empty line included in
    the body part)."""
    fields = []
    pos = 0
    while pos < len(content):
        e = content.find(b"\r\n", pos)
        if e < 0:
            break
        line = content[pos:e + 2]
        if line == b"\r\n":
            break
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
        pos = e + 2
    return fields, pos


def first_header(content):
    f, _ = header_fields(content)
    return f[0].decode("utf-8", "replace") if f else ""


def headers_named(content, name):
    f, _ = header_fields(content)
    return [x.decode("utf-8", "replace") for x in f
            if x.split(b":", 1)[0].strip().lower() == name.lower().encode()]


def run(argv, input=None, timeout=60, env=None):
    """Runs a client program; returns (status, stdout+stderr as str)."""
    try:
        p = subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout, env=env, preexec_fn=_die_with_parent)
        return p.returncode, p.stdout.decode("utf-8", "replace")
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode("utf-8", "replace") if e.stdout else ""
        return None, out + "\n[timed out after %ss]" % timeout


def standard_config(certs, sink, extra=(), host="127.0.0.1"):
    """Three trusted listeners on fresh ports (starttls, tls, plain) relaying
    to sink. Returns a list of (key, value) pairs; extra pairs are appended
    (a key given in extra replaces the default one)."""
    extra = list(extra)
    over = {k for k, _ in extra}
    base = [
        ("myhostname", MYHOST),
        ("listen", "%s:%d starttls trusted" % (host, free_port(host))),
        ("listen", "%s:%d tls trusted" % (host, free_port(host))),
        ("listen", "%s:%d plain trusted" % (host, free_port(host))),
        ("tls_cert_file", certs.fullchain),
        ("tls_key_file", certs.key),
        ("mynetworks", "127.0.0.0/8, ::1/128"),
        ("relayhost", sink.relayhost if sink else "[127.0.0.1]:%d" % free_port()),
        ("message_size_limit", "30000000"),
        ("workers", "2"),
        ("log_level", "info"),
    ]
    return [(k, v) for k, v in base if k not in over] + extra


def setup():
    """The start of most protocol tests: an Env (bails out without the submitd
    binary), its certificates, and a sink. Returns (env, certs, sink)."""
    env = Env()
    env.require_binary()
    return env, env.certs(), env.sink()


def auth_config(certs, sink, auth_socket, listens, extra=()):
    """The configuration of the AUTH tests: the listen lines given ("ADDR:PORT
    FLAGS...", in this order), the test certificate, relaying to sink,
    log_level info and Dovecot's auth socket. Returns (key, value) pairs;
    extra pairs are appended (a key given in extra replaces the default one)."""
    extra = list(extra)
    over = {k for k, _ in extra}
    base = [("myhostname", MYHOST)] + [("listen", l) for l in listens] + [
        ("tls_cert_file", certs.fullchain),
        ("tls_key_file", certs.key),
        ("relayhost", sink.relayhost),
        ("log_level", "info"),
        ("dovecot_auth_socket", auth_socket),
    ]
    return [(k, v) for k, v in base if k not in over] + extra


def client(d, mode, certs, ehlo="client.test.example", starttls=True):
    """Connects to submitd's listener `mode`, reads the greeting, says EHLO,
    and on a starttls listener does STARTTLS + EHLO again. Returns SMTP."""
    host, port = d.addr(mode)
    if isinstance(mode, int):
        mode = d.listeners[mode][2]
    c = SMTP(host, port, tls=(mode == "tls"), certs=certs)
    c.ehlo(ehlo)
    if mode == "starttls" and starttls:
        r = c.starttls()
        if r.code != 220:
            raise AssertionError("STARTTLS refused: %s" % r)
        c.ehlo(ehlo)
    return c


# ---------------------------------------------------------------- AUTH helpers (t/proto/7x-auth*)

def b64(s):
    """base64 of str/bytes, as str."""
    import base64 as _b
    return _b.b64encode(s.encode() if isinstance(s, str) else s).decode()


def plain_resp(user, password, authzid=""):
    """The base64 PLAIN response authzid NUL user NUL password."""
    return b64("%s\0%s\0%s" % (authzid, user, password))


class SMTPFrom(SMTP):
    """SMTP whose socket is bound to a local source address first (on Linux
    all of 127/8 is local: SMTPFrom("127.0.0.2", "127.0.0.1", port))."""

    def __init__(self, source, host, port, tls=False, certs=None, timeout=15, greeting=True,
                 server_hostname=MYHOST):
        super().__init__(host, port, tls=tls, certs=certs, timeout=timeout, greeting=greeting,
                         server_hostname=server_hostname, source=source)


def client_from(source, d, mode, certs, ehlo="client.test.example", server_hostname=MYHOST,
                timeout=30):
    """client() from a given source address: greeting, EHLO, STARTTLS + EHLO
    on a starttls listener (implicit TLS on a tls listener)."""
    host, port = d.addr(mode)
    if isinstance(mode, int):
        mode = d.listeners[mode][2]
    c = SMTPFrom(source, host, port, tls=(mode == "tls"), certs=certs, timeout=timeout,
                 server_hostname=server_hostname)
    c.ehlo(ehlo)
    if mode == "starttls":
        r = c.starttls(server_hostname=server_hostname)
        if r.code != 220:
            raise AssertionError("STARTTLS refused: %s" % r)
        c.ehlo(ehlo)
    return c


class FakeDovecot:
    """A scripted Dovecot auth server (protocol 1.2, 2.3-style handshake) on
    a UNIX socket, for what a real Dovecot will not do on demand. Records
    every line it receives, raw, in .received (list of (conn_no, bytes)).

      fd = FakeDovecot(env.path("fake.sock")).start()
      fd.users = {"alice@example.com": "alice-secret"}   # PLAIN/LOGIN checked here
      fd.mode = "normal" | "silent" (never answers AUTH/CONT)
      fd.delay = 0.0                 # seconds before each answer
      fd.auth_lines()                # the AUTH lines received (bytes)
      fd.send_all(b"garbage\\n")      # raw bytes to every open connection
      fd.drop_all()                  # closes every connection (Dovecot restart)
      fd.stop()
    Answers: a user in .replies -> that reply line ("{id}" is the request
    id), whatever the password; PLAIN/LOGIN with the right password -> OK
    user=..., a user in .nologin -> OK nologin reason=disabled, a user in
    .tempfail -> FAIL code=temp_fail, anything else -> FAIL reason=bad."""

    def __init__(self, path, mechs=("PLAIN", "LOGIN"), users=None):
        import threading
        self.path = path
        self.mechs = list(mechs)
        self.users = dict(users or {"alice@example.com": "alice-secret",
                                    "bob@example.com": "bob-secret"})
        self.nologin = set()
        self.tempfail = set()
        self.replies = {}
        self.mode = "normal"
        self.delay = 0.0
        self.received = []
        self.conns = []
        self.nconn = 0
        self.lock = threading.Lock()
        self.sock = None
        self.stopping = False

    def start(self):
        import threading
        try:
            os.unlink(self.path)
        except OSError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o666)
        self.sock.listen(64)
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()
        _cleanups.append(self.stop)
        return self

    def stop(self):
        self.stopping = True
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
        self.drop_all()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def drop_all(self):
        with self.lock:
            conns, self.conns = self.conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass

    def send_all(self, data):
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.sendall(data)
            except OSError:
                pass

    def lines(self, cmd=None):
        with self.lock:
            got = [l for _, l in self.received]
        if cmd is None:
            return got
        return [l for l in got if l.split(b"\t", 1)[0] == cmd.encode()]

    def auth_lines(self):
        return self.lines("AUTH")

    def connections(self):
        with self.lock:
            return len(self.conns)

    def _accept(self):
        import threading
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.nconn += 1
                n = self.nconn
                self.conns.append(c)
            threading.Thread(target=self._serve, args=(c, n), daemon=True).start()

    def _send(self, c, line):
        import threading
        data = line.encode() + b"\n"
        if self.delay:
            def later():
                try:
                    c.sendall(data)
                except OSError:
                    pass
            threading.Timer(self.delay, later).start()
            return
        try:
            c.sendall(data)
        except OSError:
            pass

    def _check(self, c, rid, user, password):
        if user in self.replies:
            self._send(c, self.replies[user].replace("{id}", rid))
        elif user in self.tempfail:
            self._send(c, "FAIL\t%s\tuser=%s\tcode=temp_fail\treason=backend down" % (rid, user))
        elif self.users.get(user) == password and user in self.nologin:
            self._send(c, "OK\t%s\tuser=%s\tnologin\treason=disabled" % (rid, user))
        elif user and self.users.get(user) == password:
            self._send(c, "OK\t%s\tuser=%s" % (rid, user))
        else:
            self._send(c, "FAIL\t%s\treason=bad" % rid)

    def _step(self, c, rid, st, resp):
        import base64 as _b
        try:
            raw = _b.b64decode(resp, validate=True).decode("utf-8", "replace")
        except Exception:  # noqa: BLE001
            self._send(c, "FAIL\t%s\tcode=invalid_base64" % rid)
            return
        if st["mech"] == "PLAIN":
            parts = raw.split("\0")
            if len(parts) != 3:
                self._send(c, "FAIL\t%s\treason=invalid input" % rid)
            else:
                self._check(c, rid, parts[1], parts[2])
            st["done"] = True
        else:  # LOGIN
            st["answers"].append(raw)
            if len(st["answers"]) == 1:
                self._send(c, "CONT\t%s\t%s" % (rid, b64("Password:")))
            else:
                self._check(c, rid, st["answers"][0], st["answers"][1])
                st["done"] = True

    def _serve(self, c, n):
        state = {}
        try:
            c.sendall(("VERSION\t1\t2\n" + "".join("MECH\t%s\tplaintext\n" % m for m in self.mechs)
                       + "SPID\t4242\nCUID\t%d\nCOOKIE\t%s\nDONE\n" % (n, "0123456789abcdef" * 2)
                       ).encode())
        except OSError:
            return
        buf = b""
        while True:
            try:
                d = c.recv(65536)
            except OSError:
                d = b""
            if not d:
                break
            buf += d
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                with self.lock:
                    self.received.append((n, line))
                f = line.decode("utf-8", "replace").split("\t")
                if self.mode == "silent" or f[0] in ("VERSION", "CPID"):
                    continue
                if f[0] == "AUTH" and len(f) >= 3:
                    st = state[f[1]] = {"mech": f[2], "answers": [], "done": False}
                    resp = [p[5:] for p in f[3:] if p.startswith("resp=")]
                    if resp and resp[0] not in ("", "="):
                        self._step(c, f[1], st, resp[0])
                    elif st["mech"] == "LOGIN":
                        self._send(c, "CONT\t%s\t%s" % (f[1], b64("Username:")))
                    else:
                        self._send(c, "CONT\t%s\t" % f[1])
                elif f[0] == "CONT" and len(f) == 3 and f[1] in state:
                    self._step(c, f[1], state[f[1]], f[2])
                elif f[0] == "CANCEL" and len(f) >= 2:
                    state.pop(f[1], None)
        with self.lock:
            if c in self.conns:
                self.conns.remove(c)
        try:
            c.close()
        except OSError:
            pass


PASSDBS = ["passwd-file", "sql"]   # the Dovecot deployments AUTH tests run against


def private_dovecot(env, passdb="passwd-file", **kw):
    """Starts the private Dovecot (t/lib/dovecot.py) of one deployment in
    env's dir: "passwd-file", or "sql" (the ISPmail guide's SQL passdb, on a
    private MariaDB from t/lib/mariadb.py started here too). kw goes to
    Dovecot(). Both are stopped at exit, after submitd. A missing package
    skips the file (a failure under CI); a start failure bails out."""
    import dovecot as dovecotmod
    if os.geteuid() != 0 or not os.access(dovecotmod.DOVECOT, os.X_OK):
        skip_all("needs root and dovecot-core (scripts/deps.sh)")
    os.chmod(env.dir, 0o711)  # Dovecot's auth process (user dovecot) reads its files in here
    db = None
    if passdb == "sql":
        import mariadb as mariadbmod
        if not mariadbmod.available():
            skip_all("needs mariadb-server (scripts/deps.sh)")
        if not dovecotmod.sql_available():
            skip_all("needs dovecot-mysql, Dovecot's SQL passdb driver (scripts/deps.sh)")
    try:
        if passdb == "sql":
            db = mariadbmod.MariaDB(env.path("mariadb"))
            _cleanups.append(db.stop)
            db.start()
        name = "dovecot" if passdb == "passwd-file" else "dovecot-" + passdb
        dv = dovecotmod.Dovecot(dir=env.path(name), passdb=passdb, db=db, spawn=spawn, **kw)
        dv.start()
    except Exception as e:  # noqa: BLE001
        print("Bail out! private Dovecot (%s passdb) did not start: %s" % (passdb, e), flush=True)
        done()
    _cleanups.append(lambda: dv.stop(remove=False))
    return dv


def dovecot_kill(dv, timeout=5.0):
    """Stops a t/lib/dovecot.py Dovecot for real, its auth process included
    (as systemd's stop does); its directory stays for a later start()."""
    dv.stop(remove=False, timeout=timeout)


def wait_dovecot_connected(d, n=1, timeout=10):
    """Waits until submitd's log shows n completed Dovecot handshakes (one
    per worker at startup: "dovecot auth: PATH: connected, mechanisms: ...")."""
    return wait_for(lambda: len(re.findall(r"dovecot auth: \S+: connected", d.log())) >= n, timeout)
