#!/usr/bin/env python3
"""Sender ownership (issue 4): sender_login_maps / sender_login_policy with
Postfix's semantics, and the From:/Sender: header check, against a private
MariaDB loaded from sql/ and against a texthash: table with the same content.

  - one case table (own address, alias, catch-all, +extension, case, two
    owners, null sender, hostile addresses, From:/Sender: headers) run once
    per backend; the replies must be the expected ones and identical;
  - every sender_login_policy for authenticated and unauthenticated-trusted
    clients, per backend;
  - header_from_policy = warn, header_from_exempt_maps;
  - hostile addresses change no query (MariaDB's general log: every query is
    the template with one correctly escaped literal) and the data is intact;
  - MariaDB stopped mid-test -> 451 4.3.0, nothing delivered, submitd keeps
    running; started again -> checks work without restarting submitd;
  - a query slower than query_timeout -> 451 4.3.0 promptly, other sessions
    on the same (one-worker) submitd are served meanwhile;
  - the cache: a hit sends no query, positive and negative entries expire.

Needs root (Dovecot) and Debian's mariadb-server and dovecot-core
(scripts/deps.sh); skipped without them.
"""
import base64
import os
import re
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import harness  # noqa: E402
from harness import *  # noqa: E402,F401,F403

if os.geteuid() != 0 or not shutil.which("mariadbd", path=os.environ.get("PATH", "") + ":/usr/sbin") \
        or not os.access(os.environ.get("DOVECOT", "/usr/sbin/dovecot"), os.X_OK):
    skip_all("needs root, mariadb-server and dovecot-core (scripts/deps.sh)")

from mariadb import DBNAME, PASSWORD, USER, MariaDB  # noqa: E402

# The logins go through the passwd-file Dovecot, then through the ISPmail
# guide's SQL Dovecot reading virtual_users in this same MariaDB.
PASSDB = variants(PASSDBS)

env = Env()
env.require_binary()
os.chmod(env.dir, 0o711)  # Dovecot's auth process (user dovecot) reads its files in here
certs = env.certs()

# ------------------------------------------------------------------ neighbours

PW = {
    "alice@example.com": "alice-secret",
    "bob@example.com": "bob-secret",
    "john@example.org": "john-secret",
    "newsletter@example.com": "newsletter-secret",
}
dv = private_dovecot(env, PASSDB, users={
    "alice@example.com": ("alice-secret", "SHA512-CRYPT", ""),
    "bob@example.com": ("bob-secret", "SSHA256", ""),
    "john@example.org": ("john-secret", "SSHA256", ""),
    "newsletter@example.com": ("newsletter-secret", "SSHA256", ""),
}, failure_delay="0")

db = MariaDB(env.path("mariadb"))   # with the sql passdb: the one that Dovecot reads
harness._cleanups.append(db.stop)   # before the temp dir goes (cleanups run last-in first)
t0 = time.time()
db.start()
diag("MariaDB up in %.1fs" % (time.time() - t0))


def sql(q):
    return db.client(q, database=DBNAME)


# Rows for cases the demo data lacks (added as root, the way an admin would):
# an alias stored in mixed case, an owner stored in upper case, an address
# with an apostrophe, one with % and _ (which must not act as LIKE wildcards),
# and a mailbox for the header-exempt account.
sql("""
INSERT IGNORE INTO virtual_users (domain_id, email, password) VALUES
  (2, 'newsletter@example.com', '{PLAIN}unused');
INSERT INTO virtual_aliases (domain_id, source, destination) VALUES
  (2, 'Press@Example.COM', 'alice@example.com'),
  (2, 'webmaster@example.com', 'BOB@example.com'),
  (2, 'o''brien@example.com', 'alice@example.com'),
  (2, '100%_sure@example.com', 'bob@example.com');
""")

# The texthash: table with the same content as the view.
rows = sql("SELECT address, GROUP_CONCAT(owner ORDER BY owner SEPARATOR ',') "
           "FROM sender_login_owners GROUP BY address ORDER BY address;")
texthash = env.path("sender-login.txt")
with open(texthash, "w") as f:
    f.write("# sender -> owners, dumped from sender_login_owners\n")
    for line in rows.splitlines():
        addr, owners = line.split("\t")
        f.write("%s %s\n" % (addr, owners))
exempt = env.path("header-exempt.txt")
with open(exempt, "w") as f:
    f.write("newsletter@example.com yes\n")

# The query of the shipped example .cf (conf/mysql-sender-login.cf), so the
# test follows it; the file's hosts/user/password are the test's own.
with open(os.path.join(harness.TOP, "conf", "mysql-sender-login.cf")) as f:
    QUERY = [l.split("=", 1)[1].strip() for l in f if re.match(r"\s*query\s*=", l)][-1]


def write_cf(name, hosts=None, query=QUERY, extra=""):
    path = env.path(name)
    with open(path, "w") as f:
        f.write("# %s (written by 75-sender-login.py)\nhosts = %s\nuser = %s\npassword = %s\n"
                "dbname = %s\nquery = %s\n%s" % (name, hosts or "unix:" + db.socket, USER,
                                                 PASSWORD, DBNAME, query, extra))
    return path


mysql_cf = write_cf("mysql-sender-login.cf", extra="retry_interval = 1\n")

BACKENDS = [("mysql", "mysql:" + mysql_cf), ("texthash", "texthash:" + texthash)]


def table_rows():
    out = sql("SELECT (SELECT COUNT(*) FROM virtual_domains), (SELECT COUNT(*) FROM virtual_users),"
              " (SELECT COUNT(*) FROM virtual_aliases); SHOW FULL TABLES;")
    return out


def general_log_clear():
    db.client("TRUNCATE TABLE mysql.general_log;")


def submitd_queries():
    """The statements submitd's user sent (raw bytes decoded), oldest first."""
    out = db.client("SELECT HEX(argument) FROM mysql.general_log WHERE command_type='Query' "
                    "AND user_host LIKE 'submitd[%' ORDER BY event_time;")
    return [bytes.fromhex(h).decode("utf-8", "replace") for h in out.split()]


# ------------------------------------------------------------------ submitd and clients

sink = env.sink()


def start(maps, extra=(), name="submitd", workers=2):
    # A trusted listener checks its unauthenticated clients' senders only
    # when its listen line says so (77-listener-settings.py tests the
    # default); here it does, with the policy under test.
    policy = dict(extra).get("sender_login_policy", "reject_sender_login_mismatch")
    conf = [("myhostname", MYHOST),
            ("listen", "127.0.0.1:%d tls" % free_port()),             # AUTH here
            ("listen", "127.0.0.1:%d plain trusted sender_login_policy=%s" % (free_port(), policy)),
            ("tls_cert_file", certs.fullchain), ("tls_key_file", certs.key),
            ("mynetworks", "127.0.0.0/8"),
            ("relayhost", sink.relayhost),
            ("error_limit", "1000"),         # the case table makes many 5xx in one session
            ("dovecot_auth_socket", dv.socket),
            ("workers", str(workers)),
            ("log_level", "info"),
            ("sender_login_maps", maps)]
    over = {k for k, _ in extra}
    conf = [(k, v) for k, v in conf if k not in over] + list(extra)
    d = env.submitd(conf, name=name)
    # AUTH is offered once the worker's Dovecot connection is up (one per worker)
    if not wait_for(lambda: d.log().count("connected, mechanisms") >= workers, 10):
        diag("%s: Dovecot connection not reported:\n%s" % (name, d.log()[-1500:]))
    return d


def b64(s):
    return base64.b64encode(s.encode()).decode()


def session(d, login):
    """An authenticated session (login) on the TLS listener, or (None) an
    unauthenticated one on the trusted plain listener."""
    if login is None:
        return client(d, "plain", certs)
    c = client(d, "tls", certs)
    r = c.cmd("AUTH PLAIN " + b64("\0%s\0%s" % (login, PW[login.lower()])))
    if r.code != 235:
        raise AssertionError("AUTH as %s: %s\n%s" % (login, r, c.dump()))
    return c


class Sessions:
    """One open session per login and submitd, reused across cases."""

    def __init__(self, d):
        self.d = d
        self.open = {}

    def get(self, login):
        if login not in self.open:
            self.open[login] = session(self.d, login)
        return self.open[login]

    def close(self):
        for c in self.open.values():
            c.cmd("QUIT")
            c.close()
        self.open = {}


def mail(c, addr, params=""):
    """MAIL FROM:<addr> and RSET after a 250: the reply's first line."""
    r = c.cmd("MAIL FROM:<%s>%s" % (addr, params))
    if r.code == 250:
        c.cmd("RSET")
    return r.lines[0] if r.lines else "EOF"


def owned():
    return "250 2.1.0 Ok"


def not_owned(addr, login):
    return "553 5.7.1 <%s>: Sender address rejected: not owned by user %s" % (addr, login)


def not_logged_in(addr):
    return "553 5.7.1 <%s>: Sender address rejected: not logged in" % addr


_subject_n = [0]


def message(frm, extra=b""):
    _subject_n[0] += 1
    subj = "sender-login %d %d" % (os.getpid(), _subject_n[0])
    h = b"From: " + frm.encode() + b"\r\nTo: <rcpt@example.net>\r\nSubject: " + subj.encode() + \
        b"\r\nDate: Sat, 22 Nov 2025 12:00:00 +0000\r\nMessage-ID: <%d.%d@client.test.example>\r\n" % (
            os.getpid(), _subject_n[0])
    return subj, h + extra + b"\r\nHello.\r\n"


def delivered(subj):
    return [m for m in sink.messages() if ("Subject: " + subj).encode() in m.content]


def transaction(c, env_from, frm, extra=b""):
    """A whole transaction; returns (final reply first line, subject)."""
    subj, msg = message(frm, extra)
    out = c.send_message(env_from, ["rcpt@example.net"], stuff(msg))
    last = out[-1]
    if last.code != 250:
        c.cmd("RSET")
    return (last.lines[0] if last.lines else "EOF"), subj


A, B, J, N, U = ("alice@example.com", "bob@example.com", "john@example.org",
                 "newsletter@example.com", None)

# ------------------------------------------------------------------ the case table
# (name, login (None: not authenticated, trusted listener), MAIL FROM address,
#  expected first reply line, MAIL parameters)

LONG64 = "a" * 64 + "@example.com"
LONG65 = "a" * 65 + "@example.com"
_dom = "b" * 63 + "." + "c" * 63 + "." + "d" * 49 + ".example.com"
LONG254 = "a" * 64 + "@" + _dom               # <254 octets>: the longest path (RFC 5321 4.5.3.1.3)
LONG255 = "a" * 64 + "@e" + _dom
assert len(LONG254) == 254 and len(LONG255) == 255
LONG_X = "a" * 1000 + "@example.com"

MAIL_CASES = [
    ("own address", A, "alice@example.com", owned()),
    ("own address (an alias of it forwards outside)", B, "bob@example.com", owned()),
    ("someone else's address", B, "alice@example.com", not_owned("alice@example.com", B)),
    ("alias", A, "info@example.com", owned()),
    ("alias, not an owner", B, "info@example.com", not_owned("info@example.com", B)),
    ("alias whose owner is stored in upper case", B, "webmaster@example.com", owned()),
    ("alias stored in mixed case", A, "press@example.com", owned()),
    ("address with two owners: first", A, "sales@example.com", owned()),
    ("address with two owners: second", B, "sales@example.com", owned()),
    ("address with two owners: a third login", J, "sales@example.com",
     not_owned("sales@example.com", J)),
    ("catch-all @domain", J, "anything@example.org", owned()),
    ("catch-all with +extension", J, "anything+tag@example.org", owned()),
    ("catch-all, not its owner", A, "anything@example.org",
     not_owned("anything@example.org", A)),
    ("catch-all owner's own mailbox", J, "john@example.org", owned()),
    ("+extension", A, "alice+news@example.com", owned()),
    ("+extension, cut at the first delimiter", A, "alice+a+b@example.com", owned()),
    ("+extension of another's address", B, "alice+news@example.com",
     not_owned("alice+news@example.com", B)),
    ("+extension of an alias", B, "sales+q4@example.com", owned()),
    ("empty localpart before + is not stripped", A, "+alice@example.com",
     not_owned("+alice@example.com", A)),
    ("upper-case sender", A, "ALICE@EXAMPLE.COM", owned()),
    ("mixed-case sender", A, "Alice@Example.Com", owned()),
    ("mixed-case alias", A, "PRESS@example.com", owned()),
    ("upper-case +extension", A, "ALICE+News@Example.com", owned()),
    ("upper-case, not the owner", B, "ALICE@EXAMPLE.COM", not_owned("ALICE@EXAMPLE.COM", B)),
    ("login typed in mixed case (Dovecot lower-cases it)", "Alice@Example.COM",
     "bob@example.com", not_owned("bob@example.com", A)),
    ("login typed in mixed case owns its address", "Alice@Example.COM", "alice@example.com",
     owned()),
    ("quoted form of an own address", A, '"alice"@example.com', owned()),
    ("null sender", A, "", owned()),
    ("null sender, not authenticated", U, "", owned()),
    ("unlisted sender", A, "nobody@example.net", not_owned("nobody@example.net", A)),
    ("unlisted sender, not authenticated", U, "nobody@example.net", owned()),
    ("listed sender, not authenticated", U, "alice@example.com", not_logged_in("alice@example.com")),
    ("catch-all-listed sender, not authenticated", U, "anything@example.org",
     not_logged_in("anything@example.org")),
    ("alias, not authenticated", U, "sales@example.com", not_logged_in("sales@example.com")),
    # hostile or unusual addresses: escaped, never interpreted
    ("apostrophe in a listed address", A, "o'brien@example.com", owned()),
    ("apostrophe in a listed address, not the owner", B, "o'brien@example.com",
     not_owned("o'brien@example.com", B)),
    ("% and _ in a listed address", B, "100%_sure@example.com", owned()),
    ("% and _ in a listed address, not the owner", A, "100%_sure@example.com",
     not_owned("100%_sure@example.com", A)),
    ("% is no wildcard", A, "%@example.com", not_owned("%@example.com", A)),
    ("_ is no wildcard", A, "a_ice@example.com", not_owned("a_ice@example.com", A)),
    ("%s %u %d in the address are not expanded", A, "%s%u%d@example.com",
     not_owned("%s%u%d@example.com", A)),
    ("quote injection (would list every owner)", B, '"x\' or address<>\'"@example.com',
     not_owned('"x\' or address<>\'"@example.com', B)),
    ("quote injection, not authenticated (would be 'listed')", U,
     '"x\' or address<>\'"@example.com', owned()),
    ("backslash-quote injection", B, '"x\\\\\' or 1=1 -- "@example.com',
     not_owned('"x\\\\\' or 1=1 -- "@example.com', B)),
    ("backslash at the end of the localpart", B, '"x\\\\"@example.com',
     not_owned('"x\\\\"@example.com', B)),
    ("escaped double quote", B, '"a\\"b"@example.com', not_owned('"a\\"b"@example.com', B)),
    ("'; DROP TABLE", B, '"\'; DROP TABLE virtual_users; -- "@example.com',
     not_owned('"\'; DROP TABLE virtual_users; -- "@example.com', B)),
    ("UNION SELECT", B, '"x\' UNION SELECT \'bob@example.com"@example.com',
     not_owned('"x\' UNION SELECT \'bob@example.com"@example.com', B)),
    ("UTF-8 localpart (SMTPUTF8)", A, "\u00e9mile@example.com",
     not_owned("\u00e9mile@example.com", A), " SMTPUTF8"),
    ("64-octet localpart", A, LONG64, not_owned(LONG64, A)),
    # Look-alikes: a different address is not owned because it folds to an
    # owned one (MariaDB's utf8mb4_general_ci says 'å' = 'a', 'ß' = 's' and
    # 'ä' = 'a'; texthash: compares bytes).
    ("look-alike of an own address", A, "\u00e5lice@example.com",
     not_owned("\u00e5lice@example.com", A), " SMTPUTF8"),
    ("look-alike of an alias", B, "\u00dfales@example.com",
     not_owned("\u00dfales@example.com", B), " SMTPUTF8"),
    ("look-alike of a catch-all domain", J, "x@ex\u00e4mple.org",
     not_owned("x@ex\u00e4mple.org", J), " SMTPUTF8"),
    ("longest path (256 octets with <>)", A, LONG254, not_owned(LONG254, A)),
    ("one octet too long", A, LONG255, "501 5.1.7 Error: path too long"),
    ("65-octet localpart", A, LONG65, "501 5.1.7 Error: path too long"),
    ("very long path (1012 octets)", A, LONG_X, "501 5.1.7 Error: path too long"),
]

# Raw bytes (NUL) go around mail(): (name, login, raw command line)
RAW_CASES = [
    ("NUL inside the address", A, b"MAIL FROM:<al\x00ice@example.com>\r\n"),
    ("NUL inside a quoted localpart", B, b'MAIL FROM:<"alice\x00"@example.com>\r\n'),
    ("NUL after the address", B, b"MAIL FROM:<alice@example.com>\x00\r\n"),
]

# (name, login, envelope, From: field, extra header bytes, expected final reply
#  first line; "250" means delivered)
HEADER_CASES = [
    ("own From:", A, A, "Alice <alice@example.com>", b"", "250"),
    ("From: an alias", A, A, "Sales <sales@example.com>", b"", "250"),
    ("forged From:, honest envelope", A, A, "Bob <bob@example.com>", b"",
     "550 5.7.1 <bob@example.com>: From: header address rejected: not owned by user alice@example.com"),
    ("forged From: behind a display name that looks like the own address", A, A,
     '"alice@example.com" <bob@example.com>', b"",
     "550 5.7.1 <bob@example.com>: From: header address rejected: not owned by user alice@example.com"),
    ("own From: behind a display name that looks like another address", A, A,
     '"bob@example.com" <alice@example.com>', b"", "250"),
    ("bare addr-spec with a comment", A, A, "alice@example.com (Alice)", b"", "250"),
    ("From: in upper case", A, A, "<ALICE@EXAMPLE.COM>", b"", "250"),
    ("From: with +extension", A, A, "<alice+news@example.com>", b"", "250"),
    ("From: on the catch-all", J, J, "<whoever@example.org>", b"", "250"),
    ("From: unlisted address", A, A, "<nobody@example.net>", b"",
     "550 5.7.1 <nobody@example.net>: From: header address rejected: not owned by user alice@example.com"),
    ("From: with two addresses, one foreign", A, A, "alice@example.com, bob@example.com",
     b"Sender: alice@example.com\r\n",
     "550 5.7.1 <bob@example.com>: From: header address rejected: not owned by user alice@example.com"),
    ("forged From: with the null envelope sender", A, "", "<bob@example.com>", b"",
     "550 5.7.1 <bob@example.com>: From: header address rejected: not owned by user alice@example.com"),
    ("Sender: not owned", A, A, "<alice@example.com>", b"Sender: <bob@example.com>\r\n",
     "550 5.7.1 <bob@example.com>: Sender: header address rejected: not owned by user alice@example.com"),
    ("owned Sender: with owned From:", A, A, "Sales <sales@example.com>",
     b"Sender: Alice <alice@example.com>\r\n", "250"),
    ("two owners: both may use the shared From:", B, B, "<sales@example.com>",
     b"Sender: <bob@example.com>\r\n", "250"),
    ("header check needs no match with the envelope", A, "info@example.com",
     "<sales@example.com>", b"", "250"),
    ("exempt login: any From:", N, N, "The CEO <ceo@example.com>", b"", "250"),
    ("exempt login: any Sender:", N, N, "<bob@example.com>", b"Sender: <x@example.net>\r\n", "250"),
    ("not authenticated: headers not checked", U, "nobody@example.net", "<bob@example.com>", b"",
     "250"),
]


def run_cases(backend, maps):
    """Runs MAIL_CASES, RAW_CASES and HEADER_CASES on one submitd; returns
    {case name: reply line}."""
    results = {}
    extra = [("header_from_exempt_maps", "texthash:" + exempt)]
    if backend == "mysql":
        # every answer from the database, none from the cache
        extra += [("sender_login_cache_ttl", "0"), ("sender_login_negative_cache_ttl", "0")]
    d = start(maps, extra, name="submitd-%s" % backend)
    ss = Sessions(d)
    for case in MAIL_CASES:
        name, login, addr, want = case[:4]
        params = case[4] if len(case) > 4 else ""
        got = mail(ss.get(login), addr, params)
        results[name] = got
        is_(got, want, "%s: %s: MAIL FROM:<%s>" % (backend, name, addr[:60]))
    for name, login, raw in RAW_CASES:
        c = ss.get(login)
        c.send(raw)
        r = c.reply()
        got = r.lines[0] if r.lines else "EOF"
        if r.code == 250:
            c.cmd("RSET")
        results[name] = got
        ok(r.code == 500, "%s: %s: refused cleanly (500)" % (backend, name), got)
        is_(c.cmd("NOOP").code, 250, "%s: %s: the session goes on" % (backend, name))
    base_aborts = sink.log().count("abort:")
    refused = 0
    for name, login, env_from, frm, extra_h, want in HEADER_CASES:
        got, subj = transaction(ss.get(login), env_from, frm, extra_h)
        results["header: " + name] = got if not got.startswith("250") else "250"
        if want == "250":
            ok(got.startswith("250"), "%s: header: %s: delivered" % (backend, name), got)
            ok(len(delivered(subj)) == 1, "%s: header: %s: at the sink" % (backend, name))
        else:
            refused += 1
            is_(got, want, "%s: header: %s: refused at end of data" % (backend, name))
            is_(len(delivered(subj)), 0, "%s: header: %s: nothing reached the sink" % (backend, name))
    ss.close()
    ok(wait_for(lambda: sink.log().count("abort:") - base_aborts >= refused, 10),
       "%s: every refused message was aborted downstream without the final dot (%d)"
       % (backend, refused), sink.log()[-2000:])
    ok(d.running(), "%s: submitd still running after the case table" % backend)
    d.stop()
    return results


# ------------------------------------------------------------------ policies
# (login, sender) -> expected reply per policy; alice is the login.

POLICIES = ["reject_sender_login_mismatch", "reject_authenticated_sender_login_mismatch",
            "reject_known_sender_login_mismatch", "reject_unauthenticated_sender_login_mismatch",
            "none"]
OK_ = owned()


def policy_expect(policy, login, sender):
    listed = sender in ("alice@example.com", "bob@example.com")
    if sender == "" or policy == "none":
        return OK_
    auth_check = policy in ("reject_sender_login_mismatch",
                            "reject_authenticated_sender_login_mismatch",
                            "reject_known_sender_login_mismatch")
    unauth_check = policy in ("reject_sender_login_mismatch", "reject_known_sender_login_mismatch",
                              "reject_unauthenticated_sender_login_mismatch")
    if login is None:
        return not_logged_in(sender) if unauth_check and listed else OK_
    if not auth_check:
        return OK_
    if sender == login:
        return OK_
    if not listed and policy == "reject_known_sender_login_mismatch":
        return OK_
    return not_owned(sender, login)


def run_policies(backend, maps):
    results = {}
    for policy in POLICIES:
        d = start(maps, [("sender_login_policy", policy)], name="submitd-%s-%s" % (backend, policy))
        ss = Sessions(d)
        for login in (A, U):
            for sender in ("alice@example.com", "bob@example.com", "nobody@example.net", ""):
                got = mail(ss.get(login), sender)
                key = "%s/%s/<%s>" % (policy, "authenticated" if login else "unauthenticated", sender)
                results[key] = got
                is_(got, policy_expect(policy, login, sender), "%s: %s" % (backend, key))
        ss.close()
        d.stop()
    return results


# ------------------------------------------------------------------ both backends

rows_before = table_rows()
general_log_clear()
results = {}
for backend, maps in BACKENDS:
    results[backend] = run_cases(backend, maps)
    if backend == "mysql":
        mysql_queries = submitd_queries()
    results[backend].update(run_policies(backend, maps))

diffs = ["%s: mysql %r, texthash %r" % (k, results["mysql"][k], results["texthash"].get(k))
         for k in results["mysql"] if results["mysql"][k] != results["texthash"].get(k)]
ok(not diffs and len(results["mysql"]) == len(results["texthash"]),
   "texthash: and mysql: give the same answer in all %d cases" % len(results["mysql"]),
   "\n".join(diffs))

# ------------------------------------------------------------------ the queries were not changed

# QUERY with every '%s' a quoted literal: no quote inside unless escaped.
LITERAL = r"((?:[^'\\]|\\.)*)"
TEMPLATE = re.compile(LITERAL.join(re.escape(p) for p in QUERY.split("%s")), re.S)
UNESC = {"0": "\0", "n": "\n", "r": "\r", "Z": "\x1a", "b": "\b", "t": "\t"}


def unescape(lit):
    return re.sub(r"\\(.)", lambda m: UNESC.get(m.group(1), m.group(1)), lit, flags=re.S)


ok(len(mysql_queries) >= len(MAIL_CASES), "general log: submitd sent %d queries" % len(mysql_queries))
strange = [q for q in mysql_queries
           if not TEMPLATE.fullmatch(q) and ("sender_login_owners" in q or not
                                            re.fullmatch(r"(?i)SET NAMES \w+|SELECT 1", q.strip()))]
ok(not strange, "general log: every statement is the query template with one quoted literal",
   "\n".join(map(repr, strange[:10])))
matches = [m for m in map(TEMPLATE.fullmatch, mysql_queries) if m]
ok(all(len(set(m.groups())) == 1 for m in matches), "general log: every %s of a query got the same key")
literals = {unescape(m.group(1)) for m in matches}
for key in ["o'brien@example.com", "100%_sure@example.com", "%@example.com",
            "%s%u%d@example.com", "\u00e9mile@example.com",
            "\"x' or address<>'\"@example.com", "x' or address<>'@example.com",
            "\"x\\\\' or 1=1 -- \"@example.com", "x\\' or 1=1 -- @example.com",
            "\"x\\\\\"@example.com", "x\\@example.com",
            "\"a\\\"b\"@example.com", "a\"b@example.com",
            "\"'; drop table virtual_users; -- \"@example.com",
            "'; drop table virtual_users; -- @example.com",
            "x' union select 'bob@example.com@example.com",
            "@example.com", LONG254]:
    ok(key in literals, "general log: key %r reached the database as one literal, unchanged"
       % key[:60])
ok(all(k == k.lower() for k in literals), "general log: keys are lower-cased",
   [k for k in literals if k != k.lower()][:5])
ok(not any("\0" in k for k in literals), "general log: no NUL reached the database")
is_(table_rows(), rows_before, "database intact after the hostile addresses (row counts, tables)")

# ------------------------------------------------------------------ header_from_policy = warn

d = start(BACKENDS[0][1], [("header_from_policy", "warn")], name="submitd-warn")
c = session(d, A)
got, subj = transaction(c, A, "Bob <bob@example.com>")
ok(got.startswith("250"), "header_from_policy = warn: forged From: accepted", got)
ok(len(delivered(subj)) == 1, "header_from_policy = warn: delivered")
ok(d.wait_log(r"warning: .*header From: <bob@example\.com> not owned by user alice@example\.com"),
   "header_from_policy = warn: warning logged", d.log()[-1500:])
got, subj = transaction(c, A, "<alice@example.com>", b"Sender: <info@example.net>\r\n")
ok(got.startswith("250") and len(delivered(subj)) == 1,
   "header_from_policy = warn: foreign Sender: delivered", got)
ok(d.wait_log(r"warning: .*header Sender: <info@example\.net> not owned by user alice@example\.com"),
   "header_from_policy = warn: Sender: warning logged", d.log()[-1500:])
is_(mail(c, "bob@example.com"), not_owned("bob@example.com", A),
    "header_from_policy = warn: MAIL FROM still enforced")
c.close()
d.stop()

d = start(BACKENDS[1][1], [("header_from_policy", "off")], name="submitd-off")
c = session(d, A)
got, subj = transaction(c, A, "Bob <bob@example.com>")
ok(got.startswith("250") and len(delivered(subj)) == 1,
   "header_from_policy = off: forged From: delivered", got)
c.close()
d.stop()

# ------------------------------------------------------------------ ISPmail's own .cf files, unchanged
# The guide's files (hosts = 127.0.0.1 over TCP, no submitd keys); Postfix's
# "aliases, email2email" semantics including its pitfall: a forward on one's
# own address is found first and locks its owner out.

def ispmail_cf(name, query):
    path = env.path(name)
    with open(path, "w") as f:
        f.write("user = %s\npassword = %s\nhosts = 127.0.0.1:%d\ndbname = %s\nquery = %s\n"
                % (USER, PASSWORD, db.port(), DBNAME, query))
    return path


e2e = ispmail_cf("mysql-email2email.cf", "SELECT email FROM virtual_users WHERE email='%s'")
valias = ispmail_cf("mysql-virtual-alias-maps.cf",
                    "SELECT destination FROM virtual_aliases WHERE source='%s'")
d = start("mysql:%s, mysql:%s" % (valias, e2e), name="submitd-ispmail")
ss = Sessions(d)
for login, addr, want, what in [
        (A, "alice@example.com", owned(), "email2email: own address"),
        (B, "alice@example.com", not_owned("alice@example.com", B), "email2email: not the owner"),
        (A, "info@example.com", owned(), "alias map: alias"),
        (B, "sales@example.com", owned(), "alias map: second owner"),
        (J, "whoever@example.org", owned(), "alias map: catch-all"),
        (B, "bob@example.com", not_owned("bob@example.com", B),
         "alias map first: a forward on bob's own address shadows email2email (Postfix pitfall)")]:
    is_(mail(ss.get(login), addr), want, "ISPmail .cf files unchanged: %s" % what)
ss.close()
d.stop()

# ------------------------------------------------------------------ MariaDB down and back

outage_cf = write_cf("outage.cf", hosts="inet:127.0.0.1:%d" % db.port(),
                     extra="retry_interval = 1\nconnect_timeout = 2s\nquery_timeout = 2s\n")
d = start("mysql:" + outage_cf, [("sender_login_cache_ttl", "0"),
                                 ("sender_login_negative_cache_ttl", "0")],
          name="submitd-outage", workers=1)
ca, cu = session(d, A), session(d, U)
is_(mail(ca, A), owned(), "outage: before: own address 250")
n0 = sink.count()
t0 = time.time()
db.stop()
diag("MariaDB stopped in %.1fs" % (time.time() - t0))
t0 = time.time()
r = ca.cmd("MAIL FROM:<alice@example.com>")
el = time.time() - t0
is_(r.lines[0], "451 4.3.0 <alice@example.com>: Temporary lookup failure",
    "outage: MAIL FROM -> 451 4.3.0 Temporary lookup failure")
ok(el < 3, "outage: answered in %.2fs" % el)
is_(ca.cmd("RCPT TO:<rcpt@example.net>").code, 503, "outage: RCPT refused after the 451: 503")
r = ca.cmd("DATA")
is_(r.code, 503, "outage: DATA refused: 503")
is_(mail(ca, "nobody@example.net").split(" ", 2)[:2], ["451", "4.3.0"],
    "outage: unlisted sender: 451 4.3.0 too (never accepted unchecked)")
is_(mail(cu, "nobody@example.net"), "451 4.3.0 <nobody@example.net>: Temporary lookup failure",
    "outage: not authenticated: 451 4.3.0")
got, subj = transaction(ca, "", "<alice@example.com>")
is_(got, "451 4.3.0 <alice@example.com>: Temporary lookup failure",
    "outage: From: check (null envelope) -> 451 4.3.0 at end of data")
ok(d.wait_log(r"reject: END-OF-MESSAGE from \S+: 451 4\.3\.0 <alice@example\.com>: Temporary lookup failure"),
   "outage: submitd logged the 451 verdict (the transaction is over)")
is_(sink.count(), n0, "outage: nothing delivered")
is_(ca.cmd("NOOP").code, 250, "outage: session alive")
ok(d.running(), "outage: submitd still running")
t0 = time.time()
db.start()
diag("MariaDB started again in %.1fs" % (time.time() - t0))
t0 = time.time()
attempts = []
while True:
    attempts.append(mail(ca, A))
    if attempts[-1] == owned() or time.time() - t0 > 10:
        break
    time.sleep(0.25)
is_(attempts[-1], owned(), "MariaDB back: own address 250 again, submitd not restarted "
    "(%d attempts in %.1fs)" % (len(attempts), time.time() - t0))
diag("after restart: %s" % attempts)
is_(mail(ca, "bob@example.com"), not_owned("bob@example.com", A), "MariaDB back: forged sender 553")
is_(mail(cu, "alice@example.com"), not_logged_in("alice@example.com"),
    "MariaDB back: not authenticated, listed: not logged in")
got, subj = transaction(ca, A, "<info@example.com>")
ok(got.startswith("250") and len(delivered(subj)) == 1, "MariaDB back: message delivered", got)
like(d.log(), r"(?i)lookup of a sender address failed", "outage: logged")
ca.close()
cu.close()
d.stop()

# ------------------------------------------------------------------ a query slower than the timeout

slow_cf = write_cf("slow.cf", query="SELECT owner FROM sender_login_owners, (SELECT SLEEP(3) AS z) AS s "
                   "WHERE address='%s' ORDER BY owner",
                   extra="query_timeout = 500ms\nretry_interval = 1\n")
d = start("mysql:" + slow_cf, [("sender_login_cache_ttl", "0"),
                               ("sender_login_negative_cache_ttl", "0")],
          name="submitd-slow", workers=1)
ca = session(d, A)
t0 = time.time()
ca.send("MAIL FROM:<alice@example.com>\r\n")
time.sleep(0.05)
t1 = time.time()
other = client(d, "plain", certs)     # greeting + EHLO on the same (only) worker
r = other.cmd("NOOP")
el_other = time.time() - t1
is_(r.code, 250, "slow query: another session is served meanwhile")
ok(el_other < 0.4, "slow query: ... promptly (connect, EHLO, NOOP in %.3fs)" % el_other)
r = ca.reply(timeout=10)
el = time.time() - t0
is_(r.lines[0], "451 4.3.0 <alice@example.com>: Temporary lookup failure",
    "slow query: 451 4.3.0 after query_timeout")
ok(0.4 <= el < 2.0, "slow query: answered after the 500ms timeout, well before the 3s query "
   "(%.2fs)" % el)
is_(other.cmd("NOOP").code, 250, "slow query: other session still fine")
is_(ca.cmd("NOOP").code, 250, "slow query: session alive after the 451")
other.close()
ca.close()
ok(d.running(), "slow query: submitd still running")
d.stop()

# ------------------------------------------------------------------ the cache

d = start("mysql:" + mysql_cf, [("sender_login_cache_ttl", "1s"),
                                ("sender_login_negative_cache_ttl", "1s")],
          name="submitd-cache", workers=1)
ca = session(d, A)


def nq():
    return len(submitd_queries())


general_log_clear()
is_(mail(ca, "info@example.com"), owned(), "cache: alias 250 (from the database)")
q1 = nq()
is_(q1, 1, "cache: one query for a full-address hit")
is_(mail(ca, "INFO@example.com"), owned(), "cache: again (other case) 250")
is_(nq(), q1, "cache: positive hit: no query")
sql("DELETE FROM virtual_aliases WHERE source='info@example.com';")
is_(mail(ca, "info@example.com"), owned(), "cache: row deleted, cached answer still used within the TTL")
is_(nq(), q1, "cache: still no query")
time.sleep(1.3)
is_(mail(ca, "info@example.com"), not_owned("info@example.com", A),
    "cache: after the TTL the database answers again (alias gone: 553)")
ok(nq() > q1, "cache: expired entry: queried again")
sql("INSERT INTO virtual_aliases (domain_id, source, destination) VALUES "
    "(2, 'info@example.com', 'alice@example.com');")

general_log_clear()
is_(mail(ca, "nobody@example.net"), not_owned("nobody@example.net", A), "cache: unlisted 553")
q1 = nq()
is_(q1, 2, "cache: unlisted: two keys queried (address, @domain)")
is_(mail(ca, "nobody@example.net"), not_owned("nobody@example.net", A), "cache: unlisted again 553")
is_(nq(), q1, "cache: negative hit: no query")
sql("INSERT INTO virtual_aliases (domain_id, source, destination) VALUES "
    "(2, 'nobody@example.net', 'alice@example.com');")
is_(mail(ca, "nobody@example.net"), not_owned("nobody@example.net", A),
    "cache: row added, negative answer still used within the TTL")
time.sleep(1.3)
is_(mail(ca, "nobody@example.net"), owned(), "cache: after the negative TTL the new row counts")
ok(nq() > q1, "cache: expired negative entry: queried again")
sql("DELETE FROM virtual_aliases WHERE source='nobody@example.net';")
ca.close()
d.stop()

is_(table_rows(), rows_before, "database intact at the end")
done()
