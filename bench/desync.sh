#!/usr/bin/env bash
# Sends the request-smuggling cases of the desync suite, raw, to cutover, nginx and HAProxy in
# front of one recording target, in the same run, and prints what each client got and what
# reached the target (docs/security.md quotes the table). Everything on 127.0.0.1; ~30 s.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v haproxy >/dev/null || missing+=(haproxy)
need_packages "${missing[@]}"

cargo build -q -p cutover --bin cutover
bin=${CUTOVER_BIN:-target/debug/cutover}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

target=$(free_port); p_cut=$(free_port); p_nginx=$(free_port); p_ha=$(free_port); admin=$(free_port)

cat >"$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.err;
events {}
http {
  access_log off;
  upstream t { server 127.0.0.1:$target; keepalive 8; }
  server {
    listen 127.0.0.1:$p_nginx;
    location / { proxy_pass http://t; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
nginx -c "$work/nginx.conf" -g 'daemon off;' & pids+=($!)

cat >"$work/haproxy.cfg" <<CONF
global
  maxconn 256
defaults
  mode http
  timeout connect 2s
  timeout client 5s
  timeout server 5s
frontend f
  bind 127.0.0.1:$p_ha
  default_backend b
backend b
  server t 127.0.0.1:$target
CONF
haproxy -f "$work/haproxy.cfg" & pids+=($!)

cat >"$work/cutover.toml" <<CONF
targets = ["127.0.0.1:$target"]
[service]
name = "desync"
[listener]
bind = "127.0.0.1:$p_cut"
[admin]
bind = "127.0.0.1:$admin"
[health]
interval = "500ms"
timeout = "400ms"
CONF
"$bin" up -f "$work/cutover.toml" --data-dir "$work/data" >"$work/cutover.log" 2>&1 & pids+=($!)

wait_port "$p_nginx"; wait_port "$p_ha"; wait_port "$p_cut"
echo "nginx $(nginx -v 2>&1 | sed 's/.*\///'), HAProxy $(haproxy -v | head -1 | awk '{print $3}'), cutover $("$bin" --version | awk '{print $2}')"
python3 bench/desync.py "$target" cutover="$p_cut" nginx="$p_nginx" haproxy="$p_ha"
