#!/usr/bin/env bash
# Download throughput and memory: a 1 GiB file served by nginx over loopback, fetched by
# `cutover fetch` (plain, and verifying `#sha256=`) and by curl in alternating rounds, into tmpfs
# (/dev/shm) so the disk is not what is measured. cutover fsyncs and renames; curl does neither.
# Prints median throughput and peak RSS for each, and the ratio; --json prints one object.
# Usage: bench/fetch.sh [--json] [--rounds N] [--size-mib M]
set -euo pipefail
cd "$(dirname "$0")/.."

json=0 rounds=5 mib=1024
while [ $# -gt 0 ]; do
  case "$1" in
    --json) json=1 ;;
    --rounds) rounds=$2; shift ;;
    --size-mib) mib=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
. bench/lib.sh

need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v curl >/dev/null || need+=(curl)
[ -x /usr/bin/time ] || need+=(time)
need_packages "${need[@]}"
PATH=$PATH:/usr/sbin

cargo build --release --bins -q
work=$(mktemp -d)
shm=$(mktemp -d -p /dev/shm)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work" "$shm"; }
trap cleanup EXIT


mkdir -p "$shm/www" "$work/nginx"
# nginx workers drop to an unprivileged user: let them read the file.
chmod 755 "$shm" "$shm/www"
log "making a ${mib} MiB file"
head -c "$((mib * 1024 * 1024))" /dev/urandom >"$shm/www/big.bin"
chmod 644 "$shm/www/big.bin"
sum=$(sha256sum "$shm/www/big.bin" | cut -d' ' -f1)
port=$(free_port)
cat >"$work/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 64; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $work/nginx;
  proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx;
  scgi_temp_path $work/nginx;
  server { listen 127.0.0.1:$port; root $shm/www; }
}
CONF
nginx -c "$work/nginx.conf" & pids+=($!)
wait_port "$port"
url="http://127.0.0.1:$port/big.bin"

# One timed run: prints "seconds peak_rss_kib".
timed() { /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }; cat "$work/time"; }

cutover_s=() cutover_rss=() sha_s=() sha_rss=() curl_s=() curl_rss=()
for r in $(seq "$rounds"); do
  rm -rf "$shm/out"; mkdir -p "$shm/out"
  read -r s m < <(timed target/release/cutover fetch -u "$url" -o "$shm/out" --json)
  cutover_s+=("$s"); cutover_rss+=("$m")
  rm -rf "$shm/out"; mkdir -p "$shm/out"
  read -r s m < <(timed target/release/cutover fetch -u "$url#sha256=$sum" -o "$shm/out" --json)
  sha_s+=("$s"); sha_rss+=("$m")
  rm -rf "$shm/out"; mkdir -p "$shm/out"
  read -r s m < <(timed curl -sSf -o "$shm/out/big.bin" "$url")
  curl_s+=("$s"); curl_rss+=("$m")
  log "round $r: cutover ${cutover_s[-1]}s ${cutover_rss[-1]} KiB, with sha256 ${sha_s[-1]}s ${sha_rss[-1]} KiB, curl ${curl_s[-1]}s ${curl_rss[-1]} KiB"
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mbs() { awk -v m="$mib" -v s="$1" 'BEGIN {printf "%.0f", m * 1.048576 / s}'; }
cs=$(median "${cutover_s[@]}"); hs=$(median "${sha_s[@]}"); us=$(median "${curl_s[@]}")
cm=$(median "${cutover_rss[@]}"); hm=$(median "${sha_rss[@]}"); um=$(median "${curl_rss[@]}")
ratio=$(awk -v a="$us" -v b="$cs" 'BEGIN {printf "%.2f", a / b}')
ratio_sha=$(awk -v a="$us" -v b="$hs" 'BEGIN {printf "%.2f", a / b}')
if [ "$json" = 1 ]; then
  printf '{"size_mib":%s,"rounds":%s,"cutover":{"seconds":%s,"mb_s":%s,"peak_rss_kib":%s},"cutover_sha256":{"seconds":%s,"mb_s":%s,"peak_rss_kib":%s},"curl":{"seconds":%s,"mb_s":%s,"peak_rss_kib":%s},"throughput_ratio":%s,"throughput_ratio_sha256":%s}\n' \
    "$mib" "$rounds" "$cs" "$(mbs "$cs")" "$cm" "$hs" "$(mbs "$hs")" "$hm" "$us" "$(mbs "$us")" "$um" "$ratio" "$ratio_sha"
else
  echo "medians over $rounds rounds, ${mib} MiB over loopback into tmpfs:"
  echo "  cutover fetch           ${cs}s  $(mbs "$cs") MB/s  peak RSS $((cm / 1024)) MiB  (fsynced, renamed)"
  echo "  cutover fetch #sha256=  ${hs}s  $(mbs "$hs") MB/s  peak RSS $((hm / 1024)) MiB  (and verified)"
  echo "  curl                    ${us}s  $(mbs "$us") MB/s  peak RSS $((um / 1024)) MiB"
  echo "  throughput cutover/curl: ${ratio} plain, ${ratio_sha} verifying sha256"
fi
