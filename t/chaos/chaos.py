#!/usr/bin/env python3
"""Fault injection for submitd: steady authenticated load with a unique token
per message, one fault after another, then a reconciliation of every 250
against the downstream and of the downstream against the client log.

    t/chaos/chaos.py [--duration S] [--warmup S] [--scenarios a,b,...]
                     [--clients N] [--refuse-every N] [--list]

Faults (each lasts --duration seconds, then the component is back):
    dovecot-kill, dovecot-stop      Dovecot SIGKILLed and restarted / SIGSTOPped
    mariadb-kill, mariadb-stop      MariaDB likewise
    downstream-kill, downstream-stop  the recording downstream likewise
    submitd-kill, submitd-stop      submitd itself likewise
    reload-storm                    SIGHUP ten times a second
    fd-exhaustion                   idle connections until submitd runs out of
                                    descriptors (it runs with RLIMIT_NOFILE 1024)
Throughout, the downstream refuses the final dot of every --refuse-every'th
message of each client (554): those must get 5xx and never be stored.

Output is TAP (t/README.md) with a table per fault: attempts, replies by
class, sessions that could not connect or log in, lost (a 250 whose token the downstream does not have), duplicates
(a token stored twice: the client never sends a token twice, so any
duplicate is submitd's), and recovery (seconds from the end of the fault
until a message started after it got 250). Passes when lost = 0, duplicates
= 0, no refused message stored, submitd never crashed (it is restarted only
by submitd-kill) and its log has no sanitizer report.

The short form runs in CI (t/proto/95-chaos.py); run it longer by hand, e.g.
    SUBMITD=build/submitd t/chaos/chaos.py --duration 20 --warmup 10
Needs root, mariadb-server and dovecot-core (scripts/deps.sh).
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import harness  # noqa: E402
from harness import diag, done, ok  # noqa: E402
import rig as chaos  # noqa: E402

ORDER = ["dovecot-stop", "dovecot-kill", "mariadb-stop", "mariadb-kill", "downstream-stop",
         "downstream-kill", "reload-storm", "fd-exhaustion", "submitd-stop", "submitd-kill"]


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per fault")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each fault")
    ap.add_argument("--scenarios", default=",".join(ORDER))
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--refuse-every", type=int, default=7)
    ap.add_argument("--recovery-limit", type=float, default=30.0,
                    help="seconds after a fault within which mail must flow again")
    ap.add_argument("--list", action="store_true")
    o = ap.parse_args(argv)
    if o.list:
        print("\n".join(ORDER))
        return 0
    names = [n for n in o.scenarios.split(",") if n]
    for n in names:
        if n not in chaos.FAULTS:
            ap.error("unknown scenario %s (--list)" % n)
    why = chaos.available()
    if why:
        print("1..0 # SKIP %s" % why, flush=True)
        return 0

    r = chaos.Rig(refuse=o.refuse_every > 0, nofile=1024,
                  submitd_extra=[("max_connections", "3000"), ("max_connections_per_ip", "3000")])
    d = r.start_submitd()
    t_begin = time.time()
    r.start_load(clients=o.clients, per_session=5, refuse_every=o.refuse_every)
    ok(r.wait_flowing(t_begin - 1, 30) is not None, "mail flows under load before any fault")
    windows = []
    crashed = []
    for name in names:
        time.sleep(o.warmup)
        t0 = time.time()
        chaos.FAULTS[name](r, o.duration)
        t_end = time.time()
        rec = r.wait_flowing(t_end, max(o.recovery_limit, 5))
        windows.append((name, t0, t_end, rec))
        ok(rec is not None and rec <= o.recovery_limit,
           "%s: mail flows again %s after the fault" % (
               name, "%.2f s" % rec if rec is not None else "never"))
        if r.d.proc is None or r.d.proc.poll() is not None:
            crashed.append(name)
            diag("submitd is gone after %s (status %s); starting it again"
                 % (name, r.d.proc.returncode if r.d.proc else None))
            r.d.proc = None
            r.d.start()
    time.sleep(o.warmup)
    r.end_load()
    res = r.reconcile()
    ok(not crashed, "submitd never crashed (gone after: %s)" % (", ".join(crashed) or "none"))

    # per fault: messages started from the fault's start to the next one's
    with r.lock:
        events = [e for e in r.events if e[0]]
        logins = [e for e in r.events if not e[0]]   # connection or AUTH refused
    bounds = [w[1] for w in windows[1:]] + [float("inf")]
    lost, dup = set(res["lost"]), set(res["dup"])
    rows = []
    head = "%-16s %6s %8s %6s %6s %6s %8s %10s %5s %5s %9s" % (
        "fault", "secs", "attempts", "250", "4xx", "5xx", "no-reply", "login-fail", "lost", "dup",
        "recovery")
    for (name, t0, t_end, rec), t_next in zip([("(before)", t_begin, t_begin, None)] + windows,
                                              [windows[0][1] if windows else float("inf")]
                                              + bounds):
        ev = [e for e in events if t0 <= e[3] < t_next]
        rows.append("%-16s %6.1f %8d %6d %6d %6d %8d %10d %5d %5d %9s" % (
            name, t_end - t0, len(ev), sum(1 for e in ev if e[2] == 250),
            sum(1 for e in ev if e[2] is not None and 400 <= e[2] < 500),
            sum(1 for e in ev if e[2] is not None and e[2] >= 500),
            sum(1 for e in ev if e[2] is None),
            sum(1 for e in logins if t0 <= e[3] < t_next),
            sum(1 for e in ev if e[0] in lost), sum(1 for e in ev if e[0] in dup),
            "%.2f s" % rec if rec is not None else "-"))
    diag(head)
    for row in rows:
        diag(row)
    diag("total: %d attempts, %d accepted (250), %d in the downstream, %d stored without a 250 "
         "(reply lost with a killed process; the client sends it again), %d refused by the "
         "downstream (554 asked for)" % (res["attempts"], res["accepted_250"], res["in_sink"],
                                         len(res["stored_without_250"]), res["refused_5xx"]))
    harness.is_(res["lost"], [], "lost = 0: every 250 is in the downstream")
    harness.is_(res["dup"], [], "duplicates = 0: no token stored twice")
    harness.is_(res["unknown"], [], "the downstream has nothing the clients did not send")
    harness.is_(res["refused_but_stored"], [], "no message the downstream refused is stored")
    harness.is_(res["refusal_not_5xx"], [], "no refused message got 250")
    ok(res["accepted_250"] > 0, "mail was accepted (%d)" % res["accepted_250"])
    rep = d.sanitizer_report()
    ok(rep is None, "no sanitizer report in submitd's log", rep)
    done()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
