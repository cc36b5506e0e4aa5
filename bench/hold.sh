#!/usr/bin/env bash
# README "Memory per pending payment": how much the switch's resident memory grows per payment
# waiting on its bank, with N (default 10,000) held at once.
#   bench/hold.sh [N] [SETTLE_SECONDS]      from a checkout; PYTHON= picks the interpreter, TREE= another checkout
# For each of "with idempotency keys" and "without" (bin/bench --no-keys): a fresh banksim that holds
# every answer (--delay 900), a fresh kswitch (SQLite journal, logs at info, metrics on) whose
# connector waits request_timeout = 900 s and takes max_in_flight = 20000, [api] max_in_flight =
# 20000; then bin/bench --hold N --pid PID --settle S --warm W prints the growth per pending payment:
# "cold" from the switch's start over all W + N held, "warm" over the N held after the first W
# (HOLD_WARM=W, default 1000; HOLD_WARM=0 for the cold figure over N alone, as trees before --warm did).
# HOLD_KEYS=with|without runs one of the two. Every feature is on, as the targets ask: the fee plans and
# risk rules of bench/perf-template.toml; HOLD_FEATURES=none leaves them out. HOLD_WRITER= sets [journal]
# writer (default auto); the journal's writer process, when there is one, holds no payment, but its growth is
# printed too (bin/bench --writer-pid), cold and warm as the switch's, and the two together. For a closer
# look: HOLD_WRAPPER=script.py runs kswitch as `python script.py bin/kswitch run ...` (e.g. one that starts
# tracemalloc and dumps a snapshot on SIGUSR1), HOLD_BEFORE / HOLD_AFTER commands get the switch's pid before sending and after settling.
set -euo pipefail
n=${1:-10000}; settle=${2:-20}; warm=${HOLD_WARM:-1000}; features=${HOLD_FEATURES:-all}
own=$(cd "$(dirname "$0")/.." && pwd)
here=$(cd "${TREE:-$own}" && pwd)  # TREE=/other/checkout measures that tree
py=${PYTHON:-$own/.tox/py3/bin/python}
tmp=$(mktemp -d)
pids=()
# Bytecode first, as an installed switch has it: a process that compiles its modules as it starts (a fresh
# checkout, PYTHONDONTWRITEBYTECODE) starts megabytes bigger, which moved the writer's cold figure by a tenth of a KB.
"$py" -m compileall -q "$here/switch" "$here/connectors" > /dev/null || true
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

run() {  # $1: label, $2...: extra bin/bench flags
  local label=$1; shift
  local dir=$tmp/$label bank api admin
  mkdir -p "$dir"; bank=$(free_port); api=$(free_port); admin=$(free_port)
  cat > "$dir/kswitch.toml" <<TOML
[switch]
state_dir = "$dir"
log_format = "json"
log_level = "info"

[api]
listen = ["tcp:$api:interface=127.0.0.1"]
max_in_flight = 20000

[admin]
listen = "tcp:$admin:interface=127.0.0.1"

[journal]
backend = "sqlite"
sqlite_path = "journal.sqlite3"
dev_keys = true
writer = "${HOLD_WRITER:-auto}"

[[clients]]
name = "bench"
token = "bench-token-not-for-production"
merchants = ["M1"]

[[merchants]]
id = "M1"
name = "BENCH SHOP"
city = "PHNOM PENH"
country = "KH"
mcc = "5999"
acquirer_merchant_id = "MERCHANT0000001"
stores = [{ id = "S1", terminal_id = "STORE001" }]

[[connectors]]
name = "bank"
dialect = "iso87ascii"
framing = "2b"
acquirer_id = "123456"
request_timeout = 900.0
max_in_flight = 20000
sign_on = false
tls = false
links = [{ host = "127.0.0.1", port = $bank }]

[[routes]]
name = "all"
bin_prefixes = ["4", "5", "2"]
connectors = ["bank"]
TOML
  # every feature on, as the issue's targets ask: perf_ratio's template's fee plans and risk rules (its str.format braces undone)
  [ "$features" = none ] || sed -n '/^# ---- every feature on/,$p' "$own/bench/perf-template.toml" \
      | sed 's/{{/{/g; s/}}/}/g' >> "$dir/kswitch.toml"
  (cd "$here" && exec "$py" bin/banksim --listen "127.0.0.1:$bank" --dialect iso87ascii --framing 2b --plain \
      --delay 900 --log-level warning) > "$dir/banksim.log" 2>&1 &
  pids+=($!); local banksim=$!
  wait_port "$bank" || { echo "banksim did not listen"; cat "$dir/banksim.log"; exit 1; }
  (cd "$here" && exec "$py" ${HOLD_WRAPPER:-} bin/kswitch run --config "$dir/kswitch.toml") > "$dir/kswitch.log" 2>&1 &
  pids+=($!); local sw=$!
  wait_port "$api" || { echo "kswitch did not listen"; tail -c 2000 "$dir/kswitch.log"; exit 1; }
  sleep 2  # the link to the bank comes up
  echo "== $label$([ "$features" = none ] && echo ", no fee plans or risk rules" || echo ", fee plans and risk rules on")"
  ${HOLD_BEFORE:-true} "$sw"
  local writer; writer=$(pgrep -P "$sw" -f switch.journal.writerproc | head -n 1 || true)
  (cd "$here" && "$py" bin/bench --connect "127.0.0.1:$api" --client bench --token bench-token-not-for-production \
      --merchant M1 --store S1 --hold "$n" --pid "$sw" ${writer:+--writer-pid "$writer"} --settle "$settle" \
      $([ "$warm" = 0 ] || echo --warm "$warm") "$@")
  ${HOLD_AFTER:-true} "$sw"
  kill -KILL "$sw" "$banksim" 2>/dev/null || true; wait "$sw" "$banksim" 2>/dev/null || true  # payments held: no graceful stop
}

[ "${HOLD_KEYS:-both}" = without ] || run "with idempotency keys"
[ "${HOLD_KEYS:-both}" = with ] || run "without idempotency keys" --no-keys
