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
set -Eeuo pipefail
export DEBIAN_FRONTEND=noninteractive

pkgs=(
  build-essential autoconf automake libtool pkg-config
  libuv1-dev libgnutls28-dev gnutls-bin default-libmysqlclient-dev libsystemd-dev
  libdb-dev # hash:/btree: tables, the files postmap writes (src/lookup/table_db.c)
  clang libclang-rt-14-dev clang-format # clang-format: t/proto/06-layout.py
  python3 swaks libnet-ssleay-perl curl openssl msmtp
  dovecot-core dovecot-mysql mariadb-server fail2ban
  postfix postfix-mysql haproxy
  sasl2-bin # saslauthd, saslpasswd2: t/proto/71-saslauthd.py
  postfwd # a real policy daemon for check_policy_service (t/proto/56-policy-service.py)
  python3-dkim libmail-dkim-perl opendkim # DKIM verifiers (t/proto/61-dkim-lib.py, 62-dkim.py)
  libc-ares-dev dnsmasq-base # src/lookup/dns.c; a private DNS server: t/lib/dnsmasq.py
  systemd # systemd-socket-activate: the socket-activation test on machines without systemd
  libhiredis-dev redis-server # limit_store = redis (t/proto/57-limits-redis.py)
  prometheus # promtool checks the /metrics exposition (t/proto/65-metrics.py)
)

say() { printf 'deps: %s\n' "$*"; }
trap 'echo "deps: error: \"$BASH_COMMAND\" failed (exit $?, line $LINENO)" >&2' ERR
die() { printf 'deps: error: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" != 0 ]; then
  die "must run as root (it installs Debian packages with apt-get)"
fi
command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1 ||
  die "apt-get/dpkg-query not found: scripts/deps.sh is for Debian 12 (bookworm)"

installed() { # prints the names of all installed packages, one a line
  dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' 2>/dev/null | awk '$1 == "ii" {print $2}' | sort -u
}

# What is enabled for the next boot, one a line: systemd's enablement links
# (units, template instances such as getty@tty1, sockets, timers, targets),
# "alias:NAME" for unit aliases, "sysv:NAME" for init scripts' start links.
enabled_now() {
  local f
  for f in /etc/systemd/system/*.wants/* /etc/systemd/system/*.requires/* \
    /etc/systemd/system/*.upholds/*; do
    [ -L "$f" ] && printf '%s\n' "${f##*/}"
  done
  for f in /etc/systemd/system/*; do
    [ -L "$f" ] && [ "$(readlink "$f")" != /dev/null ] || continue
    case "${f##*/}" in default.target | ctrl-alt-del.target) ;; *) printf 'alias:%s\n' "${f##*/}" ;; esac
  done
  for f in /etc/rc[2-5].d/S[0-9][0-9]*; do
    [ -e "$f" ] || [ -L "$f" ] && printf 'sysv:%s\n' "${f##*/S[0-9][0-9]}"
  done
  return 0
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
  rm -f "$before" "$before.enabled"
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
enabled_before="$before.enabled"
enabled_now | sort -u > "$enabled_before"

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

# What the installation enabled for the next boot (enabled_now, before and
# after) is disabled again; systemctl --root works on the files alone, with or
# without a running systemd (a chroot, a container).
new=()
while read -r p; do new+=("$p"); done < <(installed | comm -13 "$before" -)
disabled=()
while read -r e; do
  case "$e" in
    sysv:*)
      update-rc.d "${e#sysv:}" disable >>"$log" 2>&1 || true ;;
    alias:*)
      # an alias (mysql.service -> mariadb.service) goes with the unit it names
      t="$(readlink "/etc/systemd/system/${e#alias:}" || true)"
      [ -z "$t" ] || systemctl --root=/ --quiet disable "${t##*/}" >>"$log" 2>&1 || true
      [ -L "/etc/systemd/system/${e#alias:}" ] && rm -f "/etc/systemd/system/${e#alias:}"
      continue ;;
    *)
      systemctl --root=/ --quiet disable "$e" >>"$log" 2>&1 || true ;;
  esac
  disabled+=("${e/#sysv:/\/etc\/init.d\/}")
done < <(enabled_now | sort -u | comm -13 "$enabled_before" -)
left="$(enabled_now | sort -u | comm -13 "$enabled_before" - | tr '\n' ' ')"
[ -z "$left" ] || die "could not disable for the next boot: $left"
say "installed ${#new[@]} packages in $(( $(date +%s) - start ))s"
if [ ${#disabled[@]} -gt 0 ]; then
  say "disabled for the next boot (nothing was started): ${disabled[*]}"
else
  say "no service left enabled for the next boot"
fi
