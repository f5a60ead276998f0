#!/usr/bin/env python3
"""The tree keeps the shape docs/design.md §10 describes: every layer
includes only from layers below it, no source file grows past 1,400 lines,
main.c exports nothing but main(), and the code follows .clang-format."""
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import ok, done  # noqa: E402

TOP = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SRC = os.path.join(TOP, "src")

# Layers from the bottom; a file may include its own layer and those below.
LAYERS = ["core", "net", "smtp", "lookup", "dkim", "relay", "policy"]
FORBIDDEN = {
    "core": {"net", "smtp", "lookup", "dkim", "relay", "policy"},
    "net": {"smtp", "lookup", "dkim", "relay", "policy"},
    "smtp": {"lookup", "dkim", "relay", "policy"},
    "lookup": {"dkim", "relay", "policy"},
    "dkim": {"relay", "policy"},
    "relay": {"policy"},
}

sources = []
for d, _, files in os.walk(SRC):
    for f in files:
        if f.endswith((".c", ".h")):
            sources.append(os.path.join(d, f))
ok(len(sources) > 40, "found the sources (%d files)" % len(sources))

bad = []
for p in sources:
    rel = os.path.relpath(p, SRC)
    layer = rel.split(os.sep)[0] if os.sep in rel else None
    if layer not in FORBIDDEN:
        continue
    for m in re.finditer(r'^#include "([a-z_]+)/', open(p).read(), re.M):
        if m.group(1) in FORBIDDEN[layer]:
            bad.append("%s includes %s/" % (rel, m.group(1)))
ok(not bad, "no layer includes from a layer above it (%s)" % "; ".join(bad))

long = []
for p in sources:
    n = sum(1 for _ in open(p))
    if n > 1400:
        long.append("%s: %d" % (os.path.relpath(p, SRC), n))
ok(not long, "no source file over 1,400 lines (%s)" % ", ".join(long))

def lines(rel):
    return sum(1 for _ in open(os.path.join(SRC, rel)))

ok(lines("main.c") <= 500, "main.c at most 500 lines (%d)" % lines("main.c"))
ok(lines("session.c") <= 800, "session.c at most 800 lines (%d)" % lines("session.c"))
relay = [f for f in os.listdir(os.path.join(SRC, "relay")) if f.endswith(".c")]
ok(len(relay) >= 3, "relay/ in at least three files (%d)" % len(relay))

# main.c exports only main(): read the object the build made.
build = os.environ.get("SUBMITD")
obj = None
if build:
    bdir = os.path.dirname(build)
    for cand in ("src/main.o", "src/submitd-main.o"):
        if os.path.exists(os.path.join(bdir, cand)):
            obj = os.path.join(bdir, cand)
if obj and shutil.which("nm"):
    out = subprocess.run(["nm", "--defined-only", "-g", obj], capture_output=True, text=True).stdout
    syms = sorted(l.split()[-1] for l in out.splitlines() if l.strip())
    ok(syms == ["main"], "main.o defines no global but main (%s)" % ", ".join(syms))
else:
    ok(False, "main.o was found to check its symbols (SUBMITD=%s)" % build)

cf = shutil.which("clang-format-14") or shutil.which("clang-format")
if cf:
    bad = []
    for p in sources:
        r = subprocess.run([cf, "--dry-run", "-Werror", "--style=file", p],
                           capture_output=True, text=True, cwd=TOP)
        if r.returncode != 0:
            bad.append(os.path.relpath(p, SRC))
    ok(not bad, "sources follow .clang-format (run clang-format -i on: %s)" % " ".join(bad))
else:
    ok(False, "clang-format is installed (scripts/deps.sh installs it)")
done()
