#!/usr/bin/env bash
# Load balancer throughput and latency: one demo-app backend, then wrk (keep-alive) against the
# backend direct, cutover, nginx and HAProxy, each with two workers/threads and upstream
# keep-alive, in alternating rounds whose order rotates (so that none always runs first, or
# always right after the backend alone). Then latency at equal load: the probe in open loop at a
# fixed rate against each, in alternating rounds too (closed-loop p99 rises with the throughput
# a proxy reaches, so it alone does not compare latency). Prints medians; --json prints them as
# one object. Usage: bench/proxy.sh [--json] [--rounds N] [--seconds S] [--connections C] [--rate R]
set -euo pipefail
cd "$(dirname "$0")/.."

json=0 rounds=5 secs=5 conns=64 rate=10000
while [ $# -gt 0 ]; do
  case "$1" in
    --json) json=1 ;;
    --rounds) rounds=$2; shift ;;
    --seconds) secs=$2; shift ;;
    --connections) conns=$2; shift ;;
    --rate) rate=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
. bench/lib.sh

need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
need_packages "${need[@]}"
PATH=$PATH:/usr/sbin

cargo build --release --bins -q
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT


backend=$(free_port); p_cutover=$(free_port); p_nginx=$(free_port); p_haproxy=$(free_port)

target/release/demo-app --port "$backend" --version bench >/dev/null 2>&1 & pids+=($!)
wait_port "$backend"

cat >"$work/cutover.toml" <<TOML
targets = ["127.0.0.1:$backend"]
[service]
name = "bench"
[listener]
bind = "127.0.0.1:$p_cutover"
workers = 2
[admin]
bind = "127.0.0.1:0"
[health]
interval = "5s"
timeout = "1s"
healthy_threshold = 1
TOML
TOKIO_WORKER_THREADS=2 RUST_LOG=warn target/release/cutover up -f "$work/cutover.toml" --data-dir "$work/cutover" >/dev/null 2>"$work/cutover.log" & pids+=($!)
cutover_pid=$!

mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<CONF
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  upstream app { server 127.0.0.1:$backend; keepalive 128; }
  server {
    listen 127.0.0.1:$p_nginx;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
CONF
nginx -c "$work/nginx.conf" -g 'daemon off;' & pids+=($!)
nginx_pid=$!

cat >"$work/haproxy.cfg" <<CONF
global
  nbthread 2
  maxconn 8192
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option forwardfor
  http-reuse always
frontend fe
  bind 127.0.0.1:$p_haproxy
  default_backend app
backend app
  server s1 127.0.0.1:$backend
CONF
haproxy -f "$work/haproxy.cfg" -db >/dev/null 2>&1 & pids+=($!)
haproxy_pid=$!

wait_port "$p_cutover"; wait_port "$p_nginx"; wait_port "$p_haproxy"
# cutover routes once its first health check passes (healthy_threshold = 1).
for _ in $(seq 200); do curl -fs "http://127.0.0.1:$p_cutover/" >/dev/null 2>&1 && break; sleep 0.05; done

declare -A port=([direct]=$backend [cutover]=$p_cutover [nginx]=$p_nginx [haproxy]=$p_haproxy)
# CPU per request is far steadier than throughput on a shared machine: the proxy's user+system
# time over a round (its process and, for nginx, its workers), divided by the requests served.
declare -A proc=([direct]=${pids[0]} [cutover]=$cutover_pid [nginx]=$nginx_pid [haproxy]=$haproxy_pid)
cpu_ticks() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1"); do
    total=$((total + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
hz=$(getconf CLK_TCK)
names=(direct cutover nginx haproxy)
to_ms() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); print v/1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v); print v } else if (v ~ /s$/) { sub(/s$/,"",v); print v*1000 } else print v }'; }
for name in "${names[@]}"; do : >"$work/$name.rps"; : >"$work/$name.p50"; : >"$work/$name.p99"; : >"$work/$name.cpu"; : >"$work/$name.op50"; : >"$work/$name.op99"; done
for name in "${names[@]}"; do wrk -t2 -c"$conns" -d1s "http://127.0.0.1:${port[$name]}/" >/dev/null; done  # warm up
# Round r runs the proxies starting from the r-th, wrapping round.
in_turn() { local r=$1 i; for i in "${!names[@]}"; do echo "${names[$(((i + r) % ${#names[@]}))]}"; done; }
for r in $(seq "$rounds"); do
  for name in $(in_turn "$r"); do
    before=$(cpu_ticks "${proc[$name]}")
    out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency "http://127.0.0.1:${port[$name]}/")
    after=$(cpu_ticks "${proc[$name]}")
    served=$(echo "$out" | awk '/requests in/ {print $1}')
    awk -v t=$((after - before)) -v hz="$hz" -v n="$served" 'BEGIN { printf "%.2f\n", t * 1e6 / hz / n }' >>"$work/$name.cpu"
    if echo "$out" | grep -q "Non-2xx\|Socket errors"; then log "$name round $r: errors: $(echo "$out" | grep -E 'Non-2xx|Socket errors')"; fi
    echo "$out" | awk '/Requests\/sec/ {print $2}' >>"$work/$name.rps"
    echo "$out" | awk '$1=="50%" {print $2}' | to_ms >>"$work/$name.p50"
    echo "$out" | awk '$1=="99%" {print $2}' | to_ms >>"$work/$name.p99"
    log "round $r $name: $(tail -1 "$work/$name.rps") req/s, p50 $(tail -1 "$work/$name.p50") ms, p99 $(tail -1 "$work/$name.p99") ms, $(tail -1 "$work/$name.cpu") us CPU/request"
  done
done
for r in $(seq "$rounds"); do
  for name in $(in_turn "$r"); do
    out=$(target/release/cutover probe "http://127.0.0.1:${port[$name]}/" --rate "$rate" --duration "${secs}s" --json -q || true)
    echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["latency_ms"]["p50"])' >>"$work/$name.op50"
    echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["latency_ms"]["p99"])' >>"$work/$name.op99"
    failed=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["failed"])')
    [ "$failed" = 0 ] || log "$name open-loop round $r: $failed requests failed"
    log "open loop at $rate req/s, round $r $name: p50 $(tail -1 "$work/$name.op50") ms, p99 $(tail -1 "$work/$name.op99") ms"
  done
done
median() { sort -g "$1" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
if [ "$json" = 1 ]; then
  sep=""
  printf '{'
  for name in "${names[@]}"; do
    printf '%s"%s": {"rps": %s, "p50_ms": %s, "p99_ms": %s, "cpu_us_per_request": %s, "open_loop_rate": %s, "open_loop_p50_ms": %s, "open_loop_p99_ms": %s}' "$sep" "$name" "$(median "$work/$name.rps")" "$(median "$work/$name.p50")" "$(median "$work/$name.p99")" "$(median "$work/$name.cpu")" "$rate" "$(median "$work/$name.op50")" "$(median "$work/$name.op99")"
    sep=", "
  done
  printf '}\n'
else
  echo "medians of $rounds rounds, ${secs}s each, wrk -t2 -c$conns, 2 workers per proxy, one demo-app backend:"
  printf '%-8s %12s %10s %10s %14s %14s %12s %12s\n' proxy req/s p50_ms p99_ms "vs nginx rps" "CPU us/req" "@rate p50" "@rate p99"
  nginx_rps=$(median "$work/nginx.rps")
  for name in "${names[@]}"; do
    rps=$(median "$work/$name.rps")
    printf '%-8s %12s %10s %10s %14s %14s %12s %12s\n' "$name" "$rps" "$(median "$work/$name.p50")" "$(median "$work/$name.p99")" "$(awk -v a="$rps" -v b="$nginx_rps" 'BEGIN {printf "%.2f", a/b}')" "$(median "$work/$name.cpu")" "$(median "$work/$name.op50")" "$(median "$work/$name.op99")"
  done
  echo "(@rate: the probe in open loop at $rate req/s, latency in ms from each request's scheduled send time)"
  # Rounds are paired (each runs every proxy once), so a count of rounds won says how steady a
  # difference between medians is on a noisy machine.
  for other in nginx haproxy; do
    rps_won=$(paste "$work/cutover.rps" "$work/$other.rps" | awk '$1 >= $2' | wc -l)
    p99_won=$(paste "$work/cutover.p99" "$work/$other.p99" | awk '$1 <= $2' | wc -l)
    echo "cutover against $other, round by round: req/s at or above in $rps_won of $rounds, p99 at or below in $p99_won of $rounds"
  done
fi
