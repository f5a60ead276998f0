#!/usr/bin/env python3
"""The From:/Sender: ownership check judged by what a mail reader shows
(issue 11 §3; docs/design.md invariant 11: a check sees the whole input or
refuses it; RFC 5322 §3.6 From: once, Sender: at most once; RFC 6409 §8).

  - one explicit test per bypass found in review: a 600-octet comment or run
    of spaces before the address, a second address after 600 octets, NUL
    hiding the rest of the field (and NUL in the body), a second Sender:,
    a 259-octet address whose first 256 octets a catch-all owns, a From:
    with no address; and the other face: a 600-octet display name is fine;
  - a differential test: thousands of seeded random From:/Sender: fields
    (display names, nested comments, quoted strings with escapes, encoded
    words, groups, folding, obsolete syntax, long and odd whitespace, and the
    tricks above mixed in). Python's email package (policy=default) reads
    each message; whenever it sees an address the login does not own,
    submitd must refuse the message; when it reads every field without a
    defect and every address is owned, submitd must accept it.

Logins come from a scripted Dovecot (harness.FakeDovecot); ownership from a
texthash: table: jane@example.net is the catch-all owner of @example.net,
john@example.org owns john@example.org and info@example.org.
Env: T_FIELDS (default 3000) fields in the differential part, T_SEED.
"""
import base64
import email
import email.policy
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import *  # noqa: E402,F401,F403

JANE, JOHN = "jane@example.net", "john@example.org"
PW = {JANE: "jane-secret", JOHN: "john-secret"}
TABLE = {"@example.net": [JANE], "john@example.org": [JOHN], "info@example.org": [JOHN]}

env, certs, sink = setup()
fd = FakeDovecot(env.path("fake-auth.sock"), users=PW).start()
table = env.path("sender-login.txt")
with open(table, "w") as f:
    for k, v in TABLE.items():
        f.write("%s %s\n" % (k, ",".join(v)))

tp = free_port()
d = env.submitd(auth_config(certs, sink, fd.path, ["127.0.0.1:%d tls" % tp], [
    ("workers", "1"),
    ("error_limit", "1000"),
    ("auth_failure_delay", "0"),
    ("sender_login_maps", "texthash:" + table),
]))
ok(wait_dovecot_connected(d, 1), "submitd connected to the scripted Dovecot")


def session(login):
    c = client(d, "tls", certs)
    r = c.cmd("AUTH PLAIN " + base64.b64encode(("\0%s\0%s" % (login, PW[login])).encode()).decode())
    if r.code != 235:
        raise AssertionError("AUTH as %s: %s" % (login, r))
    return c


_n = [0]


def message(fields, body=b"Hello.\r\n"):
    """A message with the given header fields (bytes, each without CRLF)."""
    _n[0] += 1
    subj = b"hdr-%d-%d" % (os.getpid(), _n[0])
    h = b"".join(f + b"\r\n" for f in fields)
    return subj, h + b"To: <rcpt@example.com>\r\nSubject: " + subj + b"\r\n" + \
        b"Date: Sat, 22 Nov 2025 12:00:00 +0000\r\nMessage-ID: <" + subj + b"@client.example>\r\n\r\n" + body


class Sender:
    """Transactions on one session, pipelined (MAIL, RCPT, DATA in one write),
    reconnecting before error_limit would end the session."""

    def __init__(self, login):
        self.login = login
        self.c = None
        self.count = 0

    def send(self, msg):
        if self.c is None or self.count >= 400:
            if self.c is not None:
                self.c.cmd("QUIT")
                self.c.close()
            self.c = session(self.login)
            self.count = 0
        self.count += 1
        c = self.c
        c.send(b"MAIL FROM:<%s>\r\nRCPT TO:<rcpt@example.com>\r\nDATA\r\n" % self.login.encode())
        rs = [c.reply(), c.reply(), c.reply()]
        if rs[2].code != 354:
            raise AssertionError("transaction refused before the content: %s" % [str(r) for r in rs])
        c.send(stuff(msg))
        r = c.reply(timeout=30)
        return r.lines[0] if r.lines else "EOF"

    def close(self):
        if self.c is not None:
            self.c.cmd("QUIT")
            self.c.close()
            self.c = None


senders = {JANE: Sender(JANE), JOHN: Sender(JOHN)}


def send(login, fields, body=b"Hello.\r\n"):
    subj, msg = message(fields, body)
    return senders[login].send(msg), subj


def delivered(subj):
    return [m for m in sink.messages() if (b"Subject: " + subj) in m.content]


def not_owned(addr, field="From:", login=JANE):
    return "550 5.7.1 <%s>: %s header address rejected: not owned by user %s" % (addr, field, login)


# ------------------------------------------------------------------ explicit cases

X600 = "x" * 600
A244 = "a" * 244
EXPLICIT = [
    # (name, login, header fields, expected reply: exact, or a prefix ending in '*')
    ("own From: (sanity)", JANE, [b"From: Jane <jane@example.net>"], "250*"),
    ("600-octet comment before the address", JANE,
     [b"From: (%s) <ceo@victim.example>" % X600.encode()], not_owned("ceo@victim.example")),
    ("600 spaces inside the angle brackets", JANE,
     [b"From: <%sceo@victim.example>" % (b" " * 600)], not_owned("ceo@victim.example")),
    ("a second address after 600 octets", JANE,
     [b"From: jane@example.net, (%s) ceo@victim.example" % X600.encode()],
     not_owned("ceo@victim.example")),
    ("NUL hides the rest of the field", JANE,
     [b"From: jane@example.net\0<ceo@victim.example>"], "550 5.6.0 Error: NUL character in message"),
    ("a second Sender:", JANE,
     [b"From: jane@example.net", b"Sender: jane@example.net", b"Sender: ceo@victim.example"],
     "550 5.6.0 Error: more than one Sender: header field"),
    ("a second From:", JANE, [b"From: jane@example.net", b"From: ceo@victim.example"],
     "550 5.6.0 Error: more than one From: header field"),
    ("a second From: with a space before the colon", JANE,
     [b"From: jane@example.net", b"From : ceo@victim.example"],
     "550 5.6.0 Error: more than one From: header field"),
    ("a 259-octet address whose first 256 octets the catch-all owns", JANE,
     [b"From: <%s@example.net.au>" % A244.encode()], not_owned(A244 + "@example.net.au")),
    ("a From: with no parsable address", JANE, [b"From: Jane Doe"],
     "550 5.6.0 Error: From: header field unreadable: display name without an address at octet 10"),
    ("an empty From:", JANE, [b"From: "], "550 5.6.0 Error: From: header field unreadable: no address*"),
    ("only an empty group", JANE, [b"From: undisclosed-recipients:;"],
     "550 5.6.0 Error: From: header field has no address"),
    ("Sender: with no address", JANE, [b"From: jane@example.net", b"Sender: (nobody)"],
     "550 5.6.0 Error: Sender: header field unreadable: no address*"),
    ("an encoded word read across a quote", JANE,
     [b'From: =?utf-8?q?"?= <ceo@victim.example> "x <jane@example.net>'],
     "550 5.6.0 Error: From: header field unreadable: encoded-word*"),
    ("an encoded word as the domain", JANE, [b"From: jane@=?utf-8?q?victim.example?="],
     "550 5.6.0 Error: From: header field unreadable: encoded-word*"),
    ("addr-spec followed by an angle address", JANE,
     [b"From: jane@example.net <ceo@victim.example>"],
     "550 5.6.0 Error: From: header field unreadable: unexpected character*"),
    ("a continuation line first: readers disagree, refused", JANE,
     [b" folded", b"From: jane@example.net"], "550 5.6.0 Error: malformed header section at octet 1"),
    ("an mbox line first: readers disagree, refused", JANE,
     [b"From jane@example.net Sat Nov 22 12:00:00 2025", b"From: jane@example.net"],
     "550 5.6.0 Error: malformed header section at octet 1"),
    ("an empty field name: readers disagree, refused", JANE,
     [b"From: jane@example.net", b": junk", b"Sender: jane@example.net"],
     "550 5.6.0 Error: malformed header section at octet 25"),
    ("a space before the colon hides nothing", JANE,
     [b"Subject : x", b"From: ceo@victim.example"], not_owned("ceo@victim.example")),
    ("a 600-octet display name is accepted", JOHN,
     [b'From: "%s" <john@example.org>' % (b"y" * 600)], "250*"),
    ("a folded 600-octet display name and a comment", JOHN,
     [b'From: "%s"\r\n (%s)\r\n <john@example.org>' % (b"y" * 300, b"z" * 300)], "250*"),
    ("own addresses in a group and Sender:", JOHN,
     [b"From: team: john@example.org, Info <info@example.org>;", b"Sender: <John@Example.ORG>"], "250*"),
    ("+extension of an owned address", JOHN, [b"From: <john+news@example.org>"], "250*"),
    # Quoted local parts holding what delimits addresses: readers disagree on
    # what they show, and the owner lookup would strip quotes and extension.
    ("a quoted local part holding an address", JOHN,
     [b'From: "john+ceo@victim.example"@example.org'],
     "550 5.6.0 Error: From: header field unreadable: a quoted local part*"),
    ("an address split over two quoted words", JOHN,
     [b'From: CEO <"john+x"."@victim.example"@example.org>'],
     "550 5.6.0 Error: From: header field unreadable: a quoted local part*"),
    ("angle brackets in a quoted local part", JOHN,
     [b'From: "x<ceo@victim.example>"@example.org'],
     "550 5.6.0 Error: From: header field unreadable: a quoted local part*"),
    ("a quoted local part with a space is fine", JOHN,
     [b'From: <"john smith"@example.org>'], not_owned('"john smith"@example.org', login=JOHN)),
]

for name, login, fields, want in EXPLICIT:
    got, subj = send(login, fields)
    if want.endswith("*"):
        ok(got.startswith(want[:-1]), "explicit: %s: %s" % (name, want[:-1]), got)
    else:
        is_(got, want, "explicit: %s" % name)
    if want.startswith("250"):
        ok(wait_for(lambda: len(delivered(subj)) == 1, 5), "explicit: %s: delivered" % name)
    else:
        is_(len(delivered(subj)), 0, "explicit: %s: nothing delivered" % name)

got, subj = send(JANE, [b"From: jane@example.net"], body=b"a NUL\0 in the body\r\n")
is_(got, "550 5.6.0 Error: NUL character in message", "explicit: NUL in the body (no BINARYMIME)")
c = session(JANE)
subj, msg = message([b"From: jane@example.net"], body=b"BDAT\0 content\r\n")
out = [c.cmd("MAIL FROM:<%s>" % JANE), c.cmd("RCPT TO:<rcpt@example.com>")]
c.send(b"BDAT %d LAST\r\n" % len(msg) + msg)
r = c.reply()
is_(r.lines[0] if r.lines else "EOF", "550 5.6.0 Error: NUL character in message",
    "explicit: NUL in BDAT content")
is_(c.cmd("NOOP").code, 250, "explicit: the session goes on after the NUL refusal")
c.close()
is_(len(delivered(subj)), 0, "explicit: NUL in BDAT content: nothing delivered")
like(d.log(), r"reject: END-OF-MESSAGE .*550 5\.6\.0 Error: NUL character in message",
     "explicit: the NUL refusal is logged")
like(d.log(), r"header check for user jane@example\.net: 550 5\.6\.0 Error: more than one Sender:",
     "explicit: the header refusal is logged with the login")

# ------------------------------------------------------------------ the differential test

SEED = int(os.environ.get("T_SEED", "7611"))
NFIELDS = int(os.environ.get("T_FIELDS", "3000"))
rng = random.Random(SEED)

OWNED = {
    JANE: ["jane@example.net", "Jane@Example.NET", "sales+q4@example.net", "x.y@example.net",
           '"jane doe"@example.net', '"a\\"b"@example.net', "jane@EXAMPLE.net"],
    JOHN: ["john@example.org", "JOHN@example.org", "john+tag@example.org", "info@example.org",
           '"john"@example.org', "info+x@Example.Org"],
}
FOREIGN = ["ceo@victim.example", "jane@example.net.au", "jane@sub.example.net", "jane@example.network",
           "john@example.org.evil", "johnny@example.org", "info@example.org.example",
           '"jane@example.net"@victim.example', "postmaster@victim.example", A244 + "@example.net.au",
           "x@[192.0.2.1]", "jane@example.org", "bob@example.net"]
FOREIGN_FOR = {JANE: FOREIGN, JOHN: FOREIGN + ["jane@example.net", "sales@example.net"]}


def pick_ws():
    r = rng.random()
    if r < 0.55:
        return " "
    if r < 0.7:
        return "\t"
    if r < 0.8:
        return "\r\n "
    if r < 0.88:
        return "\r\n\t"
    if r < 0.95:
        return " " * rng.randint(2, 40)
    return " " * rng.randint(100, 600)


def ows():
    """optional whitespace"""
    return pick_ws() if rng.random() < 0.4 else ""


def comment(depth=0):
    parts = []
    for _ in range(rng.randint(0, 3)):
        r = rng.random()
        if r < 0.15 and depth < 3:
            parts.append(comment(depth + 1))
        elif r < 0.25:
            parts.append(rng.choice(["\\)", "\\(", "\\\\", "\\\""]))
        elif r < 0.35:
            parts.append(rng.choice(["ceo@victim.example", "<ceo@victim.example>", ",", ";", ":", "\""]))
        else:
            parts.append(rng.choice(["note", "x y", "Jane", "=?utf-8?q?x?=", "a" * rng.randint(1, 300)]
                                    + ["\u00e9t\u00e9"] * (rng.random() < 0.1)))
    return "(" + rng.choice([" ", ""]).join(parts) + ")"


def cfws():
    r = rng.random()
    if r < 0.6:
        return ows()
    if r < 0.85:
        return ows() + comment() + ows()
    return pick_ws()


def quoted(text=None):
    if text is None:
        text = rng.choice(["Jane Doe", "Doe, Jane", "ceo@victim.example", "<ceo@victim.example>",
                           "a \\\" b", "back\\\\slash", "x" * rng.randint(1, 600),
                           "(not a comment)", "g: a@b.c;", "", "=?utf-8?q?J=C3=A4ne?= Doe"])
    return '"' + text + '"'


def encoded_word():
    return rng.choice(["=?utf-8?q?J=C3=A4ne?=", "=?utf-8?b?SmFuZQ==?=", "=?iso-8859-1?q?Andr=E9?=",
                       "=?utf-8?q?a_b?==?utf-8?q?c?=", "=?utf-8?q?=41?=", "=?bogus?x?y?="])


def phrase():
    words = []
    for i in range(rng.randint(1, 4)):
        r = rng.random()
        if r < 0.5:
            w = rng.choice(["Jane", "Doe", "John", "Info", "CEO", "Support-Team", "o'neil"])
        elif r < 0.75:
            w = quoted()
        elif r < 0.87:
            w = encoded_word() + " "  # RFC 2047 §5 (3): an encoded-word ends at a space
        elif r < 0.94:
            w = rng.choice(["Q.", "J\u00e4ne", "\"J\u00e4ne\""])  # obsolete or raw UTF-8
        else:
            w = "Name"
        words.append(w)
    out = words[0]
    for w in words[1:]:
        out += (cfws() or " ") + w
    return out


def local_domain(addr):
    i = addr.rindex("@")
    return addr[:i], addr[i + 1:]


def render_addr_spec(addr):
    local, domain = local_domain(addr)
    r = rng.random()
    if r < 0.7 or local.startswith('"'):
        return cfws() + local + "@" + domain + cfws()
    if r < 0.78:  # obsolete: CFWS around '@' and dots
        lw = local.split(".")
        dw = domain.split(".") if not domain.startswith("[") else [domain]
        return (ows() + (ows() + "." + ows()).join(lw) + ows() + "@" + ows() +
                (ows() + "." + ows()).join(dw) + ows())
    return comment() + local + comment() + "@" + comment() + domain + comment()


def render_mailbox(addr):
    r = rng.random()
    if r < 0.3:
        return render_addr_spec(addr)
    angle = "<" + render_addr_spec(addr) + ">"
    if rng.random() < 0.05:
        angle = "<" + ows() + "@route.example" + ows() + "," + ows() + "@r2.example" + ows() + ":" + \
            render_addr_spec(addr) + ">"
    if r < 0.45:
        return cfws() + angle + cfws()
    return cfws() + phrase() + rng.choice(["", " ", pick_ws()]) + angle + cfws()


TRICKS = [
    lambda a, b: "%s\0<%s>" % (a, b),
    lambda a, b: "%s <%s>" % (a, b),
    lambda a, b: "%s<%s>" % (a, b),
    lambda a, b: "Name <%s> <%s>" % (a, b),
    lambda a, b: '=?utf-8?q?"?= <%s> "x <%s>' % (b, a),
    lambda a, b: '"=?utf-8?q?"?=" <%s> "x <%s>' % (b, a),
    lambda a, b: "=?utf-8?q?=41 <%s> ?= <%s>" % (b, a),
    lambda a, b: "(%s <%s>" % (a, b),
    lambda a, b: '"%s <%s>' % (a, b),
    lambda a, b: "Name \\<%s> <%s>" % (b, a),
    lambda a, b: "<%s" % b,
    lambda a, b: "%s, <%s" % (a, b),
    lambda a, b: "g: %s, %s" % (a, b),
    lambda a, b: "a: b: %s;;" % b,
    lambda a, b: "%s %s" % (a, b),
    lambda a, b: "Name %s" % b,
    lambda a, b: "%s" % local_domain(b)[0],
    lambda a, b: "=?utf-8?q?%s?=@%s" % local_domain(b),
    lambda a, b: "%s@=?utf-8?q?%s?=" % local_domain(b),
    lambda a, b: '"=?utf-8?q?%s?="@%s' % local_domain(b),
    lambda a, b: "<%s>x" % b,
    lambda a, b: "%s;" % b,
    lambda a, b: "<>",
    lambda a, b: "%s.@%s" % local_domain(b),
    lambda a, b: ".%s" % b,
    lambda a, b: "%s\r\n%s" % (a, b),
    lambda a, b: "<%s(c)%s>" % (a, b),
    lambda a, b: "%s:%s" % (a, b),
    lambda a, b: "(%s) %s" % (b, a),
    lambda a, b: "%s (%s" % (a, b),
]


def gen_list(login, tricked):
    """One field body: a list of mailboxes and groups (some tricks mixed in;
    tricked[0] is set when one is: never expected to be accepted)."""
    items = []
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
        owned = rng.random() < 0.75
        addr = rng.choice(OWNED[login] if owned else FOREIGN_FOR[login])
        r = rng.random()
        if r < 0.08:
            tricked[0] = True
            items.append(rng.choice(TRICKS)(rng.choice(OWNED[login]), rng.choice(FOREIGN_FOR[login])))
        elif r < 0.18:
            members = [render_mailbox(addr)]
            if rng.random() < 0.5:
                members.append(render_mailbox(rng.choice(OWNED[login])))
            items.append(phrase() + ows() + ":" + ",".join(members) + ows() + ";" + ows())
        elif r < 0.21:
            items.append(ows() + "undisclosed:" + ows() + ";")
        else:
            items.append(render_mailbox(addr))
    sep = rng.choice([",", ", ", ",\r\n ", " , "])
    body = sep.join(items)
    if rng.random() < 0.03:
        body = ", " + body + ","
    return body


def py_read(raw, name):
    """What Python's email sees in the field: (addresses, defects), or
    "error" when it cannot read it at all."""
    m = email.message_from_bytes(raw, policy=email.policy.default)
    try:
        h = m[name]
        if h is None:  # not a field for Python (after a line that ended its header)
            return [], []
        return [(a.username, a.domain) for a in h.addresses], list(h.defects) + list(m.defects)
    except Exception:
        return "error"


def owns(login, username, domain):
    """Postfix's lookup order for one address (sender_login.h): the full
    address, without its +extension, then @domain; the first listed key
    decides."""
    local, dom = username.lower(), domain.lower()
    keys = [local + "@" + dom]
    cut = local.find("+")
    if cut > 0 and local not in ("postmaster", "mailer-daemon", "double-bounce"):
        keys.append(local[:cut] + "@" + dom)
    if dom:
        keys.append("@" + dom)
    for k in keys:
        if k in TABLE:
            return login in TABLE[k]
    return False


t0 = time.time()
stats = {"refused": 0, "accepted": 0, "must_refuse": 0, "must_accept": 0, "python_error": 0,
         "unjudged": 0}
bad = []
for i in range(NFIELDS):
    login = JANE if i % 2 == 0 else JOHN
    tricked = [False]
    fields = [b"From: " + gen_list(login, tricked).encode()]
    if rng.random() < 0.25:
        fields.append(b"Sender: " + gen_list(login, tricked).encode())
        if rng.random() < 0.5:
            fields.reverse()
    subj, raw = message(fields)
    views = [py_read(raw, n) for n in ("From", "Sender") if any(f.startswith(n.encode() + b":") for f in fields)]
    must_refuse = must_accept = False
    if any(v == "error" for v in views):
        stats["python_error"] += 1
    else:
        addrs = [a for v in views for a in v[0]]
        defects = [x for v in views for x in v[1]]
        must_refuse = any(not owns(login, u, dm) for u, dm in addrs) or b"\0" in raw
        must_accept = not must_refuse and not defects and all(v[0] for v in views) and not tricked[0]
    got = senders[login].send(raw)
    accepted = got.startswith("250")
    stats["accepted" if accepted else "refused"] += 1
    if must_refuse:
        stats["must_refuse"] += 1
        if accepted:
            bad.append("accepted although Python sees a foreign address: %r (login %s) -> %s"
                       % (b"\r\n".join(fields)[:300], login, views))
    elif must_accept:
        stats["must_accept"] += 1
        if not accepted:
            bad.append("refused although Python reads only owned addresses without defects: %r "
                       "(login %s) -> %s" % (b"\r\n".join(fields)[:300], login, got))
    else:
        stats["unjudged"] += 1
    if not got.startswith(("250", "550 5.7.1", "550 5.6.0")):
        bad.append("unexpected reply %r for %r" % (got, b"\r\n".join(fields)[:200]))
el = time.time() - t0
diag("differential: %d fields (seed %d) in %.1fs: %s" % (NFIELDS, SEED, el, stats))
ok(not bad, "differential: whenever Python's email sees an address the login does not own, "
   "the message is refused (%d cases)" % stats["must_refuse"], "\n".join(bad[:15]))
ok(stats["must_refuse"] > NFIELDS // 5 and stats["must_accept"] > NFIELDS // 5,
   "differential: both sides exercised (%d must refuse, %d must accept)"
   % (stats["must_refuse"], stats["must_accept"]))
# A hang guard, not a benchmark: a loaded 2-core machine under ASan takes
# minutes; only a loop that never ends (or a quadratic one) goes past this.
ok(el < 600, "differential: %d fields in %.1fs" % (NFIELDS, el))

for s in senders.values():
    s.close()
ok(d.running(), "submitd still running")
done()
