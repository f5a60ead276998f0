#!/usr/bin/env bash
# scripts/demo.sh: shows submitd working end to end on loopback.
#   deps -> build -> private self-signed cert -> recording downstream (t/lib/sink.py)
#   -> private auth-only Dovecot with demo users (t/lib/dovecot.py)
#   -> submitd (starttls and tls listeners that require AUTH, a plain trusted one)
#   -> swaks logging in as alice over STARTTLS and over implicit TLS, a wrong
#   password (535), a send without login (530) -> the messages as the downstream
#   stored them.
# Everything lives in a private temp dir and is torn down on exit.
# Env: DEMO_SKIP_DEPS=1, DEMO_SKIP_BUILD=1, BUILD_DIR (default build), DEMO_KEEP=1.
# Nothing needs to be installed first (bash and coreutils, as on a minimal
# Debian 12): the first step installs the rest. A failure names its step.
#
# To extend: add a setup_* function (start a neighbour, append config lines with
# conf_add) and a send_* / show_* step, then call them in main at the bottom.
set -Eeuo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
cd "$top"
build="${BUILD_DIR:-build}"
py="" # python3, found after the deps step installed it
step="start"
trap 'echo "demo: failed in step \"$step\": \"$BASH_COMMAND\" exited $? (line $LINENO)" >&2' ERR

say() { step="$*"; printf '\n\033[1m== %s\033[0m\n' "$*" 2>/dev/null || printf '\n== %s\n' "$*"; }
[ -t 1 ] || say() { step="$*"; printf '\n== %s\n' "$*"; }

pids=()
work=""
dovecot_dir=""
cleanup() {
  local st=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "$dovecot_dir" ]; then
    "$py" t/lib/dovecot.py stop --dir "$dovecot_dir" >/dev/null 2>&1 || true
    if [ "${DEMO_KEEP:-0}" = 1 ]; then echo "kept $dovecot_dir"; else rm -rf "$dovecot_dir"; fi
  fi
  if [ -n "$work" ]; then
    if [ "${DEMO_KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
  fi
  exit "$st"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() { # wait_port PORT [SECONDS]
  local i
  for i in $(seq 1 $(( ${2:-10} * 10 ))); do
    "$py" -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),1)" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

conf_add() { printf '%s\n' "$*" >> "$work/submitd.conf"; }

# ---------------------------------------------------------------- steps
deps() {
  step="deps"
  if [ "${DEMO_SKIP_DEPS:-0}" != 1 ]; then
    say "Installing dependencies (scripts/deps.sh)"
    if [ "$(id -u)" != 0 ]; then
      echo "demo: scripts/deps.sh installs Debian packages and needs root;" >&2
      echo "      run the demo as root, or install them yourself and set DEMO_SKIP_DEPS=1" >&2
      exit 1
    fi
    bash scripts/deps.sh || { echo "demo: scripts/deps.sh failed (see above)" >&2; exit 1; }
  fi
  py=/usr/bin/python3; [ -x "$py" ] || py="$(command -v python3 || true)"
  local t missing=()
  for t in "$py" openssl swaks make; do
    [ -n "$t" ] && command -v "$t" >/dev/null 2>&1 || missing+=("${t:-python3}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "demo: not installed: ${missing[*]} (scripts/deps.sh installs them)" >&2
    exit 1
  fi
}

build() {
  step="build"
  [ "${DEMO_SKIP_BUILD:-0}" = 1 ] && return
  say "Building (scripts/build.sh $build)"
  # a line per phase (autoreconf, configure, make) while the rest goes to the log
  bash scripts/build.sh "$build" 2>&1 | tee "$work/build.log" | grep --line-buffered '^build: ' ||
    { tail -n 60 "$work/build.log"; echo "demo: the build failed (scripts/build.sh $build)" >&2; exit 1; }
}

# Two pairs, as README.md recommends: ECDSA for the clients that can (a third of
# the CPU per new connection), RSA for the ones that cannot.
setup_certs() {
  say "Generating self-signed ECDSA and RSA certificates for mail.test.example"
  local kind
  for kind in ec rsa; do
    openssl req -x509 -newkey "$([ $kind = ec ] && echo ec || echo rsa:2048)" \
      $([ $kind = ec ] && echo "-pkeyopt ec_paramgen_curve:P-256") -nodes -days 1 \
      -keyout "$work/$kind-key.pem" -out "$work/$kind-cert.pem" -subj "/CN=mail.test.example" \
      -addext "subjectAltName=DNS:mail.test.example,DNS:localhost,IP:127.0.0.1" 2>/dev/null
    chmod 600 "$work/$kind-key.pem"
    openssl x509 -in "$work/$kind-cert.pem" -noout -subject -ext subjectAltName | sed 's/^/  /'
  done
}

show_certificates() {
  say "Which certificate a client gets (port $p_tls)"
  local label args
  for label in "a current client:ECDSA+SHA256:RSA-PSS+SHA256" "a client that only does RSA:RSA-PSS+SHA256"; do
    args="${label#*:}"
    printf '  %s (-sigalgs %s): ' "${label%%:*}" "$args"
    openssl s_client -connect "127.0.0.1:$p_tls" -servername mail.test.example -sigalgs "$args" \
      </dev/null 2>/dev/null | grep -m1 '^Peer signature type' || echo "(no handshake)"
  done
}

setup_downstream() {
  say "Starting the recording downstream (t/lib/sink.py) on 127.0.0.1:$sink_port"
  mkdir -p "$work/downstream"
  "$py" t/lib/sink.py --listen "127.0.0.1:$sink_port" --dir "$work/downstream" &
  pids+=($!)
  wait_port "$sink_port" || { echo "downstream did not start"; exit 1; }
}

# A private, auth-only Dovecot (t/lib/dovecot.py): demo users alice@example.com /
# alice-secret, bob@example.com / bob-secret. It needs root (Dovecot drops to its
# own users) and Debian's dovecot-core; without them the demo runs without AUTH.
auth_socket=""
setup_dovecot() {
  say "Starting a private Dovecot (auth only) with demo users"
  if [ "$(id -u)" != 0 ] || ! [ -x /usr/sbin/dovecot ]; then
    echo "  (skipped: needs root and dovecot-core; the listeners stay trusted, no AUTH)"
    return 0
  fi
  # Outside $work (mode 700): Dovecot's auth process runs as user dovecot.
  dovecot_dir="$(mktemp -d /tmp/submitd-demo-dovecot.XXXXXX)"
  local out
  out="$("$py" t/lib/dovecot.py start --dir "$dovecot_dir" --failure-delay 0)" || {
    echo "Dovecot did not start:"; cat "$dovecot_dir"/dovecot.log "$dovecot_dir"/dovecot.stderr 2>/dev/null
    exit 1; }
  auth_socket="$(printf '%s\n' "$out" | sed -n 's/^DOVECOT_AUTH_SOCKET=//p')"
  echo "  auth socket: $auth_socket"
  echo "  users: alice@example.com / alice-secret, bob@example.com / bob-secret"
  echo "  check: $("$py" t/lib/dovecot.py check "$auth_socket" alice@example.com alice-secret)"
}

setup_submitd() {
  say "Starting submitd"
  : > "$work/submitd.conf"
  conf_add "myhostname = mail.test.example"
  if [ -n "$auth_socket" ]; then
    # 587- and 465-style listeners are not trusted: only a login lets mail through.
    conf_add "listen = 127.0.0.1:$p_starttls starttls"
    conf_add "listen = 127.0.0.1:$p_tls tls"
  else
    conf_add "listen = 127.0.0.1:$p_starttls starttls trusted"
    conf_add "listen = 127.0.0.1:$p_tls tls trusted"
  fi
  conf_add "listen = 127.0.0.1:$p_plain plain trusted"
  conf_add "tls_cert_file = $work/ec-cert.pem"
  conf_add "tls_key_file = $work/ec-key.pem"
  conf_add "tls_cert_file = $work/rsa-cert.pem"
  conf_add "tls_key_file = $work/rsa-key.pem"
  conf_add "mynetworks = 127.0.0.0/8, ::1/128"
  conf_add "relayhost = [127.0.0.1]:$sink_port"
  conf_add "workers = 2"
  conf_add "log_level = info"
  if [ -n "$auth_socket" ]; then
    conf_add "dovecot_auth_socket = $auth_socket"
    conf_add "auth_failure_delay = 500ms"
  fi
  # Who may send as whom: a flat texthash: table (a Postfix mysql: file works too).
  printf '%s\n' "# address            owners (logins)" \
    "alice@example.com    alice@example.com" \
    "sales@example.com    alice@example.com, bob@example.com" \
    "bob@example.com      bob@example.com" > "$work/sender-login"
  conf_add "sender_login_maps = texthash:$work/sender-login"
  sed 's/^/  /' "$work/submitd.conf"
  "$build/submitd" -c "$work/submitd.conf" 2> "$work/submitd.log" &
  pids+=($!)
  for p in "$p_starttls" "$p_tls" "$p_plain"; do
    wait_port "$p" || { echo "submitd did not start:"; cat "$work/submitd.log"; exit 1; }
  done
  if [ -n "$auth_socket" ]; then
    # each worker logs its Dovecot handshake ("dovecot auth: ...: connected")
    local i
    for i in $(seq 1 100); do
      [ "$(grep -c 'dovecot auth: .*: connected' "$work/submitd.log")" -ge 2 ] && break
      sleep 0.1
    done
  fi
}

send_swaks() { # send_swaks LABEL PORT SWAKS_ARGS...
  local label="$1" port="$2"; shift 2
  say "Sending a message with swaks: $label (port $port)"
  swaks --server "127.0.0.1:$port" --ehlo demo-client.example \
    --from alice@example.com --to bob@example.net \
    --header "Subject: submitd demo: $label" \
    --body "Hello from the submitd demo ($label)." "$@"
}

login_args=()

send_wrong_password() {
  [ -n "$auth_socket" ] || return 0
  say "A wrong password (port $p_starttls): 535, nothing sent"
  local out
  out="$(swaks --server "127.0.0.1:$p_starttls" --ehlo demo-client.example --tls \
    --from alice@example.com --to bob@example.net \
    -a PLAIN -au alice@example.com -ap not-her-password 2>&1)" && {
    echo "$out"; echo "a wrong password was accepted!"; exit 1; }
  echo "$out"
  echo "$out" | grep -q '535 5\.7\.8' || { echo "expected 535 5.7.8"; exit 1; }
}

send_forged_sender() {
  [ -n "$auth_socket" ] || return 0
  say "alice tries to send as bob: 553 at MAIL FROM, nothing sent"
  local out
  out="$(swaks --server "127.0.0.1:$p_starttls" --ehlo demo-client.example --tls \
    -a PLAIN -au alice@example.com -ap alice-secret \
    --from bob@example.com --to carol@example.net 2>&1)" && {
    echo "$out"; echo "a forged sender was accepted!"; exit 1; }
  echo "$out" | grep -E '(MAIL FROM|553)'
  echo "$out" | grep -q '553 5\.7\.1 <bob@example.com>: Sender address rejected: not owned by user alice@example.com' ||
    { echo "expected 553 5.7.1 ... not owned by user"; exit 1; }
  say "alice keeps the envelope honest but forges From:: 550 at the end of DATA, nothing sent"
  out="$(swaks --server "127.0.0.1:$p_starttls" --ehlo demo-client.example --tls \
    -a PLAIN -au alice@example.com -ap alice-secret \
    --from alice@example.com --to carol@example.net --header "From: Bob <bob@example.com>" 2>&1)" && {
    echo "$out"; echo "a forged From: was accepted!"; exit 1; }
  echo "$out" | grep -E '^<~\*? +5[0-9][0-9] '
  echo "$out" | grep -q '550 5\.7\.1 <bob@example.com>: From: header address rejected' ||
    { echo "expected 550 5.7.1 ... From: header address rejected"; exit 1; }
}

send_without_login() {
  [ -n "$auth_socket" ] || return 0
  say "No login on port $p_starttls: 530, nothing sent"
  local out
  out="$(swaks --server "127.0.0.1:$p_starttls" --ehlo demo-client.example --tls \
    --from alice@example.com --to bob@example.net 2>&1)" && {
    echo "$out"; echo "mail without a login was accepted!"; exit 1; }
  echo "$out" | grep -E '(AUTH|MAIL FROM|530)'
  echo "$out" | grep -q '530 5\.7\.0' || { echo "expected 530 5.7.0"; exit 1; }
}

show_downstream() {
  say "What the downstream stored"
  local f
  for f in "$work"/downstream/*.eml; do
    [ -e "$f" ] || { echo "  (nothing stored!)"; return 1; }
    echo "--- $(basename "$f") envelope: $(tr -d '\n' < "${f%.eml}.json" | sed 's/  */ /g' | cut -c1-300)"
    sed 's/\r$//' "$f"
  done
  local n; n=$(ls "$work"/downstream/*.eml | wc -l)
  echo "--- $n message(s) stored"
  [ "$n" -ge 2 ]
}

show_logs() {
  say "submitd log"
  cat "$work/submitd.log"
}

# ---------------------------------------------------------------- main
work="$(mktemp -d /tmp/submitd-demo.XXXXXX)"
chmod 700 "$work"
deps
build
sink_port=$(free_port); p_starttls=$(free_port); p_tls=$(free_port); p_plain=$(free_port)
setup_certs
setup_downstream
setup_dovecot
setup_submitd
if [ -n "$auth_socket" ]; then
  login_args=(-a PLAIN -au alice@example.com -ap alice-secret)
fi
show_certificates
send_swaks "STARTTLS${auth_socket:+, logged in as alice}" "$p_starttls" --tls ${login_args[@]+"${login_args[@]}"}
send_swaks "implicit TLS${auth_socket:+, logged in as alice}" "$p_tls" --tls-on-connect ${login_args[@]+"${login_args[@]}"}
send_wrong_password
send_forged_sender
send_without_login
sleep 0.3
show_downstream
show_logs
say "Done; tearing down"
