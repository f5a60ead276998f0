#!/usr/bin/env bash
# Installs everything submitd's build, demo and test suite need on Debian 12.
# Idempotent: packages already present are skipped quickly.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

pkgs=(
  build-essential autoconf automake libtool pkg-config
  libuv1-dev libgnutls28-dev gnutls-bin default-libmysqlclient-dev libsystemd-dev
  clang libclang-rt-14-dev
  python3 swaks libnet-ssleay-perl curl openssl msmtp
  dovecot-core dovecot-mysql mariadb-server fail2ban
  postfix postfix-mysql haproxy
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  # Services pulled in by these packages must not start on the system's ports:
  # the project starts its own private instances.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
