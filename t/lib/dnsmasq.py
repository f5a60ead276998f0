"""A private DNS server for the tests: Debian's dnsmasq (dnsmasq-base) on
127.0.0.1 and a free unprivileged port, answering only from its command line
(--no-resolv --no-hosts, no upstream), so a name outside the records gets
NXDOMAIN (--local=/domain/) and nothing leaves the machine.

    dns = Dnsmasq(env, mx=[("mx.test", "mx1.mx.test", 10)],
                  hosts=[("mx1.mx.test", "127.0.0.2", "::1")], local=["test"])
    dns.start(); ... dns.servers  # "127.0.0.1:PORT" for dns_servers
    dns.stop()

Records: mx (domain, host, preference), hosts (name, address...), and
ttl for all of them (--local-ttl). Torn down with the harness's cleanup."""
import os
import shutil
import socket
import subprocess
import time

from harness import _cleanups, free_port, terminate

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


def available():
    return os.access(DNSMASQ, os.X_OK)


def udp_port():
    """A port free for UDP as well as TCP on 127.0.0.1."""
    for _ in range(50):
        p = free_port()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(("127.0.0.1", p))
            return p
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port")


class Dnsmasq:
    def __init__(self, env, mx=(), hosts=(), local=("test",), ttl=60, extra=()):
        self.env = env
        self.dir = env.subdir("dnsmasq")
        self.log = os.path.join(self.dir, "dnsmasq.log")
        self.port = udp_port()
        self.mx = list(mx)
        self.hosts = list(hosts)
        self.local = list(local)
        self.ttl = ttl
        self.extra = list(extra)
        self.proc = None

    @property
    def servers(self):
        return "127.0.0.1:%d" % self.port

    def argv(self):
        a = [DNSMASQ, "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
             "--no-poll", "--bind-interfaces", "--listen-address=127.0.0.1",
             "--port=%d" % self.port, "--pid-file=", "--log-queries",
             "--log-facility=%s" % self.log, "--local-ttl=%d" % self.ttl, "--cache-size=0"]
        if os.geteuid() == 0:
            a.append("--user=root")
        a += ["--local=/%s/" % d for d in self.local]
        a += ["--mx-host=%s,%s,%d" % m for m in self.mx]
        a += ["--host-record=%s" % ",".join(h) for h in self.hosts]
        return a + self.extra

    def start(self, timeout=10):
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=open(self.log + ".err", "ab"),
                                     start_new_session=True)
        _cleanups.append(self.stop)
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("dnsmasq exited: %s" % open(self.log + ".err").read())
            if self.answers():
                return self
            time.sleep(0.05)
        raise RuntimeError("dnsmasq did not answer")

    def answers(self):
        """True when the server answers a query (any rcode) over UDP."""
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.2)
        try:
            s.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04ping\x00\x00\x01\x00\x01",
                     ("127.0.0.1", self.port))
            return len(s.recv(512)) >= 12
        except OSError:
            return False
        finally:
            s.close()

    def queries(self):
        """The names queried so far, as (type, name) from the log."""
        out = []
        try:
            for line in open(self.log, errors="replace"):
                if "query[" in line:
                    rest = line.split("query[", 1)[1]
                    t, _, name = rest.partition("] ")
                    out.append((t, name.split(" ")[0]))
        except FileNotFoundError:
            pass
        return out

    def stop(self):
        terminate(self.proc)
        self.proc = None
