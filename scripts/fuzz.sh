#!/usr/bin/env bash
# scripts/fuzz.sh [TARGET...]
# Builds the libFuzzer targets (clang, --enable-fuzzing with ASan+UBSan, in
# build-fuzz/) and runs each one (all of t/fuzz/fuzz-*.c, or the TARGETs
# named, e.g. "addrlist") for FUZZ_SECONDS seconds (default 30) on top of its
# corpus t/fuzz/corpus/TARGET. The corpus in the source tree is only read:
# what the fuzzer finds goes to build-fuzz/fuzz-corpus/TARGET, a crash to
# build-fuzz/fuzz-crashes/TARGET-* (copy it into t/fuzz/corpus/TARGET/ once
# fixed, so the replay in every test run keeps it fixed).
# Prints TAP, one line per target:
#   ok N - fuzz/TARGET: 30s, 123456 execs, no crash
# Env: FUZZ_SECONDS (default 30), FUZZ_BUILD (default build-fuzz), JOBS (2),
# CC (default clang).
set -uo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
secs="${FUZZ_SECONDS:-30}"
build="${FUZZ_BUILD:-build-fuzz}"
case "$build" in /*) ;; *) build="$top/$build" ;; esac

if [ $# -gt 0 ]; then
	targets=("$@")
else
	targets=()
	for f in "$top"/t/fuzz/fuzz-*.c; do
		t="$(basename "$f" .c)"
		targets+=("${t#fuzz-}")
	done
fi

echo "1..${#targets[@]}"
log="$build/fuzz-build.log"
mkdir -p "$build"
if ! BUILD_TESTS=0 bash "$top/scripts/build.sh" "$build" --enable-fuzzing --enable-sanitizers \
	--enable-werror CC="${CC:-clang}" >"$log" 2>&1; then
	n=0
	for t in "${targets[@]}"; do
		n=$((n + 1))
		echo "not ok $n - fuzz/$t: the fuzz build failed (see $log)"
	done
	tail -n 30 "$log" | sed 's/^/# /'
	exit 1
fi

failed=0
n=0
for t in "${targets[@]}"; do
	n=$((n + 1))
	bin="$build/t/fuzz/fuzz-$t"
	seed="$top/t/fuzz/corpus/$t"
	work="$build/fuzz-corpus/$t"
	crashes="$build/fuzz-crashes"
	out="$build/fuzz-$t.log"
	if [ ! -x "$bin" ]; then
		echo "not ok $n - fuzz/$t: $bin was not built"
		failed=$((failed + 1))
		continue
	fi
	mkdir -p "$work" "$crashes"
	dirs=("$work")
	[ -d "$seed" ] && dirs+=("$seed")
	start=$(date +%s)
	# Leaks are reported as crashes too (-detect_leaks=1 is the default
	# with ASan); a slow input (10 s) or 2 GB of memory is one as well.
	"$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$crashes/$t-" "${dirs[@]}" >"$out" 2>&1
	rc=$?
	took=$(($(date +%s) - start))
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -n 1)
	execs="${execs:-0}"
	if [ $rc -eq 0 ]; then
		echo "ok $n - fuzz/$t: ${took}s, $execs execs, no crash"
	else
		failed=$((failed + 1))
		echo "not ok $n - fuzz/$t: ${took}s, $execs execs, exit $rc (log: $out)"
		grep -E "ERROR|SUMMARY|Test unit written|==[0-9]+==" "$out" | head -n 20 | sed 's/^/# /'
	fi
done
exit $((failed > 0))
