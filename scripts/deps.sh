#!/usr/bin/env bash
# Installs everything submitd's build, demo and test suite need on Debian 12,
# as root (nothing needs to be there before: a debootstrap minbase root works).
# Idempotent: when every package is present it only checks and returns.
#
# It changes nothing the machine runs: the services these packages bring
# (Dovecot, MariaDB, Postfix, fail2ban, HAProxy, ...) are neither started
# (policy-rc.d) nor left enabled for the next boot (their systemd units and
# init scripts are disabled right after the installation, with or without
# systemd running). The demo and the tests start private instances on loopback.
# Only packages this run installed are touched: services the machine had
# before keep their state.
#
# Prints one line per phase and apt's progress every ~10 %; on failure, the
# last lines of apt's output and why.
# Env: DEPS_LOG=FILE keeps apt's full output there (default: a temp file,
# removed on success).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

pkgs=(
  build-essential autoconf automake libtool pkg-config
  libuv1-dev libgnutls28-dev gnutls-bin default-libmysqlclient-dev libsystemd-dev
  clang libclang-rt-14-dev
  python3 swaks libnet-ssleay-perl curl openssl msmtp
  dovecot-core dovecot-mysql mariadb-server fail2ban
  postfix postfix-mysql haproxy
  systemd # systemd-socket-activate: the socket-activation test on machines without systemd
)

say() { printf 'deps: %s\n' "$*"; }
die() { printf 'deps: error: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" != 0 ]; then
  die "must run as root (it installs Debian packages with apt-get)"
fi
command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1 ||
  die "apt-get/dpkg-query not found: scripts/deps.sh is for Debian 12 (bookworm)"

installed() { # prints the names of all installed packages, one a line
  dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' 2>/dev/null | awk '$1 == "ii" {print $2}' | sort -u
}

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  say "all ${#pkgs[@]} packages present"
  exit 0
fi

log="${DEPS_LOG:-}"
tmp_log=0
if [ -z "$log" ]; then log="$(mktemp /tmp/submitd-deps.XXXXXX)"; tmp_log=1; fi
before="$(mktemp /tmp/submitd-deps-before.XXXXXX)"
policy_made=0
cleanup() {
  local st=$?
  [ "$policy_made" = 1 ] && rm -f /usr/sbin/policy-rc.d
  rm -f "$before"
  if [ "$st" != 0 ]; then
    echo "deps: failed (exit $st); last lines of apt's output ($log):" >&2
    tail -n 30 "$log" 2>/dev/null | sed 's/^/  | /' >&2
  elif [ "$tmp_log" = 1 ]; then
    rm -f "$log"
  fi
  exit "$st"
}
trap cleanup EXIT

installed > "$before"

# Services pulled in by these packages must not start on the system's ports:
# the project starts its own private instances. An existing policy-rc.d (a
# container's own) is left as it is.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  policy_made=1
fi

start=$(date +%s)
say "missing ${#missing[@]} of ${#pkgs[@]}: ${missing[*]}"
say "apt-get update"
apt-get update -q >>"$log" 2>&1 || die "apt-get update failed (network or apt sources?)"

# apt's status lines (APT::Status-Fd) become one progress line per 10 %;
# the rest of its output goes to the log.
say "apt-get install (downloading and installing; this takes a minute or more)"
progress() {
  local last=-10 kind pkg pct desc n
  while IFS=: read -r kind pkg pct desc; do
    case "$kind" in dlstatus) kind="downloading" ;; pmstatus) kind="installing" ;; *) continue ;; esac
    n=${pct%%.*}
    [ -n "$n" ] || continue
    if [ "$kind" != "${last_kind:-}" ]; then last=-10; last_kind="$kind"; fi
    if [ "$n" -ge $((last + 10)) ]; then
      last=$((n / 10 * 10))
      printf 'deps:   %s %3d%%  %s\n' "$kind" "$n" "$desc"
    fi
  done
}
set +e
{ apt-get install -y -q -o APT::Status-Fd=3 -o Dpkg::Use-Pty=0 --no-install-recommends \
    "${missing[@]}" 3>&1 1>>"$log" 2>&1; echo "$?" > "$before.rc"; } | progress
set -e
rc="$(cat "$before.rc" 2>/dev/null || echo 1)"; rm -f "$before.rc"
[ "$rc" = 0 ] || die "apt-get install failed (exit $rc)"

# What this run added, and the services among it: disable them for the next
# boot. systemctl works on the unit files without a running systemd (also in a
# chroot); init scripts are disabled with update-rc.d as well.
new=()
while read -r p; do new+=("$p"); done < <(installed | comm -13 "$before" -)
units=() scripts=()
for p in "${new[@]}"; do
  while read -r f; do
    case "$f" in
      /lib/systemd/system/*.service | /lib/systemd/system/*.socket | /lib/systemd/system/*.timer | \
      /lib/systemd/system/*.path | /usr/lib/systemd/system/*.service | \
      /usr/lib/systemd/system/*.socket | /usr/lib/systemd/system/*.timer | \
      /usr/lib/systemd/system/*.path)
        case "${f##*/}" in *@.*) ;; *) units+=("${f##*/}") ;; esac ;;
      /etc/init.d/*) scripts+=("${f##*/}") ;;
    esac
  done < <(dpkg-query -L "$p" 2>/dev/null)
done
disabled=()
for u in ${units[@]+"${units[@]}"}; do
  # --root: the unit files only, whether or not systemd runs; static and alias
  # units cannot be enabled and are left alone
  [ "$(systemctl --root=/ is-enabled "$u" 2>/dev/null)" = enabled ] || continue
  systemctl --root=/ --quiet disable "$u" >>"$log" 2>&1 || true
  [ "$(systemctl --root=/ is-enabled "$u" 2>/dev/null)" != enabled ] || die "could not disable $u"
  disabled+=("$u")
done
for s in ${scripts[@]+"${scripts[@]}"}; do
  if ls /etc/rc[2-5].d/S??"$s" >/dev/null 2>&1; then
    update-rc.d "$s" disable >>"$log" 2>&1 || true
    ls /etc/rc[2-5].d/S??"$s" >/dev/null 2>&1 && die "could not disable /etc/init.d/$s"
    case " ${disabled[*]-} " in *" $s.service "*) ;; *) disabled+=("/etc/init.d/$s") ;; esac
  fi
done
say "installed ${#new[@]} packages in $(( $(date +%s) - start ))s"
if [ ${#disabled[@]} -gt 0 ]; then
  say "disabled for the next boot (nothing was started): ${disabled[*]}"
else
  say "no service left enabled for the next boot"
fi
