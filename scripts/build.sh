#!/usr/bin/env bash
# scripts/build.sh [BUILD_DIR [CONFIGURE_ARGS...]]
# Builds submitd out of tree: autoreconf -fi (in the source tree), configure in
# BUILD_DIR (default build/), make -j2, and the test programs (check_PROGRAMS)
# without running them. Re-runs configure only when its arguments changed.
# Env: SKIP_AUTORECONF=1 to skip autoreconf; BUILD_TESTS=0 to skip the test
# programs; JOBS (default 2).
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-build}"
[ $# -gt 0 ] && shift
case "$build" in /*) ;; *) build="$top/$build" ;; esac
jobs="${JOBS:-2}"

cd "$top"
if [ "${SKIP_AUTORECONF:-0}" != 1 ] || [ ! -x configure ]; then
  echo "build: autoreconf -fi"
  autoreconf -fi
fi

mkdir -p "$build"
cd "$build"
want="$*"
if [ ! -f Makefile ] || [ ! -f .configure-args ] || [ "$(cat .configure-args)" != "$want" ]; then
  echo "build: configure $want (in $build)"
  "$top/configure" "$@"
  printf '%s' "$want" > .configure-args
fi
echo "build: make -j$jobs"
make -j"$jobs"
# unit tests and corpus replays are check programs; build them without running
if [ "${BUILD_TESTS:-1}" = 1 ]; then
  echo "build: make check TESTS= (test programs, not run)"
  make -j"$jobs" check TESTS=
fi
echo "build: done: $build/submitd"
