"""Faults for bench/chaos.sh, and its table.

  chaos.py wait CUTOVER FILE                 until 4 instances are healthy
  chaos.py kill9 CUTOVER FILE SECONDS        kill -9 a random instance every 2 s
  chaos.py stop CUTOVER FILE SECONDS         SIGSTOP one instance, watch, SIGCONT at the end
  chaos.py slow CUTOVER FILE SECONDS         SIGUSR1 to one demo-app: +500 ms on every answer
  chaos.py breaks CUTOVER FILE SECONDS       SIGUSR2 to one demo-app: answers broken off mid-body
  chaos.py report NAME RATE PROBE FAULT      one JSON line
  chaos.py table JSON RESULTS                the table (or the JSON lines as one array)
"""

import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time

DESIRED = 4


def status(cutover, file):
    out = subprocess.run(
        [cutover, "status", "--json", "-f", file], capture_output=True, text=True, timeout=5
    ).stdout
    try:
        return json.loads(out)
    except ValueError:
        return {}


def counts(s):
    inst = s.get("instances", [])
    alive = [i for i in inst if i["state"] in ("healthy", "starting")]
    healthy = [i for i in inst if i["state"] == "healthy"]
    return inst, alive, healthy


def wait(cutover, file, deadline=60):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        _, _, healthy = counts(status(cutover, file))
        if len(healthy) == DESIRED:
            return
        time.sleep(0.1)
    sys.exit("the stack never had 4 healthy instances")


def watch(cutover, file, until, events):
    """Polls status every 50 ms until `until`; fills in, for each event (a death), when the
    group was back at 4 launched and at 4 healthy, and sums the time with nothing healthy."""
    empty = 0.0
    last = time.monotonic()
    while time.monotonic() < until:
        s = status(cutover, file)
        now = time.monotonic()
        _, alive, healthy = counts(s)
        if not healthy:
            empty += now - last
        last = now
        for e in events:
            ids = {i["id"] for i in alive}
            if e["victim"] in ids:
                continue
            if "launched_s" not in e and len(alive) >= DESIRED:
                e["launched_s"] = now - e["at"]
            if "healthy_s" not in e and len(healthy) >= DESIRED and e["victim"] not in {i["id"] for i in healthy}:
                e["healthy_s"] = now - e["at"]
        time.sleep(0.05)
    return empty


def kill9(cutover, file, seconds):
    end = time.monotonic() + seconds
    events = []
    empty = 0.0
    while time.monotonic() < end:
        _, alive, _ = counts(status(cutover, file))
        if alive:
            v = random.choice(alive)
            try:
                os.kill(v["pid"], signal.SIGKILL)
                events.append({"victim": v["id"], "at": time.monotonic()})
            except ProcessLookupError:
                pass
        empty += watch(cutover, file, min(end, time.monotonic() + 2.0), events)
    tail = watch(cutover, file, time.monotonic() + 3.0, events)
    return {"deaths": events, "empty_s": empty + tail}


def stop(cutover, file, seconds):
    time.sleep(2)
    _, _, healthy = counts(status(cutover, file))
    v = healthy[0]
    os.kill(v["pid"], signal.SIGSTOP)
    at = time.monotonic()
    ejected = None
    end = at + seconds - 2
    while time.monotonic() < end:
        s = status(cutover, file)
        targets = [t for g in s.get("groups", []) for t in g.get("targets", [])]
        mine = [t for t in targets if t["target"].endswith(f":{v['port']}")]
        if ejected is None and (not mine or all(t["state"] != "healthy" or t.get("ejected") for t in mine)):
            ejected = time.monotonic() - at
        time.sleep(0.05)
    try:
        os.kill(v["pid"], signal.SIGCONT)
    except ProcessLookupError:
        pass
    return {"deaths": [], "empty_s": 0.0, "ejected_s": ejected}


def requests_by_target(cutover, file):
    s = status(cutover, file)
    return {t["target"]: t.get("requests", 0) for g in s.get("groups", []) for t in g.get("targets", [])}


def switch(sig):
    def fault(cutover, file, seconds):
        """Switches a run-time fault on in one instance for the rest of the run; the share of
        requests it was sent meanwhile."""
        time.sleep(2)
        _, _, healthy = counts(status(cutover, file))
        v = healthy[0]
        target = f"127.0.0.1:{v['port']}"
        before = requests_by_target(cutover, file)
        os.kill(v["pid"], sig)
        time.sleep(max(seconds - 3, 1))
        after = requests_by_target(cutover, file)
        sent = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        total = sum(sent.values()) or 1
        return {"deaths": [], "empty_s": 0.0, "victim_share": round(sent.get(target, 0) / total, 4)}
    return fault


def report(name, rate, probe_file, fault_file):
    with open(probe_file) as f:
        p = json.load(f)
    with open(fault_file) as f:
        fault = json.load(f)
    deaths = fault["deaths"]
    launched = [d["launched_s"] for d in deaths if "launched_s" in d]
    healthy = [d["healthy_s"] for d in deaths if "healthy_s" in d]
    row = {
        "row": name,
        "rate": int(rate),
        "requests": p["requests"],
        "failed": p["failed"],
        "failed_infra": p["failed_infra"],
        "errors": p["errors"],
        "statuses": {k: v for k, v in p["statuses"].items() if not k.startswith("2")},
        "p99_ms": p["latency_ms"].get("p99"),
        "deaths": len(deaths),
        "launched_median_s": round(statistics.median(launched), 2) if launched else None,
        "launched_max_s": round(max(launched), 2) if launched else None,
        "healthy_median_s": round(statistics.median(healthy), 2) if healthy else None,
        "healthy_max_s": round(max(healthy), 2) if healthy else None,
        "never_back": len(deaths) - len(healthy),
        "no_healthy_s": round(fault["empty_s"], 2),
        "ejected_s": fault.get("ejected_s"),
        "victim_share": fault.get("victim_share"),
    }
    print(json.dumps(row))


def table(as_json, results):
    with open(results) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if as_json == "1":
        print(json.dumps(rows, indent=2))
        return
    print("| row | requests | failed | by kind | deaths | back at 4 launched (median/max s) | back at 4 healthy (median/max s) | no healthy instance (s) | hung target out after (s) | share to the faulty one | p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        kinds = ", ".join(f"{k} {v}" for k, v in {**r["errors"], **r["statuses"]}.items()) or "none"
        fmt = lambda a, b: "-" if a is None else f"{a} / {b}"
        ej = "-" if r["ejected_s"] is None else f"{r['ejected_s']:.2f}"
        share = "-" if r.get("victim_share") is None else f"{100 * r['victim_share']:.1f}%"
        print(
            f"| {r['row']} | {r['requests']} | {r['failed']} | {kinds} | {r['deaths']} | "
            f"{fmt(r['launched_median_s'], r['launched_max_s'])} | {fmt(r['healthy_median_s'], r['healthy_max_s'])} | "
            f"{r['no_healthy_s']} | {ej} | {share} | {r['p99_ms']} |"
        )


def main():
    cmd = sys.argv[1]
    if cmd == "wait":
        wait(sys.argv[2], sys.argv[3])
    elif cmd in ("kill9", "stop", "slow", "breaks"):
        fn = {"kill9": kill9, "stop": stop, "slow": switch(signal.SIGUSR1), "breaks": switch(signal.SIGUSR2)}[cmd]
        print(json.dumps(fn(sys.argv[2], sys.argv[3], float(sys.argv[4]))))
    elif cmd == "report":
        report(*sys.argv[2:6])
    elif cmd == "table":
        table(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
