#!/usr/bin/env bash
# Faults under load, on one host: 4 demo-app instances behind cutover (and, for comparison,
# behind nginx and HAProxy with a shell loop restarting the instances, as systemd would), the
# probe in open loop, failures counted by kind, WebSocket and SSE clients' ends counted by kind.
# Each row starts a fresh stack; the rows are described in bench/chaos.py. Every row also runs
# as ROW@restart: the controller killed with SIGKILL halfway and started again.
# Goals (issue "faults"): 0 failed requests in every row, the group back at 4 within 2 s of each
# death, a hung instance out of rotation within 1 s, long-lived connections closed cleanly.
# Deaths of instances healthy for under 2 s are "young" and counted apart: their slot backs off
# by design (0.5 s, doubling per young death in a row), as a crash-looping release's would.
# Usage: bench/chaos.sh [--duration 60] [--rows kill9,stop@restart] [--through cutover,nginx,haproxy] [--json]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
rows=""
for r in kill9 stop slow slow-ewma breaks roll-ll kill9-ll all; do rows+="$r,$r@restart,"; done
args=(--duration 60 --rows "${rows%,}" --through cutover,nginx,haproxy)
json=()
while [ $# -gt 0 ]; do
  case "$1" in
    --duration|--rows|--through) args+=("$1" "$2"); shift ;;
    --json) json=(--json) ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
need_packages "${need[@]}"
cargo build --release -q -p cutover -p demo-app
exec python3 bench/chaos.py run --bin "$PWD/target/release" "${args[@]}" "${json[@]}"
