#!/usr/bin/env bash
# scripts/fresh-check.sh: a new user's first ten minutes, on a machine with
# nothing preinstalled. Not part of CI: it takes many minutes and downloads
# Debian packages.
#
#   1. debootstrap --variant=minbase bookworm (Debian 12) into a temp dir;
#   2. the checkout's files (tracked and untracked, not ignored: what a clone
#      plus your edits holds; no build dirs) copied to /root/submitd in it;
#   3. inside it, as root, in the README's order:
#        bash scripts/demo.sh
#        bash scripts/test.sh
#      with /proc, /sys, /dev, /dev/pts, /dev/shm and /run mounted the way a
#      container has them and no systemd running (the project's scripts start
#      every service they need);
#   4. each command's exit status, duration and last lines of output;
#   5. cleanup, also on failure or Ctrl-C: every process left in the chroot is
#      killed, everything is unmounted, the chroot removed.
#
# Runs as root on Debian. Exit status 0 when both commands exited 0.
# Env:
#   FRESH_MIRROR   Debian mirror (default: the first deb.debian.org-style URI in
#                  the host's apt sources, else http://deb.debian.org/debian)
#   FRESH_ONLY     regex passed to the test suite as T_ONLY (a subset of tests)
#   FRESH_SKIP_SAN=1  passed as T_SKIP_SAN=1 (no sanitizer build)
#   FRESH_SKIP_TEST=1 run only the demo
#   FRESH_DIR      parent dir for the chroot (default /var/tmp)
#   FRESH_LOGS     where the two commands' full output is kept
#                  (default: a new /var/tmp/submitd-fresh-logs.XXXXXX)
#   FRESH_TAIL     lines of output to show per command (default 25)
#   FRESH_KEEP=1   keep the chroot (its mounts are removed all the same)
set -uo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
suite=bookworm

say() { printf '[fresh %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { say "error: $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mounts)"
# A private mount namespace: the chroot's mounts can never propagate to the
# host's, and they vanish with this script even if the cleanup is cut short.
if [ -z "${FRESH_IN_NS:-}" ]; then
  exec env FRESH_IN_NS=1 unshare --mount --propagation private bash "$0" "$@"
fi
command -v git >/dev/null || die "git is needed to list the checkout's files"
if ! command -v debootstrap >/dev/null; then
  say "installing debootstrap on this machine"
  apt-get install -y -q debootstrap >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q debootstrap >/dev/null 2>&1; } ||
    die "could not install debootstrap"
fi

mirror="${FRESH_MIRROR:-}"
if [ -z "$mirror" ]; then
  mirror="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
    grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -n 1 | tr -d ' ')"
  mirror="${mirror%/}"
  [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
fi

root=""
mounted=()
cleanup() {
  local st=$?
  trap - EXIT INT TERM
  if [ -n "$root" ] && [ -d "$root" ]; then
    say "cleanup: processes, mounts, $root"
    # every process whose root is the chroot (started by this script's commands)
    local p pids=() i
    for i in 1 2 3; do
      pids=()
      for p in /proc/[0-9]*; do
        [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && pids+=("${p#/proc/}")
      done
      [ ${#pids[@]} -eq 0 ] && break
      [ "$i" = 1 ] && say "cleanup: ending ${#pids[@]} process(es) left in the chroot"
      kill "$([ "$i" = 3 ] && echo -KILL || echo -TERM)" "${pids[@]}" 2>/dev/null
      sleep 2
    done
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
      umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" 2>/dev/null ||
        say "cleanup: could not unmount ${mounted[i]}"
    done
    # anything mounted below the root by a command inside it
    local m
    while read -r m; do umount -l "$m" 2>/dev/null; done < <(awk -v r="$root/" \
      'index($2, r) == 1 {print $2}' /proc/self/mounts | sort -r)
    if awk -v r="$root" '$2 == r || index($2, r "/") == 1 {f = 1} END {exit !f}' /proc/self/mounts; then
      say "cleanup: mounts remain below $root; not removing it" >&2
      st=2
    elif [ "${FRESH_KEEP:-0}" = 1 ]; then
      say "cleanup: kept $root"
    else
      rm -rf --one-file-system "$root"
      [ -e "$root" ] && { say "cleanup: could not remove $root" >&2; st=2; }
    fi
  fi
  exit "$st"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mnt() { # mnt TYPE SRC DEST [OPTS]
  mkdir -p "$3"
  if [ "$1" = bind ]; then mount --bind "$2" "$3"; else mount -t "$1" ${4:+-o "$4"} "$2" "$3"; fi ||
    die "mount $1 $2 $3 failed"
  mounted+=("$3")
}

root="$(mktemp -d "${FRESH_DIR:-/var/tmp}/submitd-fresh.XXXXXX")" || die "mktemp failed"
chmod 755 "$root"
logs="${FRESH_LOGS:-$(mktemp -d /var/tmp/submitd-fresh-logs.XXXXXX)}"
mkdir -p "$logs"
t0=$(date +%s)
say "debootstrap --variant=minbase $suite $root $mirror"
if ! debootstrap --variant=minbase "$suite" "$root" "$mirror" > "$logs/debootstrap.log" 2>&1; then
  tail -n 20 "$logs/debootstrap.log"
  die "debootstrap failed (log: $logs/debootstrap.log)"
fi
say "debootstrap done in $(( $(date +%s) - t0 ))s"

# The apt sources a Debian 12 install has (debootstrap writes only the first).
sec="${mirror%/debian}/debian-security"
cat > "$root/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb $sec $suite-security main
EOF
cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true

mnt proc proc "$root/proc"
mnt sysfs sysfs "$root/sys"
# /dev as a container has it: a few device nodes, its own devpts and shm
mnt tmpfs tmpfs "$root/dev" "mode=755,nosuid"
for d in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
  IFS=: read -r n ma mi <<<"$d"
  mknod -m 666 "$root/dev/$n" c "$ma" "$mi" || die "mknod /dev/$n failed"
done
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
mnt devpts devpts "$root/dev/pts" "newinstance,ptmxmode=0666,mode=0620"
ln -s pts/ptmx "$root/dev/ptmx"
mnt tmpfs tmpfs "$root/dev/shm" "mode=1777"
mnt tmpfs tmpfs "$root/run" "mode=755"
mkdir -p "$root/run/lock" "$root/run/shm"

say "copying the checkout ($(git -C "$top" rev-parse --short HEAD)$(git -C "$top" diff --quiet HEAD || echo ', with uncommitted changes')) to /root/submitd"
mkdir -p "$root/root/submitd"
(cd "$top" && git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
  tar --null -T - -cf -) | tar -xf - -C "$root/root/submitd" || die "copying the checkout failed"

inside() { # inside LOGNAME COMMAND... : run in the chroot as a new root login would
  local name="$1"; shift
  local extra=()
  [ -n "${FRESH_ONLY:-}" ] && extra+=("T_ONLY=$FRESH_ONLY")
  [ "${FRESH_SKIP_SAN:-0}" = 1 ] && extra+=("T_SKIP_SAN=1")
  local s=$(date +%s)
  chroot "$root" /usr/bin/env -i HOME=/root USER=root LOGNAME=root SHELL=/bin/bash TERM=dumb \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin ${extra[@]+"${extra[@]}"} \
    /bin/bash -c 'cd /root/submitd && exec "$@" </dev/null' bash "$@" > "$logs/$name.log" 2>&1
  local st=$?
  results+=("$(printf '%-28s exit %3d  %5ds' "$*" "$st" "$(( $(date +%s) - s ))")")
  statuses+=("$st")
  say "$* -> exit $st after $(( $(date +%s) - s ))s; last lines:"
  tail -n "${FRESH_TAIL:-25}" "$logs/$name.log" | sed 's/^/    | /'
}

# What the chroot would start at boot: systemd enablement links and alias
# links (not masks), init scripts' start links.
boot_state() {
  (cd "$root" && { find etc/systemd/system -mindepth 1 -type l ! -lname /dev/null 2>/dev/null
    ls etc/rc2.d etc/rc3.d etc/rc4.d etc/rc5.d 2>/dev/null | grep '^S'; }) | sort -u
}
boot_before="$(boot_state)"
results=() statuses=()
say "bash scripts/demo.sh (inside; output: $logs/demo.log)"
inside demo bash scripts/demo.sh
if [ "${FRESH_SKIP_TEST:-0}" != 1 ]; then
  say "bash scripts/test.sh${FRESH_ONLY:+ with T_ONLY=$FRESH_ONLY}$([ "${FRESH_SKIP_SAN:-0}" = 1 ] && echo ' T_SKIP_SAN=1') (inside; output: $logs/test.log)"
  inside test bash scripts/test.sh
  grep -E '^# (total time|.*skip)|^ok .*# (SKIP|skip)|^not ok' "$logs/test.log" | head -n 40 | sed 's/^/    | /'
fi
now="$(boot_state)"
en="$(comm -13 <(printf '%s\n' "$boot_before") <(printf '%s\n' "$now") | tr '\n' ' ')"
gone="$(comm -23 <(printf '%s\n' "$boot_before") <(printf '%s\n' "$now") | tr '\n' ' ')"
say "enabled for the next boot by the runs: ${en:-nothing}${gone:+; no longer enabled: $gone}"
left="$(find "$root/tmp" "$root/var/tmp" -mindepth 1 -maxdepth 1 -name 'submitd-*' 2>/dev/null | sed "s|^$root||" | tr '\n' ' ')"
say "left in /tmp and /var/tmp inside the chroot: ${left:-nothing}"

say "summary (total $(( $(date +%s) - t0 ))s, full output in $logs):"
for r in "${results[@]}"; do say "    $r"; done
for st in "${statuses[@]}"; do [ "$st" = 0 ] || exit 1; done
exit 0
