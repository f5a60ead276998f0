#!/usr/bin/env python3
"""sink.py: a recording downstream SMTP/LMTP server for submitd's tests.

Stdlib only. One thread per connection. It is the ground truth for
"byte-exact" and "nothing delivered" tests, so it is deliberately simple and
strict:

  * only CR LF . CR LF ends DATA (a "." line right after 354 also ends it);
  * each accepted message is stored exactly as it came off the wire: the raw,
    still dot-stuffed DATA bytes up to but excluding the final ".\\r\\n"
    (N.eml), and its envelope (N.json: mail line, rcpt lines, EHLO name, TLS,
    protocol violations seen in the data);
  * protocol violations (bare LF / bare CR in commands or DATA, plaintext
    pipelined after STARTTLS, ...) are written to the log as "violation: ...";
  * transactions that end without a final dot are logged as "abort: ...".

Usage:
  sink.py --dir DIR (--listen HOST:PORT | --unix PATH) [--lmtp]
          [--starttls CERT KEY] [--tls CERT KEY]
          [--reject-rcpt ADDR[=CODE TEXT]]... [--reject-data CODE TEXT]
          [--reject-data-match REGEX]
          [--tempfail-rcpt ADDR]... [--delay-data SECONDS] [--size N]
          [--slow-data BYTES_PER_SECOND]
          [--chunking] [--hostname NAME] [--log FILE]

Log lines (DIR/sink.log unless --log): "sink[CID]: ..." with "< " for what
the client sent (commands only) and "> " for replies.

As a module: load_messages(DIR) -> [Message]; undot(raw) -> bytes.
"""

import argparse
import json
import os
import re
import socket
import ssl
import sys
import threading
import time

MAX_LINE = 65536


# ---------------------------------------------------------------- helpers

def undot(raw):
    """Undo dot-stuffing of raw DATA bytes (as stored in N.eml): a line
    (after CR LF or at the start) beginning with '.' loses that '.'."""
    out = bytearray()
    start = 0
    n = len(raw)
    while start < n:
        end = raw.find(b"\r\n", start)
        line_end = n if end < 0 else end + 2
        line = raw[start:line_end]
        if line.startswith(b"."):
            line = line[1:]
        out += line
        start = line_end
    return bytes(out)


def violations_in(data):
    """Lists bare LF / bare CR positions (first few) in a byte string."""
    out = []
    i = 0
    n = len(data)
    while True:
        lf = data.find(b"\n", i)
        cr = data.find(b"\r", i)
        cands = [x for x in (lf, cr) if x >= 0]
        if not cands:
            break
        p = min(cands)
        if data[p] == 0x0D:
            if p + 1 < n and data[p + 1] == 0x0A:
                i = p + 2
                continue
            out.append("bare CR at offset %d" % p)
        else:
            out.append("bare LF at offset %d" % p)
        i = p + 1
        if len(out) >= 20:
            out.append("...")
            break
    return out


class Message:
    """One stored message: .raw (dot-stuffed wire bytes), .content
    (un-dot-stuffed), .env (envelope dict), .num, .path."""

    def __init__(self, d, num):
        self.num = num
        self.path = os.path.join(d, "%d.eml" % num)
        with open(self.path, "rb") as f:
            self.raw = f.read()
        with open(os.path.join(d, "%d.json" % num)) as f:
            self.env = json.load(f)
        self.content = self.raw if self.env.get("bdat") else undot(self.raw)

    @property
    def mail_from(self):
        return self.env.get("mail_from")

    @property
    def rcpts(self):
        return self.env.get("rcpt_to", [])

    def __repr__(self):
        return "<Message %d from=%s rcpt=%s %d bytes>" % (
            self.num, self.mail_from, self.rcpts, len(self.raw))


def load_messages(d):
    nums = []
    for name in os.listdir(d):
        m = re.fullmatch(r"(\d+)\.json", name)
        if m:
            nums.append(int(m.group(1)))
    return [Message(d, n) for n in sorted(nums)]


def angle_addr(arg):
    """'FROM:<a@b> SIZE=1' -> 'a@b' (None if no <...>)."""
    m = re.search(r"<([^>]*)>", arg)
    return m.group(1) if m else None


# ---------------------------------------------------------------- server

class Sink:
    def __init__(self, opts):
        self.o = opts
        self.lock = threading.Lock()
        self.cid = 0
        os.makedirs(opts.dir, exist_ok=True)
        existing = [int(m.group(1)) for m in
                    (re.fullmatch(r"(\d+)\.json", n) for n in os.listdir(opts.dir)) if m]
        self.next_num = max(existing, default=0) + 1
        self.logf = open(opts.log or os.path.join(opts.dir, "sink.log"), "a", buffering=1,
                         errors="backslashreplace")
        self.reject_rcpt = {}
        for spec in opts.reject_rcpt or []:
            if "=" in spec:
                addr, reply = spec.split("=", 1)
            else:
                addr, reply = spec, None
            self.reject_rcpt[addr.lower()] = reply
        self.tempfail_rcpt = {a.lower() for a in (opts.tempfail_rcpt or [])}
        self.tls_ctx = None
        cert = opts.starttls or opts.tls
        if cert:
            self.tls_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls_ctx.load_cert_chain(cert[0], cert[1])

    def log(self, cid, msg):
        with self.lock:
            self.logf.write("%s sink[%s]: %s\n" % (time.strftime("%H:%M:%S"), cid, msg))

    def store(self, raw, env):
        with self.lock:
            num = self.next_num
            self.next_num += 1
        d = self.o.dir
        tmp = os.path.join(d, ".%d.tmp" % num)
        with open(tmp, "wb") as f:
            f.write(raw)
        os.rename(tmp, os.path.join(d, "%d.eml" % num))
        with open(tmp, "w") as f:
            json.dump(env, f, indent=1)
        os.rename(tmp, os.path.join(d, "%d.json" % num))
        return num

    def serve(self):
        if self.o.unix:
            try:
                os.unlink(self.o.unix)
            except FileNotFoundError:
                pass
            ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            ls.bind(self.o.unix)
            where = "unix:" + self.o.unix
        else:
            host, port = split_hostport(self.o.listen)
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            ls = socket.socket(fam, socket.SOCK_STREAM)
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.o.slow_data:
                # a small window, so that the sender feels the slowness at once
                ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            ls.bind((host, port))
            where = self.o.listen
        ls.listen(1024)
        self.log("-", "listening on %s (%s)" % (where, "LMTP" if self.o.lmtp else "SMTP"))
        while True:
            s, peer = ls.accept()
            with self.lock:
                self.cid += 1
                cid = self.cid
            t = threading.Thread(target=self.session, args=(s, peer, cid), daemon=True)
            t.start()

    def session(self, s, peer, cid):
        try:
            Session(self, s, peer, cid).run()
        except Exception as e:  # noqa: BLE001 - a sink must never die
            self.log(cid, "session error: %r" % (e,))
        finally:
            try:
                s.close()
            except OSError:
                pass


def split_hostport(hp):
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)", hp) or re.fullmatch(r"([^:]+):(\d+)", hp)
    if not m:
        raise ValueError("bad HOST:PORT " + hp)
    return m.group(1), int(m.group(2))


class Closed(Exception):
    pass


class Session:
    def __init__(self, sink, s, peer, cid):
        self.sink = sink
        self.o = sink.o
        self.s = s
        self.peer = peer
        self.cid = cid
        self.buf = bytearray()
        self.tls = None
        self.helo = None
        self.reset()

    def reset(self):
        self.mail = None
        self.mail_from = None
        self.rcpts = []
        self.rcpt_lines = []
        self.chunks = None

    def log(self, msg):
        self.sink.log(self.cid, msg)

    # -- I/O
    def fill(self, n=262144):
        try:
            d = self.s.recv(n)
        except (ConnectionError, ssl.SSLError, OSError) as e:
            self.log("recv error: %r" % (e,))
            d = b""
        if not d:
            raise Closed()
        self.buf += d

    def readline(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line
            if len(self.buf) > MAX_LINE:
                line = bytes(self.buf)
                self.buf.clear()
                return line
            self.fill()

    def reply(self, text):
        self.log("> " + text.replace("\r\n", " | "))
        # surrogateescape: a test can have any byte sent (through argv as \udcXX)
        self.s.sendall(text.encode("utf-8", "surrogateescape") + b"\r\n")

    # -- protocol
    def run(self):
        self.log("connect from %s" % (self.peer,))
        if self.o.tls:
            self.start_tls()
        self.reply("220 %s ESMTP sink" % self.o.hostname if not self.o.lmtp
                   else "220 %s LMTP sink" % self.o.hostname)
        try:
            while True:
                line = self.readline()
                if not self.command(line):
                    break
        except Closed:
            if self.mail is not None:
                self.log("abort: connection closed with open transaction (no final dot)")
            self.log("disconnect (client closed)")
            return
        self.log("disconnect")

    def start_tls(self):
        self.s = self.sink.tls_ctx.wrap_socket(self.s, server_side=True)
        self.tls = {"version": self.s.version(), "cipher": self.s.cipher()[0]}
        self.log("tls: %s %s" % (self.tls["version"], self.tls["cipher"]))

    def command(self, line):
        if not line.endswith(b"\r\n"):
            if line.endswith(b"\n"):
                self.log("violation: bare LF ending a command line")
            else:
                self.log("violation: command line too long or unterminated")
        text = line.rstrip(b"\r\n")
        if b"\r" in text:
            self.log("violation: bare CR in command line")
        stext = text.decode("utf-8", "replace")
        self.log("< " + stext)
        verb, _, arg = stext.partition(" ")
        verb = verb.upper()
        if verb in ("EHLO", "HELO", "LHLO"):
            if self.o.lmtp != (verb == "LHLO"):
                self.reply("500 5.5.1 Error: %s not accepted here" % verb)
                return True
            self.helo = arg
            self.reset()
            if verb == "HELO":
                self.reply("250 %s" % self.o.hostname)
                return True
            caps = [self.o.hostname, "PIPELINING", "SIZE %d" % (self.o.size or 0),
                    "8BITMIME", "SMTPUTF8", "DSN", "ENHANCEDSTATUSCODES"]
            caps = [c for c in caps if c.split()[0] not in (self.o.without or [])]
            if self.o.chunking:
                caps.append("CHUNKING")
            if self.o.starttls and self.tls is None:
                caps.append("STARTTLS")
            self.reply("\r\n".join("250%s%s" % ("-" if i < len(caps) - 1 else " ", c)
                                   for i, c in enumerate(caps)))
        elif verb == "STARTTLS":
            if not self.o.starttls or self.tls is not None:
                self.reply("502 5.5.1 Error: command not implemented")
                return True
            self.reply("220 2.0.0 Ready to start TLS")
            if self.buf:
                self.log("violation: %d bytes of plaintext pipelined after STARTTLS (discarded)"
                         % len(self.buf))
                self.buf.clear()
            try:
                self.start_tls()
            except (ssl.SSLError, OSError) as e:
                self.log("tls handshake failed: %r" % (e,))
                return False
            self.helo = None
            self.reset()
        elif verb == "MAIL":
            if self.helo is None:
                self.reply("503 5.5.1 Error: send %s first" % ("LHLO" if self.o.lmtp else "HELO/EHLO"))
            elif self.mail is not None:
                self.reply("503 5.5.1 Error: nested MAIL command")
            elif not arg.upper().startswith("FROM:") or angle_addr(arg) is None:
                self.reply("501 5.5.4 Syntax: MAIL FROM:<address>")
            else:
                m = re.search(r"\bSIZE=(\d+)", arg, re.I)
                if m and self.o.size and int(m.group(1)) > self.o.size:
                    self.reply("552 5.3.4 Message size exceeds fixed limit")
                    return True
                self.mail = stext
                self.mail_from = angle_addr(arg)
                self.reply("250 2.1.0 Ok")
        elif verb == "RCPT":
            if self.mail is None:
                self.reply("503 5.5.1 Error: need MAIL command")
            elif not arg.upper().startswith("TO:") or angle_addr(arg) is None:
                self.reply("501 5.5.4 Syntax: RCPT TO:<address>")
            else:
                addr = angle_addr(arg)
                if addr.lower() in self.sink.reject_rcpt:
                    r = self.sink.reject_rcpt[addr.lower()] or (
                        "550 5.1.1 <%s>: Recipient address rejected: User unknown" % addr)
                    self.reply(r)
                elif addr.lower() in self.sink.tempfail_rcpt:
                    self.reply("450 4.2.0 <%s>: Recipient address temporarily rejected" % addr)
                else:
                    self.rcpts.append(addr)
                    self.rcpt_lines.append(stext)
                    self.reply("250 2.1.5 Ok")
        elif verb == "DATA":
            if arg:
                self.reply("501 5.5.4 Syntax: DATA")
            elif self.mail is None or not self.rcpts:
                self.reply("554 5.5.1 Error: no valid recipients" if self.mail is not None
                           else "503 5.5.1 Error: need RCPT command")
            elif self.chunks is not None:
                self.reply("503 5.5.1 Error: DATA after BDAT")
            else:
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                raw = self.read_data()
                self.finish(raw, bdat=False)
        elif verb == "BDAT" and self.o.chunking:
            m = re.fullmatch(r"(\d+)( +LAST)?", arg.strip(), re.I)
            if not m:
                self.reply("521 5.5.4 Syntax: BDAT count [LAST]")
                return False
            n = int(m.group(1))
            while len(self.buf) < n:
                self.fill()
            chunk = bytes(self.buf[:n])
            del self.buf[:n]
            if self.mail is None or not self.rcpts:
                self.reply("503 5.5.1 Error: need RCPT command")
                return True
            if self.chunks is None:
                self.chunks = bytearray()
            self.chunks += chunk
            if m.group(2):
                raw = bytes(self.chunks)
                self.chunks = None
                self.finish(raw, bdat=True)
            else:
                self.reply("250 2.0.0 %d bytes received" % n)
        elif verb == "RSET":
            if self.mail is not None:
                self.log("abort: RSET with open transaction (no final dot)")
            self.reset()
            self.reply("250 2.0.0 Ok")
        elif verb == "NOOP":
            self.reply("250 2.0.0 Ok")
        elif verb == "QUIT":
            if self.mail is not None:
                self.log("abort: QUIT with open transaction (no final dot)")
            self.reply("221 2.0.0 Bye")
            if self.tls is not None:
                try:
                    self.s.unwrap()  # close_notify
                except (ssl.SSLError, OSError):
                    pass
            return False
        else:
            self.reply("500 5.5.2 Error: command not recognized")
        return True

    def read_data(self):
        """Reads until CR LF . CR LF; returns the raw bytes before the final
        '.\\r\\n' (the CR LF ending the last line is included)."""
        data = bytearray(b"\r\n")  # virtual CRLF: a "." first line ends data
        data += self.buf
        self.buf.clear()
        pos = 0
        while True:
            i = data.find(b"\r\n.\r\n", pos)
            if i >= 0:
                raw = bytes(data[2:i + 2])
                self.buf += data[i + 5:]
                return raw
            pos = max(0, len(data) - 4)
            try:
                if self.o.slow_data:
                    # a downstream that reads a trickle (a fake: no real
                    # server does this on demand)
                    time.sleep(0.1)
                    self.fill(max(1, self.o.slow_data // 10))
                else:
                    self.fill()
            except Closed:
                self.log("abort: connection closed during DATA after %d bytes (no final dot)"
                         % (len(data) - 2))
                self.mail = None
                raise
            data += self.buf
            self.buf.clear()

    def finish(self, raw, bdat):
        viol = violations_in(raw)
        for v in viol:
            self.log("violation: %s in %s" % (v, "BDAT" if bdat else "DATA"))
        size = len(raw) if bdat else len(undot(raw))
        if self.o.delay_data:
            time.sleep(self.o.delay_data)
        if self.o.size and size > self.o.size:
            self.log("rejected: message size %d > %d" % (size, self.o.size))
            self.replies_for_data("552 5.3.4 Message size exceeds fixed limit")
        elif self.o.reject_data and (not self.o.reject_data_match
                                     or re.search(self.o.reject_data_match.encode(), raw)):
            self.log("rejected: data refused by --reject-data")
            self.replies_for_data(" ".join(self.o.reject_data))
        else:
            env = {
                "protocol": "LMTP" if self.o.lmtp else "SMTP",
                "helo": self.helo,
                "mail": self.mail,
                "mail_from": self.mail_from,
                "rcpt": self.rcpt_lines,
                "rcpt_to": self.rcpts,
                "tls": self.tls,
                "bdat": bdat,
                "size": size,
                "violations": viol,
                "peer": str(self.peer),
                "time": time.time(),
            }
            num = self.sink.store(raw, env)
            self.log("stored %d: from=<%s> nrcpt=%d size=%d" % (num, self.mail_from,
                                                                 len(self.rcpts), size))
            self.replies_for_data("250 2.0.0 Ok: queued as %d" % num)
        self.reset()

    def replies_for_data(self, r):
        if self.o.lmtp:
            self.reply("\r\n".join([r] * len(self.rcpts)))
        else:
            self.reply(r)


def main(argv=None):
    p = argparse.ArgumentParser(description="recording downstream SMTP/LMTP server")
    p.add_argument("--listen", help="HOST:PORT or [V6]:PORT")
    p.add_argument("--unix", help="UNIX socket path")
    p.add_argument("--dir", required=True)
    p.add_argument("--log")
    p.add_argument("--lmtp", action="store_true")
    p.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="implicit TLS")
    p.add_argument("--reject-rcpt", action="append", metavar="ADDR[=CODE TEXT]")
    p.add_argument("--tempfail-rcpt", action="append", metavar="ADDR")
    p.add_argument("--reject-data", nargs=2, metavar=("CODE", "TEXT"))
    p.add_argument("--reject-data-match", metavar="REGEX",
                   help="only messages whose raw bytes match REGEX get --reject-data")
    p.add_argument("--delay-data", type=float, default=0)
    p.add_argument("--slow-data", type=int, default=0, metavar="BYTES_PER_SECOND",
                   help="read DATA at about this rate")
    p.add_argument("--size", type=int, default=0)
    p.add_argument("--without", action="append", metavar="KEYWORD",
                   help="leave an EHLO keyword out (8BITMIME, SMTPUTF8, DSN, ...)")
    p.add_argument("--chunking", action="store_true")
    p.add_argument("--hostname", default="sink.test.example")
    o = p.parse_args(argv)
    if bool(o.listen) == bool(o.unix):
        p.error("exactly one of --listen, --unix")
    Sink(o).serve()


if __name__ == "__main__":
    main()
