#!/usr/bin/env python3
"""neighbours.py: the private neighbours the C unit tests need, in one
directory (Python 3 stdlib only). t/run starts them before the unit tests
and stops them afterwards; by hand:

    eval "$(python3 t/lib/neighbours.py start DIR)"   # prints the env lines
    python3 t/lib/neighbours.py stop DIR               # stops all, removes DIR

  DIR/mariadb      a MariaDB (t/lib/mariadb.py) loaded from sql/:
                   SUBMITD_TEST_MYSQL_SOCKET, _PORT, _DIR, _USER, _PASSWORD, _DB,
                   SUBMITD_TEST_MARIADB_PY          (t/unit/test-mysql)
  DIR/dovecot      Dovecot, passwd-file passdb:  DOVECOT_AUTH_SOCKET
  DIR/dovecot-sql  Dovecot, the ISPmail guide's SQL passdb on that MariaDB:
                   DOVECOT_SQL_AUTH_SOCKET          (t/unit/test-dovecot-real, both)

Each neighbour that cannot start (package missing, not root) is left out
with a reason on stderr / in missing(); the tests that need it then skip,
which is a failure under CI=true.
"""
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dovecot as dovecotmod  # noqa: E402
import mariadb as mariadbmod  # noqa: E402


def _detached(argv, **kw):
    # its own session: a test's process group being killed never reaches it
    return subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, **kw)


def start(base, log=sys.stderr):
    """Starts what can be started; returns the env dict for the tests."""
    os.makedirs(base, exist_ok=True)
    os.chmod(base, 0o755)   # Dovecot's auth process (user dovecot) reads its files below
    env = {}
    if not mariadbmod.available():
        log.write("neighbours: no MariaDB: needs root and mariadb-server\n")
        db = None
    else:
        try:
            db = mariadbmod.MariaDB(os.path.join(base, "mariadb")).start()
            env.update(db.env())
        except RuntimeError as e:
            log.write("neighbours: MariaDB did not start: %s\n" % e)
            db = None
    if os.geteuid() != 0 or not os.access(dovecotmod.DOVECOT, os.X_OK):
        log.write("neighbours: no Dovecot: needs root and dovecot-core\n")
        return env
    kinds = [("passwd-file", "dovecot", "DOVECOT_AUTH_SOCKET")]
    if db is None or not dovecotmod.sql_available():
        log.write("neighbours: no SQL Dovecot: needs MariaDB and dovecot-mysql\n")
    else:
        kinds.append(("sql", "dovecot-sql", "DOVECOT_SQL_AUTH_SOCKET"))
    for passdb, name, var in kinds:
        dv = dovecotmod.Dovecot(dir=os.path.join(base, name), failure_delay="0", passdb=passdb,
                                db=db, spawn=_detached)
        try:
            dv.start()
            env[var] = dv.socket
        except RuntimeError as e:
            log.write("neighbours: Dovecot (%s) did not start: %s\n" % (passdb, e))
    return env


def stop(base):
    """Stops everything started in base and removes base."""
    for name in ("dovecot", "dovecot-sql"):
        d = os.path.join(base, name)
        if not os.path.isdir(d):
            continue
        dovecotmod.Dovecot(dir=d).stop(remove=False)   # master and children, by pid
    mariadbmod.MariaDB(os.path.join(base, "mariadb")).stop()
    shutil.rmtree(base, ignore_errors=True)


def main(argv):
    if len(argv) != 3 or argv[1] not in ("start", "stop"):
        sys.stderr.write(__doc__)
        return 2
    if argv[1] == "stop":
        stop(argv[2])
        return 0
    for k, v in start(argv[2]).items():
        print("%s=%s" % (k, v))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
