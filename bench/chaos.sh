#!/usr/bin/env bash
# Faults under load, on one host: 4 demo-app instances behind cutover, the probe in open loop,
# failures counted by kind. Each row starts a fresh stack.
#   kill9  kill -9 of a random instance every 2 s for DURATION at 1,000 req/s
#   stop   SIGSTOP of one instance (hung) for DURATION at 500 req/s
#   slow   one instance +500 ms on every answer (SIGUSR1 to demo-app), round robin, 500 req/s
#   slow-ewma  the same with balance = "peak-ewma"
#   breaks one instance breaking every answer off mid-body (SIGUSR2 to demo-app), 500 req/s
# For every death it reports how long the group took to be back at 4 instances (launched) and
# at 4 healthy ones, and how long the group spent with no healthy instance at all.
# Goals (issue "faults"): 0 failed requests, back at size within 2 s of each death.
# Usage: bench/chaos.sh [--duration 60] [--rows kill9,stop] [--json]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
duration=60 rows=kill9,stop,slow,slow-ewma,breaks json=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift ;;
    --rows) rows=$2; shift ;;
    --json) json=1 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
cargo build --release -q -p cutover -p demo-app
bin=$PWD/target/release
export PATH="$bin:$PATH"
results=$(mktemp)
trap 'rm -f "$results"' EXIT

row() { # row NAME RATE FAULT [BALANCE]
  local name=$1 rate=$2 fault=$3 balance=${4:-round-robin} work
  work=$(mktemp -d)
  cat >"$work/cutover.toml" <<TOML
[service]
name = "chaos"
[release]
version = "v1"
command = "demo-app --port {port} --version {version}"
stop_timeout = "2s"
[group]
desired = 4
[health]
interval = "250ms"
timeout = "200ms"
healthy_threshold = 2
unhealthy_threshold = 2
[listener]
bind = "127.0.0.1:0"
balance = "$balance"
[admin]
bind = "127.0.0.1:0"
TOML
  RUST_LOG=warn "$bin/cutover" up -f "$work/cutover.toml" >"$work/up.out" 2>"$work/up.err" &
  local up=$! addr=
  for _ in $(seq 400); do addr=$(sed -n 's/^listening on //p' "$work/up.out"); [ -n "$addr" ] && break; sleep 0.05; done
  [ -n "$addr" ] || { log "cutover up never listened: $(cat "$work/up.err")"; exit 1; }
  python3 bench/chaos.py wait "$bin/cutover" "$work/cutover.toml"
  "$bin/cutover" probe "http://$addr/" --rate "$rate" --duration "${duration}s" --json -q >"$work/probe.json" || true &
  local probe=$!
  python3 bench/chaos.py "$fault" "$bin/cutover" "$work/cutover.toml" "$duration" >"$work/fault.json"
  wait $probe || true
  python3 bench/chaos.py report "$name" "$rate" "$work/probe.json" "$work/fault.json" >>"$results"
  "$bin/cutover" stop -f "$work/cutover.toml" >/dev/null 2>&1 || true
  kill $up 2>/dev/null || true
  wait $up 2>/dev/null || true
  # A stopped instance the fault left behind, if any.
  pkill -CONT -f "demo-app --port" 2>/dev/null || true
  rm -rf "$work"
}

IFS=, read -ra wanted <<<"$rows"
for r in "${wanted[@]}"; do
  case "$r" in
    kill9) row "kill -9 one of 4 every 2 s" 1000 kill9 ;;
    stop) row "SIGSTOP one of 4" 500 stop ;;
    slow) row "one of 4 +500 ms, round robin" 500 slow ;;
    slow-ewma) row "one of 4 +500 ms, peak-ewma" 500 slow peak-ewma ;;
    breaks) row "one of 4 breaks answers off mid-body" 500 breaks ;;
    *) echo "unknown row $r" >&2; exit 2 ;;
  esac
done
python3 bench/chaos.py table "$json" "$results"
