#!/usr/bin/env python3
"""500 concurrent sessions (all connected and greeted at the same time),
each delivering its own message; all 500 stored, each exactly once."""
import asyncio
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

N = int(os.environ.get("T_CONCURRENCY", "500"))
N_TLS = N // 5
limit = raise_nofile(65536)
ok(limit >= 3 * N + 100, "RLIMIT_NOFILE %d is enough for %d sessions" % (limit, N))

env, certs, sink = setup()
d = env.submitd(standard_config(certs, sink, [("max_connections_per_ip", str(4 * N)),
                                              ("max_connections", str(8 * N))]))
ctx = certs.client_context()


async def reply(reader):
    lines = []
    while True:
        l = await reader.readline()
        if not l:
            raise EOFError("closed after %r" % lines)
        lines.append(l.decode("utf-8", "replace").rstrip("\r\n"))
        if len(l) < 4 or l[3:4] != b"-":
            return int(lines[-1][:3]), lines


async def session(i, barrier_ev, counter, results):
    tls = i < N_TLS
    host, port = d.addr("tls" if tls else "plain")
    step = "connect"
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ctx if tls else None,
                                    server_hostname=MYHOST if tls else None), 60)
        step = "greeting"
        code, _ = await asyncio.wait_for(reply(reader), 60)
        assert code == 220, (step, code)
        writer.write(b"EHLO c%d.test.example\r\n" % i)
        code, _ = await asyncio.wait_for(reply(reader), 60)
        assert code == 250, ("EHLO", code)
        counter[0] += 1
        if counter[0] == N:
            barrier_ev.set()
        step = "barrier"
        await asyncio.wait_for(barrier_ev.wait(), 120)
        msg = make_message(subject="concurrent %d" % i, body=b"session %d\r\n" % i * 20)
        writer.write(b"MAIL FROM:<s%d@example.com>\r\nRCPT TO:<r%d@example.net>\r\nDATA\r\n" % (i, i))
        for want, what in ((250, "MAIL"), (250, "RCPT"), (354, "DATA")):
            step = what
            code, lines = await asyncio.wait_for(reply(reader), 120)
            assert code == want, (what, lines)
        writer.write(stuff(msg))
        step = "end of data"
        code, lines = await asyncio.wait_for(reply(reader), 120)
        assert code == 250, (step, lines)
        writer.write(b"QUIT\r\n")
        step = "QUIT"
        code, lines = await asyncio.wait_for(reply(reader), 60)
        assert code == 221, (step, lines)
        writer.close()
        results[i] = "ok"
    except Exception as e:  # noqa: BLE001
        results[i] = "%s: %r" % (step, e)


async def main():
    ev = asyncio.Event()
    counter = [0]
    results = {}
    t0 = time.time()
    await asyncio.gather(*(session(i, ev, counter, results) for i in range(N)))
    return results, counter[0], time.time() - t0


results, greeted, elapsed = asyncio.run(main())
diag("%d sessions in %.1fs" % (N, elapsed))
is_(greeted, N, "all %d sessions connected and greeted at once" % N)
bad = {i: r for i, r in results.items() if r != "ok"}
is_(len(bad), 0, "all %d sessions got 250 for their message" % N)
for i in sorted(bad)[:10]:
    diag("session %d: %s" % (i, bad[i]))
wait_for(lambda: sink.count() >= N, 10)
ms = sink.messages()
is_(len(ms), N, "downstream stored %d messages" % N)
seen = sorted(int(m.rcpts[0][1:].split("@")[0]) for m in ms if m.rcpts)
is_(seen, list(range(N)), "each session's message stored exactly once")
wrong = [m for m in ms if m.rcpts and ("session %s\r\n" % m.rcpts[0][1:].split("@")[0]).encode()
         not in m.content]
is_(len(wrong), 0, "every message has its own session's body (no mix-ups)")
c = client(d, "plain", certs)
is_(c.cmd("NOOP").code, 250, "server responsive after the burst")
c.close()
done()
