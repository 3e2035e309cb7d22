#!/usr/bin/env bash
# A rolling deploy under load: 4 demo-app instances behind cutover, the probe at a constant
# 2,000 requests/s, v1 -> v2 with max_surge 1. Reports failed requests (goal 0), p99 in steady
# state and during the deploy (goal: during <= 1.5 x steady), and the deploy's duration against
# its lower bound, batches x (start + healthy_threshold x interval) + drain (goal: within 10%).
# Usage: bench/deploy.sh [--json] [--rate R]
set -euo pipefail
cd "$(dirname "$0")/.."
json=0 rate=2000
while [ $# -gt 0 ]; do
  case "$1" in
    --json) json=1 ;;
    --rate) rate=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
cargo build --release -q -p cutover -p demo-app
bin=target/release
work=$(mktemp -d)
interval_ms=500 threshold=2 desired=4
cat >"$work/cutover.toml" <<TOML
[service]
name = "bench"
[release]
version = "v1"
command = "demo-app --port {port} --version {version}"
[group]
desired = $desired
[health]
interval = "${interval_ms}ms"
timeout = "250ms"
healthy_threshold = $threshold
[listener]
bind = "127.0.0.1:0"
[admin]
bind = "127.0.0.1:0"
[deploy]
max_surge = 1
max_unavailable = 0
drain_timeout = "10s"
TOML
RUST_LOG=warn "$bin/cutover" up -f "$work/cutover.toml" >"$work/up.out" 2>"$work/up.err" &
up=$!
trap 'kill $up 2>/dev/null; wait $up 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 200); do addr=$(sed -n 's/^listening on //p' "$work/up.out"); [ -n "$addr" ] && break; sleep 0.05; done
healthy() { "$bin/cutover" status --json -f "$work/cutover.toml" | python3 -c "import json,sys; print(sum(1 for i in json.load(sys.stdin).get('instances',[]) if i['state']=='healthy' and i['version']=='$1'))"; }
for _ in $(seq 600); do [ "$(healthy v1)" = "$desired" ] && break; sleep 0.1; done

# How long one instance takes from exec to listening: the "start" term of the lower bound.
start_ms=$(python3 - "$bin/demo-app" <<'PY'
import subprocess, sys, time, statistics
samples = []
for _ in range(5):
    t = time.monotonic()
    p = subprocess.Popen([sys.argv[1], "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    p.stdout.readline()
    samples.append((time.monotonic() - t) * 1000)
    p.terminate(); p.wait()
print(round(statistics.median(samples), 1))
PY
)

echo "steady state: $rate req/s for 10s" >&2
"$bin/cutover" probe "http://$addr/" --rate "$rate" --duration 10s --json -q >"$work/steady.json"
echo "deploy v1 -> v2 under $rate req/s" >&2
"$bin/cutover" probe "http://$addr/" --rate "$rate" --duration 25s --json -q >"$work/during.json" &
probe=$!
sleep 2
deploy_start=$(date +%s.%N)
"$bin/cutover" deploy v2 -f "$work/cutover.toml" --json >"$work/deploy.json"
deploy_end=$(date +%s.%N)
wait $probe
python3 - "$work" "$json" "$start_ms" "$interval_ms" "$threshold" "$desired" "$deploy_start" "$deploy_end" <<'PY'
import json, sys
work, as_json, start_ms, interval_ms, threshold, desired, d0, d1 = sys.argv[1:]
steady = json.load(open(f"{work}/steady.json"))
during = json.load(open(f"{work}/during.json"))
deploy = json.load(open(f"{work}/deploy.json"))
start_ms, interval_ms, threshold, desired = float(start_ms), float(interval_ms), int(threshold), int(desired)
# The deploy began 2 s into the probe run; the seconds it spans are the "during" window.
first, last = 2, 2 + int(float(d1) - float(d0)) + 1
window = [s for s in during["timeline"] if first <= s["t"] <= last]
p99_during = max((s["p99_ms"] for s in window), default=0.0)
batches = desired  # max_surge 1, max_unavailable 0: one instance at a time
lower_ms = batches * (start_ms + threshold * interval_ms)  # drain of ~1 ms requests is negligible
took = deploy.get("duration_ms") or 0
out = {
    "outcome": deploy["progress"]["progress"],
    "failed": steady["failed"] + during["failed"],
    "failed_infra": steady["failed_infra"] + during["failed_infra"],
    "requests": steady["requests"] + during["requests"],
    "p99_steady_ms": steady["latency_ms"]["p99"],
    "p99_during_ms": p99_during,
    "p99_ratio": round(p99_during / steady["latency_ms"]["p99"], 2) if steady["latency_ms"]["p99"] else None,
    "deploy_ms": took,
    "lower_bound_ms": round(lower_ms),
    "duration_ratio": round(took / lower_ms, 2) if lower_ms else None,
    "instance_start_ms": start_ms,
}
if as_json == "1":
    print(json.dumps(out))
else:
    for k, v in out.items():
        print(f"{k:<18} {v}")
PY
