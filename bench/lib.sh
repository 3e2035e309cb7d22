# Shared by the bench scripts: logging, Debian packages on demand, free ports, waiting for one.
# Source it after `cd` to the repository root.

log() { echo "$*" >&2; }

# need_packages PKG...: installs those missing (callers pass only what they found missing).
need_packages() {
  if (($#)); then
    log "installing $*"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; log "port $1 never opened"; exit 1; }
