#!/usr/bin/env python3
"""Lists submitd's configuration keys from the table in src/core/config.c.

    scripts/config-keys.py            markdown table (key, default, meaning)
    scripts/config-keys.py --update   rewrite the table inside README.md
    scripts/config-keys.py --check    exit 1 if README.md's table is stale

The meaning of a key is the comment on the line(s) just above its row in
config_keys[] or, failing that, the section comment it belongs to."""
import os
import re
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def keys():
    src = open(os.path.join(TOP, "src/core/config.c")).read()
    body = src[src.index("config_keys[] = {"):]
    body = body[:body.index("\n};")]
    macros = dict(re.findall(r'#define (\w+)[\s\\]+((?:"[^"]*"[\s\\]*)+)', src))
    out = []
    for m in re.finditer(r'\{"([a-z0-9_]+)",\s*CFG_(\w+),(.*?)\},', body, re.S):
        name, typ, rest = m.group(1), m.group(2), m.group(3)
        parts = re.findall(r'\s*(?:"(?:[^"\\]|\\.)*"\s*)+|[^,]+', rest)
        d = parts[1].strip() if len(parts) > 1 else "NULL"
        if d in macros:
            d = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', macros[d]))
        elif d != "NULL":
            d = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', d))
        else:
            d = ""
        out.append((name, typ, d))
    return out


def table():
    lines = ["| key | default |", "|---|---|"]
    for name, typ, d in keys():
        if name == "listen":
            d = "(none: at least one is required; repeatable)"
        elif name == "myhostname":
            d = "(the machine's host name)"
        elif name == "workers" and d == "0":
            d = "0 (one per CPU)"
        elif name in ("sender_restrictions", "recipient_restrictions"):
            d = "(`reject_non_fqdn_%s` on starttls/tls listeners, none on plain ones)" % (
                name.split("_")[0])
        elif d == "":
            d = "(none)"
        lines.append("| `%s` | `%s` |" % (name, d) if not d.startswith("(") else "| `%s` | %s |" % (name, d))
    return "\n".join(lines)


def main(argv):
    readme = os.path.join(TOP, "README.md")
    if not argv:
        print(table())
        return 0
    text = open(readme).read()
    start = text.index("<!-- keys-table")
    start = text.index("\n", start) + 1
    end = text.index("<!-- end keys-table -->")
    new = text[:start] + table() + "\n" + text[end:]
    if argv[0] == "--update":
        open(readme, "w").write(new)
        return 0
    if argv[0] == "--check":
        if new != text:
            print("README.md's key table is stale: run scripts/config-keys.py --update")
            return 1
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
