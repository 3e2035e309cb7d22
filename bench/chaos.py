"""Faults under load for bench/chaos.sh: the stacks, the faults, the rows and the tables.

  chaos.py run --bin DIR --duration S --rows R --through T [--json]

A row is one fault, on a fresh stack of 4 demo-app instances, under the probe in open loop and,
for the long-lived rows, 20 WebSocket and 20 SSE clients (bench/longlived.py):
  kill9      kill -9 of a random live instance every 2 s, 1,000 req/s
  stop       SIGSTOP of one instance (hung), 500 req/s
  slow       one instance +500 ms on every answer (SIGUSR1 to demo-app), 500 req/s
  slow-ewma  the same with balance = "peak-ewma" (cutover only)
  breaks     one instance breaking every answer off mid-body (SIGUSR2 to demo-app), 500 req/s
  roll-ll    a rolling deploy v1 -> v2 with the long-lived clients, 1,000 req/s (cutover only)
  kill9-ll   kill9 with the long-lived clients
  all        every fault in one run, 1,000 req/s, with the long-lived clients: from 2 s kill -9
             every 2 s and one instance slow; at 20% of the run one breaking its answers; at a
             third (cutover) a rolling deploy; at 45% one stopped (hung)
A row named NAME@restart (cutover only) also kills the controller (`cutover up`) with SIGKILL
halfway and starts it again a second later, as systemd's Restart=always would.

Through: `cutover` (its own fleet, controller and data plane), or `nginx` / `haproxy` in front
of 4 demo-app instances that a shell loop restarts 100 ms after they die (as systemd would),
configured as an operator tuning them for this would (bench/chaos.sh writes the files).
"""

import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

DESIRED = 4
# cutover's settle window (crates/deploy/src/restarts.rs `Backoff::settle`): an instance killed
# sooner after turning healthy died young, and its slot waits before the next launch.
SETTLE_S = 2.0
HERE = os.path.dirname(os.path.abspath(__file__))


def http_ok(port, path="/health", timeout=0.2):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


class Cutover:
    """cutover up: its fleet, its controller, its data plane."""

    TOML = """[service]
name = "chaos"
[release]
version = "v1"
command = "demo-app --port {{port}} --version {{version}}"
stop_timeout = "2s"
[group]
desired = 4
[health]
interval = "250ms"
timeout = "200ms"
healthy_threshold = 2
unhealthy_threshold = 2
[deploy]
drain_timeout = "6s"
[listener]
bind = "127.0.0.1:0"
balance = "{balance}"
[admin]
bind = "127.0.0.1:0"
"""

    def __init__(self, bindir, work, balance="round-robin"):
        self.bin = os.path.join(bindir, "cutover")
        self.work = work
        self.file = os.path.join(work, "cutover.toml")
        with open(self.file, "w") as f:
            f.write(self.TOML.format(balance=balance))
        self.up = None
        self.start_controller()
        self.deploy_started = None

    def start_controller(self):
        out = open(os.path.join(self.work, "up.out"), "w")
        err = open(os.path.join(self.work, "up.err"), "a")
        self.up = subprocess.Popen([self.bin, "up", "-f", self.file], stdout=out, stderr=err,
                                   env={**os.environ, "RUST_LOG": "warn"})
        end = time.monotonic() + 20
        while time.monotonic() < end:
            with open(os.path.join(self.work, "up.out")) as f:
                for line in f:
                    if line.startswith("listening on "):
                        self.addr = line.split()[-1]
                        return
            time.sleep(0.05)
        sys.exit("cutover up never listened: " + open(os.path.join(self.work, "up.err")).read())

    def status(self):
        try:
            out = subprocess.run([self.bin, "status", "--json", "-f", self.file],
                                 capture_output=True, text=True, timeout=5).stdout
            return json.loads(out)
        except (ValueError, subprocess.TimeoutExpired):
            return None

    def instances(self):
        s = self.status()
        if s is None:
            return None
        return [{"id": i["id"], "pid": i["pid"], "port": i["port"], "state": i["state"]}
                for i in s.get("instances", []) if i.get("pid")]

    def targets(self):
        s = self.status()
        if s is None:
            return None
        return {t["target"]: {"requests": t.get("requests", 0),
                              "out": t["state"] != "healthy" or bool(t.get("ejected"))}
                for g in s.get("groups", []) for t in g.get("targets", [])}

    def restart_controller(self):
        self.up.kill()
        self.up.wait()
        time.sleep(1)
        self.start_controller()

    def deploy(self, version):
        subprocess.run([self.bin, "deploy", version, "--no-wait", "-f", self.file],
                       capture_output=True, timeout=30)
        self.deploy_started = version

    def deploy_outcome(self, wait=60):
        """How the deploy ended, and its drains, from `cutover history`."""
        if not self.deploy_started:
            return None
        end = time.monotonic() + wait
        while time.monotonic() < end:
            try:
                out = subprocess.run([self.bin, "history", "--json", "-f", self.file],
                                     capture_output=True, text=True, timeout=5).stdout
                d = json.loads(out)["deployments"][0]
            except (ValueError, IndexError, KeyError, subprocess.TimeoutExpired):
                d = None
            if d and d.get("finished_at"):
                return {"progress": d["progress"]["progress"], "reason": d["progress"].get("reason"),
                        "seconds": round(d["duration_ms"] / 1000, 1), "drains": d.get("drains")}
            time.sleep(0.5)
        return {"progress": "unfinished", "seconds": None, "drains": None}

    def stop(self):
        # `cutover stop` asks the controller to stop; it drains and stops every instance, then
        # exits. Killed before that, it would leave them running.
        subprocess.run([self.bin, "stop", "-f", self.file], capture_output=True, timeout=60)
        try:
            self.up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.up.kill()
            self.up.wait()
            subprocess.run([self.bin, "stop", "-f", self.file], capture_output=True, timeout=60)


class Shell:
    """4 demo-app instances, each restarted by a shell loop 100 ms after it dies, behind nginx
    or HAProxy (bench/chaos.sh wrote the configuration into `work`)."""

    def __init__(self, bindir, work, proxy, ports, front):
        self.work = work
        self.proxy = proxy
        self.ports = ports
        self.addr = f"127.0.0.1:{front}"
        self.deploy_started = None
        open(os.path.join(work, "run"), "w").close()
        self.loops = []
        for p in ports:
            loop = (f'while [ -e {work}/run ]; do {bindir}/demo-app --port {p} --version v1 '
                    f'>/dev/null 2>&1 & echo $! > {work}/slot{p}.pid; wait $!; sleep 0.1; done')
            self.loops.append(subprocess.Popen(["bash", "-c", loop], start_new_session=True,
                                               stderr=subprocess.DEVNULL))
        cmd = (["nginx", "-c", f"{work}/nginx.conf", "-g", "daemon off;"] if proxy == "nginx"
               else ["haproxy", "-f", f"{work}/haproxy.cfg", "-db"])
        self.front = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(f"{work}/{proxy}.err", "w"),
                                      start_new_session=True)
        end = time.monotonic() + 20
        while not http_ok(front, "/"):
            if time.monotonic() > end:
                sys.exit(f"{proxy} never answered: " + open(f"{work}/{proxy}.err").read())
            time.sleep(0.05)

    def instances(self):
        out = []
        for p in self.ports:
            try:
                pid = int(open(f"{self.work}/slot{p}.pid").read())
            except (OSError, ValueError):
                continue
            if alive(pid):
                out.append({"id": pid, "pid": pid, "port": p,
                            "state": "healthy" if http_ok(p, timeout=0.1) else "starting"})
        return out

    def targets(self):
        if self.proxy == "haproxy":
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(1)
                    s.connect(f"{self.work}/haproxy.sock")
                    s.sendall(b"show stat\n")
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
            except OSError:
                return None
            lines = data.decode().splitlines()
            cols = lines[0].lstrip("# ").split(",")
            out = {}
            for line in lines[1:]:
                row = dict(zip(cols, line.split(",")))
                if row.get("pxname") == "app" and row.get("svname", "").startswith("s"):
                    port = self.ports[int(row["svname"][1:])]
                    out[f"127.0.0.1:{port}"] = {"requests": int(row.get("stot") or 0),
                                                 "out": not row.get("status", "").startswith("UP")}
            return out
        # nginx: the access log names the first upstream of every request; nginx has no view
        # of whether it has put a server aside, so `out` is unknown.
        counts = {f"127.0.0.1:{p}": 0 for p in self.ports}
        try:
            with open(f"{self.work}/access.log") as f:
                for line in f:
                    first = line.split(",")[0].strip()
                    if first in counts:
                        counts[first] += 1
        except OSError:
            return None
        return {k: {"requests": v, "out": None} for k, v in counts.items()}

    def stop(self):
        try:
            os.unlink(os.path.join(self.work, "run"))
        except OSError:
            pass
        for i in self.instances():
            try:
                os.kill(i["pid"], signal.SIGCONT)
                os.kill(i["pid"], signal.SIGKILL)
            except OSError:
                pass
        for p in self.loops + [self.front]:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            p.wait()


def wait_healthy(stack, deadline=60):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        inst = stack.instances() or []
        if sum(i["state"] == "healthy" for i in inst) == DESIRED:
            return
        time.sleep(0.1)
    sys.exit("the stack never had 4 healthy instances")


class Watch:
    """Polls the stack every 50 ms; for each death, when the group was back at 4 launched and
    at 4 healthy; the time with nothing healthy. Samples the stack could not give (a controller
    that is down) count for nothing. A death is young when its instance had been seen healthy
    for less than SETTLE_S (or never): its slot backs off by design, so it is counted apart."""

    def __init__(self, stack):
        self.stack = stack
        self.deaths = []
        self.empty = 0.0
        self.healthy_since = {}
        self.lock = threading.Lock()

    def killed(self, victim):
        with self.lock:
            now = time.monotonic()
            since = self.healthy_since.get(victim)
            young = since is None or now - since < SETTLE_S
            self.deaths.append({"victim": victim, "at": now, "young": young})

    def run(self, until):
        last = time.monotonic()
        while time.monotonic() < until:
            inst = self.stack.instances()
            now = time.monotonic()
            if inst is None:
                last = now
                time.sleep(0.05)
                continue
            live = [i for i in inst if i["state"] in ("healthy", "starting")]
            healthy = [i for i in inst if i["state"] == "healthy"]
            if not healthy:
                self.empty += now - last
            last = now
            ids = {i["id"] for i in live}
            with self.lock:
                for i in healthy:
                    self.healthy_since.setdefault(i["id"], now)
                for e in self.deaths:
                    if e["victim"] in ids:
                        continue
                    if "launched_s" not in e and len(live) >= DESIRED:
                        e["launched_s"] = now - e["at"]
                    if "healthy_s" not in e and len(healthy) >= DESIRED:
                        e["healthy_s"] = now - e["at"]
            time.sleep(0.05)


def kill_loop(stack, watch, until):
    while time.monotonic() < until:
        inst = stack.instances()
        live = [i for i in inst or [] if i["state"] in ("healthy", "starting")]
        if live:
            v = random.choice(live)
            try:
                os.kill(v["pid"], signal.SIGKILL)
                watch.killed(v["id"])
            except ProcessLookupError:
                pass
        time.sleep(max(0.0, min(2.0, until - time.monotonic())))


def pick_healthy(stack, avoid=()):
    inst = stack.instances() or []
    for i in inst:
        if i["state"] == "healthy" and i["pid"] not in avoid:
            return i
    sys.exit("no healthy instance to fault")


def share(before, after, target):
    if before is None or after is None:
        return None
    sent = {k: after[k]["requests"] - before.get(k, {"requests": 0})["requests"] for k in after}
    total = sum(sent.values()) or 1
    return round(sent.get(target, 0) / total, 4)


def row(spec, stack, duration):
    """Runs one row's faults on `stack` for `duration` seconds; what happened."""
    name, restart = spec.split("@")[0], spec.endswith("@restart")
    rate = 500 if name in ("stop", "slow", "slow-ewma", "breaks") else 1000
    start = time.monotonic()
    end = start + duration
    probe_out = os.path.join(stack.work, "probe.json")
    probe = subprocess.Popen(
        [os.path.join(BIN, "cutover"), "probe", f"http://{stack.addr}/", "--rate", str(rate),
         "--duration", f"{duration}s", "--connections", "1024", "--json", "-q"], stdout=open(probe_out, "w"))
    clients = None
    if name in ("roll-ll", "kill9-ll", "all"):
        clients = subprocess.Popen([sys.executable, os.path.join(HERE, "longlived.py"), stack.addr,
                                    str(duration)], stdout=subprocess.PIPE, text=True)
    watch = Watch(stack)
    watcher = threading.Thread(target=watch.run, args=(end + 3,))
    watcher.start()
    threads = []
    if restart:
        def restart_at():
            time.sleep(max(0.0, start + duration / 2 - time.monotonic()))
            stack.restart_controller()
        threads.append(threading.Thread(target=restart_at))
    out = {"rate": rate}
    # When each fault begins, in seconds from the start. "all" staggers them so that at any
    # moment at least one instance is well: four instances with three broken and the fourth
    # killed is an outage no balancer can hide, and not what it is meant to show.
    at = {"slow": 2, "breaks": 2, "stop": 2, "kill": 2, "deploy": 3}
    if name == "all":
        at = {"slow": 2, "kill": 2, "breaks": 0.2 * duration, "deploy": duration / 3,
              "stop": 0.45 * duration}

    def after(t):
        time.sleep(max(0.0, start + t - time.monotonic()))

    faulty = []
    stopped = None
    if name in ("slow", "slow-ewma", "breaks"):
        after(2)
        before = stack.targets()
        v = pick_healthy(stack)
        os.kill(v["pid"], signal.SIGUSR2 if name == "breaks" else signal.SIGUSR1)
        victim = f"127.0.0.1:{v['port']}"
    if name == "all":
        def switch_at(t, sig):
            after(t)
            v = pick_healthy(stack, faulty)
            faulty.append(v["pid"])
            os.kill(v["pid"], sig)
        threads.append(threading.Thread(target=switch_at, args=(at["slow"], signal.SIGUSR1)))
        threads.append(threading.Thread(target=switch_at, args=(at["breaks"], signal.SIGUSR2)))
    if name in ("stop", "all"):
        def stop_and_watch():
            nonlocal stopped
            after(at["stop"])
            v = pick_healthy(stack, faulty)
            faulty.append(v["pid"])
            os.kill(v["pid"], signal.SIGSTOP)
            stopped, stopped_at = v, time.monotonic()
            target = f"127.0.0.1:{v['port']}"
            while time.monotonic() < end:
                t = stack.targets()
                if t is not None:
                    mine = t.get(target)
                    if mine is None or mine["out"]:
                        out["ejected_s"] = round(time.monotonic() - stopped_at, 2)
                        return
                    if mine["out"] is None:
                        return
                time.sleep(0.05)
        threads.append(threading.Thread(target=stop_and_watch))
    if name in ("kill9", "kill9-ll", "all"):
        def kills():
            after(at["kill"])
            kill_loop(stack, watch, end)
        threads.append(threading.Thread(target=kills))
    if name in ("roll-ll", "all") and isinstance(stack, Cutover):
        def deploy_at():
            after(at["deploy"])
            stack.deploy("v2")
        threads.append(threading.Thread(target=deploy_at))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if name in ("slow", "slow-ewma", "breaks"):
        time.sleep(max(0.0, end - 1 - time.monotonic()))
        out["victim_share"] = share(before, stack.targets(), victim)
    probe.wait()
    watcher.join()
    if stopped is not None:
        try:
            os.kill(stopped["pid"], signal.SIGCONT)
        except OSError:
            pass
    if clients is not None:
        out["long_lived"] = json.loads(clients.communicate()[0] or "{}")
    if isinstance(stack, Cutover):
        out["deploy"] = stack.deploy_outcome()
    with open(probe_out) as f:
        out["probe"] = json.load(f)
    out["deaths"] = watch.deaths
    out["empty_s"] = watch.empty
    return out


def summary(spec, through, r):
    p = r["probe"]
    deaths = r["deaths"]
    served = [d for d in deaths if not d.get("young")]
    young = [d for d in deaths if d.get("young")]
    launched = [d["launched_s"] for d in served if "launched_s" in d]
    healthy = [d["healthy_s"] for d in served if "healthy_s" in d]
    young_launched = [d["launched_s"] for d in young if "launched_s" in d]
    rnd = lambda xs, f: round(f(xs), 2) if xs else None
    return {
        "row": spec, "through": through, "rate": r["rate"],
        "requests": p["requests"], "failed": p["failed"], "failed_infra": p["failed_infra"],
        "errors": p["errors"],
        "statuses": {k: v for k, v in p["statuses"].items() if not k.startswith("2")},
        "p99_ms": p["latency_ms"].get("p99"),
        "deaths": len(deaths), "young_deaths": len(young),
        "young_launched_max_s": rnd(young_launched, max),
        "launched_median_s": rnd(launched, statistics.median), "launched_max_s": rnd(launched, max),
        "healthy_median_s": rnd(healthy, statistics.median), "healthy_max_s": rnd(healthy, max),
        "never_back": len([d for d in deaths if "healthy_s" not in d]),
        "no_healthy_s": round(r["empty_s"], 2),
        "ejected_s": r.get("ejected_s"),
        "victim_share": r.get("victim_share"),
        "long_lived": r.get("long_lived"),
        "deploy": r.get("deploy"),
    }


def table(rows):
    print("| through | row | requests | failed | by kind | deaths (young) | back at 4 launched (median/max s) "
          "| back at 4 healthy (median/max s) | after a young death, back at 4 launched (max s) "
          "| no healthy instance (s) | hung target out after (s) "
          "| share to the faulty one | deploy | p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        kinds = ", ".join(f"{k} {v}" for k, v in {**r["errors"], **r["statuses"]}.items()) or "none"
        fmt = lambda a, b: "-" if a is None else f"{a} / {b}"
        ej = "-" if r["ejected_s"] is None else f"{r['ejected_s']:.2f}"
        share = "-" if r.get("victim_share") is None else f"{100 * r['victim_share']:.1f}%"
        d = r.get("deploy")
        dep = "-" if not d else f"{d['progress']} in {d['seconds']} s"
        young = "-" if r["young_launched_max_s"] is None else r["young_launched_max_s"]
        print(f"| {r['through']} | {r['row']} | {r['requests']} | {r['failed']} | {kinds} | "
              f"{r['deaths']} ({r['young_deaths']}) | "
              f"{fmt(r['launched_median_s'], r['launched_max_s'])} | "
              f"{fmt(r['healthy_median_s'], r['healthy_max_s'])} | {young} | {r['no_healthy_s']} | {ej} | {share} | "
              f"{dep} | {r['p99_ms']} |")
    ll = [r for r in rows if r.get("long_lived")]
    if not ll:
        return
    print()
    print("| through | row | WebSocket: opened / closed with a close frame (codes) / FIN without one / reset / stalled / refused "
          "| SSE: opened / clean end / FIN mid-stream / reset / stalled / refused | drains: instances, long-lived closed cleanly, cut |")
    print("|---|---|---|---|---|")
    for r in ll:
        cells = []
        for kind in ("ws", "sse"):
            s = r["long_lived"].get(kind, {})
            codes = ",".join(f"{c}×{n}" for c, n in s.get("close_codes", {}).items())
            clean = f"{s.get('clean', 0)}" + (f" ({codes})" if codes else "")
            cells.append(f"{s.get('opened', 0)} / {clean} / {s.get('eof', 0)} / {s.get('reset', 0)} / "
                         f"{s.get('stalled', 0)} / {s.get('refused', 0)}")
        d = (r.get("deploy") or {}).get("drains")
        drains = "-" if not d else f"{d['instances']}, {d['closed']}, {d['cut']}"
        print(f"| {r['through']} | {r['row']} | {cells[0]} | {cells[1]} | {drains} |")


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def peer_config(proxy, work, ports, front):
    """The configuration an operator would write for this: passive (nginx) or active (HAProxy)
    health, retries of failed and timed-out requests elsewhere, a 1 s read timeout so a hung
    instance's requests move on, WebSockets passed through."""
    if proxy == "nginx":
        servers = "\n".join(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in ports)
        conf = f"""worker_processes 2;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  log_format up '$upstream_addr';
  access_log {work}/access.log up;
  client_body_temp_path {work}; proxy_temp_path {work}; fastcgi_temp_path {work};
  uwsgi_temp_path {work}; scgi_temp_path {work};
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
  upstream app {{
{servers}
    keepalive 64;
  }}
  server {{
    listen {front};
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_connect_timeout 250ms;
      proxy_read_timeout 1s;
      proxy_buffering off;
      proxy_next_upstream error timeout invalid_header http_502 http_503 http_504;
      proxy_next_upstream_tries 3;
    }}
  }}
}}
"""
        with open(f"{work}/nginx.conf", "w") as f:
            f.write(conf)
    else:
        servers = "\n".join(f"  server s{n} 127.0.0.1:{p} check" for n, p in enumerate(ports))
        conf = f"""global
  maxconn 8192
  stats socket {work}/haproxy.sock mode 600 level admin
defaults
  mode http
  timeout connect 250ms
  timeout client 30s
  timeout server 1s
  timeout tunnel 1h
  retries 3
  option redispatch 1
  retry-on all-retryable-errors
  option http-server-close
frontend web
  bind 127.0.0.1:{front}
  default_backend app
backend app
  balance roundrobin
  option httpchk GET /health
  default-server inter 250ms fall 2 rise 2
{servers}
"""
        with open(f"{work}/haproxy.cfg", "w") as f:
            f.write(conf)


CUTOVER_ONLY = ("slow-ewma", "roll-ll")


def run(args):
    global BIN
    opts = {"--duration": "60", "--rows": "", "--through": "cutover", "--bin": ""}
    as_json = False
    while args:
        if args[0] == "--json":
            as_json = True
            args = args[1:]
            continue
        opts[args[0]] = args[1]
        args = args[2:]
    BIN = opts["--bin"]
    os.environ["PATH"] = BIN + os.pathsep + os.environ["PATH"] + os.pathsep + "/usr/sbin"
    duration = float(opts["--duration"])
    results = []
    import tempfile
    for through in opts["--through"].split(","):
        for spec in opts["--rows"].split(","):
            name = spec.split("@")[0]
            if through != "cutover" and (name in CUTOVER_ONLY or "@" in spec):
                continue
            work = tempfile.mkdtemp(prefix="chaos-")
            print(f"chaos: {through} {spec}", file=sys.stderr, flush=True)
            if through == "cutover":
                stack = Cutover(BIN, work, "peak-ewma" if name == "slow-ewma" else "round-robin")
            else:
                ports = free_ports(DESIRED + 1)
                peer_config(through, work, ports[:DESIRED], ports[DESIRED])
                stack = Shell(BIN, work, through, ports[:DESIRED], ports[DESIRED])
            try:
                wait_healthy(stack)
                r = row(spec, stack, duration)
            finally:
                stack.stop()
                subprocess.run(["pkill", "-CONT", "-f", "demo-app --port"], capture_output=True)
            s = summary(spec, through, r)
            print(json.dumps(s), file=sys.stderr, flush=True)
            results.append(s)
            if os.environ.get("CHAOS_KEEP"):
                with open(os.path.join(work, "deaths.json"), "w") as f:
                    json.dump({"row": spec, "deaths": r["deaths"]}, f, indent=1)
                print(f"chaos: kept {work} (deaths.json: each death, monotonic times)", file=sys.stderr)
            else:
                subprocess.run(["rm", "-rf", work])
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        table(results)


BIN = ""

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "run":
        sys.exit(__doc__)
    run(sys.argv[2:])
