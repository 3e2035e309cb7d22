#!/usr/bin/env bash
# The probe's own throughput: closed-loop requests/s against demo-app, beside wrk in the same run.
# Usage: bench/probe.sh [seconds-per-run] [runs]   (defaults: 5 3). Prints medians and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
runs=${2:-3}
conc=32
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
cargo build --release --bins -q
out=$(mktemp)
taskset -c 0 target/release/demo-app --port 0 >"$out" 2>/dev/null &
app=$!
trap 'kill $app 2>/dev/null; rm -f "$out"' EXIT
for _ in $(seq 200); do addr=$(sed -n 's/^listening on //p' "$out"); [ -n "$addr" ] && break; sleep 0.05; done
url="http://$addr/"
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
probe_rps=(); wrk_rps=()
for i in $(seq "$runs"); do
  p=$(taskset -c 1 target/release/cutover probe "$url" --concurrency $conc --duration "${secs}s" --json -q | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["rps"]))')
  w=$(taskset -c 1 wrk -t1 -c$conc -d"${secs}s" "$url" | awk '/Requests\/sec/ {print int($2)}')
  echo "run $i: cutover probe ${p} req/s, wrk ${w} req/s" >&2
  probe_rps+=("$p"); wrk_rps+=("$w")
done
pm=$(printf '%s\n' "${probe_rps[@]}" | median)
wm=$(printf '%s\n' "${wrk_rps[@]}" | median)
echo "median over $runs runs of ${secs}s, $conc connections, server on core 0, client on core 1:"
echo "  cutover probe  $pm req/s"
echo "  wrk            $wm req/s"
awk -v p="$pm" -v w="$wm" 'BEGIN {printf "  ratio probe/wrk %.2f\n", p / w}'
