#!/usr/bin/env bash
# scripts/test.sh: the whole test suite, as CI runs it (bash .ci/run).
#   1. scripts/deps.sh
#   2. build/      --enable-werror                      -> t/run build
#   3. build-san/  --enable-sanitizers --enable-werror  -> t/run build-san
#   4. scripts/fuzz.sh: every libFuzzer target for FUZZ_SECONDS (30) on top of
#      its corpus (the corpus replays already ran in steps 2 and 3)
# Prints one TAP stream (numbered across both builds) and ends with exactly
# one line "N passed, N failed, N skipped" (t/run lists each skip and its
# reason; under CI=true a skip is a failure). Exit status 1 if anything failed.
# Env: T_ONLY=REGEX (passed to t/run --only), T_SKIP_SAN=1 (skip step 3),
#      T_SKIP_DEPS=1, T_SKIP_FUZZ=1 (skip step 4), FUZZ_SECONDS, T_KEEP=1 (keep
#      test temp dirs), T_BUILD_DIR, T_SAN_BUILD_DIR.
set -uo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
cd "$top"

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
export PYTHONDONTWRITEBYTECODE=1
# 500 concurrent sessions need file descriptors (client + submitd + sink)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

n=0 passed=0 failed=0 skipped=0
tap() { # tap OK|FAIL description
  n=$((n + 1))
  if [ "$1" = OK ]; then passed=$((passed + 1)); echo "ok $n - $2"
  else failed=$((failed + 1)); echo "not ok $n - $2"; fi
}
comment_tail() { tail -n "${2:-60}" "$1" 2>/dev/null | sed 's/^/#   /'; }

if [ "${T_SKIP_DEPS:-0}" != 1 ]; then
  echo "# deps: scripts/deps.sh"
  # its progress lines as TAP comments while it runs (a first install takes minutes)
  if bash scripts/deps.sh 2>&1 | sed -u 's/^/#   /'; then tap OK "deps installed"
  else tap FAIL "deps installed"; fi
fi

only=()
[ -n "${T_ONLY:-}" ] && only=(--only "$T_ONLY")

suite() { # suite LABEL BUILD_DIR CONFIGURE_ARGS...
  local label="$1" dir="$2"; shift 2
  local log="$top/$dir.build.log" summary
  echo "# $label: scripts/build.sh $dir $*"
  if SKIP_AUTORECONF="${skip_autoreconf:-0}" BUILD_TESTS=0 bash scripts/build.sh "$dir" "$@" \
      >"$log" 2>&1; then
    tap OK "$label: build submitd ($*)"
  else
    tap FAIL "$label: build submitd ($*)"
    comment_tail "$log" 80
    return
  fi
  skip_autoreconf=1
  # test programs separately: a broken unit test must not hide the protocol tests
  if make -k -C "$dir" -j"${JOBS:-2}" check TESTS= >>"$log" 2>&1; then
    tap OK "$label: build test programs"
  else
    tap FAIL "$label: build test programs"
    comment_tail "$log" 40
  fi
  summary="$(mktemp)"
  echo "# $label: t/run $dir"
  ./t/run --offset "$n" --summary "$summary" "${only[@]}" "$dir"
  if read -r p f s last < "$summary" && [ -n "$last" ]; then
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s)); n=$last
  else
    tap FAIL "$label: t/run did not complete"
  fi
  rm -f "$summary"
}

start=$(date +%s)
suite "werror" "${T_BUILD_DIR:-build}" --enable-werror
if [ "${T_SKIP_SAN:-0}" != 1 ]; then
  suite "sanitizers" "${T_SAN_BUILD_DIR:-build-san}" --enable-sanitizers --enable-werror
fi
if [ "${T_SKIP_FUZZ:-0}" != 1 ] && [ -z "${T_ONLY:-}" ]; then
  echo "# fuzz: scripts/fuzz.sh (FUZZ_SECONDS=${FUZZ_SECONDS:-30} per target)"
  fuzz_ran=0
  while IFS= read -r line; do
    case "$line" in
      "ok "*) fuzz_ran=1; tap OK "${line#ok * - }" ;;
      "not ok "*) fuzz_ran=1; tap FAIL "${line#not ok * - }" ;;
      "1.."*) ;;
      *) echo "# $line" ;;
    esac
  done < <(FUZZ_SECONDS="${FUZZ_SECONDS:-30}" bash scripts/fuzz.sh 2>&1)
  [ "$fuzz_ran" = 1 ] || tap FAIL "fuzz: scripts/fuzz.sh ran no target"
fi
echo "# total time $(( $(date +%s) - start ))s"
echo "1..$n"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
