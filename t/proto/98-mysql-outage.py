#!/usr/bin/env python3
"""A short MariaDB outage under load, with the default retry_interval (60 s):

  - while the database is down, MAIL is answered 451 4.3.0 promptly;
  - once it is back, mail is accepted again within seconds (one probe
    connection at a short interval while every host is marked down), not
    after retry_interval;
  - the log says it once: the host is down (with the error), the host is up
    again (with the outage's length and the count of failed lookups); the
    per-lookup failure line is rate-limited.

Needs root, mariadb-server and dovecot-core (scripts/deps.sh); skipped without.
"""
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "chaos"))
import rig as chaos  # noqa: E402  (puts t/lib on the path too)
from harness import *  # noqa: E402,F401,F403

chaos.skip_unless_available()

r = chaos.Rig()
d = r.start_submitd()
r.start_load(clients=3, per_session=5)
ok(r.wait_flowing(time.time() - 1, 20) is not None, "mail flows before the outage")

t_down = time.time()
r.db.stop()
time.sleep(4)
with r.lock:
    during = [e for e in r.events if e[0] and e[3] >= t_down + 1]
codes = sorted({e[2] for e in during})
diag("replies while MariaDB was down: %s (%d attempts)" % (codes, len(during)))
ok(during and all(e[2] == 451 for e in during), "while the database is down: 451 only")
slow = max((e[4] - e[3] for e in during), default=0)
ok(slow < 3, "and promptly (slowest %.2f s)" % slow)

r.db.start()
t_up = time.time()
rec = r.wait_flowing(t_up, 40)
diag("MariaDB back after %.1f s of outage; mail accepted again %s s later"
     % (t_up - t_down, "%.2f" % rec if rec is not None else "never (40 s)"))
ok(rec is not None and rec < 5, "mail is accepted again within 5 s of the database's return")
r.end_load()

# every worker notices (one probe each at most 2 s apart); the last one logs it
d.wait_log(r"MySQL host 127\.0\.0\.1 is up again", 5)
log = d.log()
downs = re.findall(r"MySQL host 127\.0\.0\.1 is down: .+", log)
ups = re.findall(r"MySQL host 127\.0\.0\.1 is up again after [\d.]+ s \(\d+ lookups failed "
                 r"meanwhile\)", log)
diag("log: %s" % (downs[:2] + ups[:2]))
is_(len(downs), 1, "the outage is logged once, with the host and the error")
like(downs[0] if downs else "", r"is down: .*(Can't connect|Connection refused|Lost connection|"
     r"server has gone away)", "the down line carries the error")
is_(len(ups), 1, "the recovery is logged once, with the outage's length")
per_lookup = len(re.findall(r"lookup of a sender address failed", log))
diag("per-lookup failure lines: %d" % per_lookup)
ok(per_lookup <= 8, "per-lookup failure lines are rate-limited (%d)" % per_lookup)
res = r.reconcile()
diag("reconciliation: %s" % {k: (v if isinstance(v, int) else len(v)) for k, v in res.items()})
is_(res["lost"], [], "every 250 is in the sink")
is_(res["dup"], [], "no message stored twice")
done()
