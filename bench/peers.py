#!/usr/bin/env python3
"""Tables and ratios for bench/peers.sh (stdlib only).

  peers.py presence LOG          per-run figures of one `presence bench` output, as JSON lines
  peers.py sustained FILE RATE   exit 0 if a Mosquitto tput result sustained RATE, 1 if not,
                                 2 if the load generator itself fell short of RATE
  peers.py report DIR            the side-by-side tables from everything peers.sh left in DIR

`presence bench` has no machine-readable output: it prints one `run N: Figures { … }` line per
run (Rust's Debug format) and then a table of medians. The per-run lines are parsed (so min, max
and median are computed here the same way for both peers); the table is the fallback.
"""
import json
import math
import os
import re
import sys

FIELD = re.compile(r"(\w+): (-?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|NaN|inf))")
RUN = re.compile(r"^run (\d+): Figures \{(.*)\}\s*$")
# Fallback: the printed table's labels (median column only).
TABLE = {
    "memory per idle device": "bytes_per_device",
    "server CPU per change": "cpu_us_per_change",
    "ping → stream p50": "p50_ms",
    "ping → stream p99": "p99_ms",
    "changes delivered to the stream": "delivered_ratio",
    "drop → all offline": "drop_ms",
    "highest sustained rate": "max_rate",
}
# Figures peers.sh needs from every run.
NEEDED = ("bytes_per_device", "cpu_us_per_change", "p50_ms", "p99_ms", "delivered_ratio", "drop_ms")


def parse_presence(path):
    runs, table = [], {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = RUN.match(line.strip())
            if m:
                runs.append({k: float(v) for k, v in FIELD.findall(m.group(2))})
                continue
            for label, key in TABLE.items():
                if line.startswith(label):
                    nums = re.findall(r"-?\d+(?:\.\d+)?|NaN", line[len(label):].split(")", 1)[-1])
                    if nums:
                        table[key] = float(nums[0])
    if not runs and table:
        runs = [table]  # medians only
    if not runs or any(k not in runs[0] for k in NEEDED):
        raise ValueError(f"cannot find presence bench figures in {path} "
                         "(did it fail, or has its output format changed?)")
    return runs


def presence_runs(path):
    """The report's view: no figures (a dash in the table) rather than no report."""
    try:
        return parse_presence(path)
    except (OSError, ValueError) as e:
        print(f"peers.py: {e}", file=sys.stderr)
        return []


def sustained(path, rate):
    """Same bar as presence bench's ramp: ≥ 95 % delivered and p99 < 1 s."""
    with open(path) as f:
        r = json.loads(f.read().strip().splitlines()[-1])
    if r["send_s"] > 0 and r["sent"] / r["send_s"] < 0.95 * rate:
        return 2
    ok = r["received"] >= 0.95 * r["sent"] and r.get("latency_ms", {}).get("p99", math.inf) < 1000
    return 0 if ok else 1


# --------------------------------------------------------------------------
def load_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def stats(values):
    v = sorted(x for x in values if x is not None and math.isfinite(x))
    if not v:
        return None
    return v[len(v) // 2], v[0], v[-1]  # median as presence bench takes it


def fmt(x):
    if x is None:
        return "—"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}" if abs(x) >= 0.1 else f"{x:.3f}"


def cell(s):
    if s is None:
        return "—"
    med, lo, hi = s
    return fmt(med) if fmt(lo) == fmt(hi) else f"{fmt(med)} ({fmt(lo)}–{fmt(hi)})"


def ratio(a, b):
    if a is None or b is None or b[0] == 0:
        return "—"
    return f"{a[0] / b[0]:.2f}×"


def report(d):
    meta = json.load(open(os.path.join(d, "meta.json")))
    n, rates, drops = meta["devices"], meta["rates"], meta["drops"]
    rows = []  # (figure, presence stats, mosquitto stats)

    first = presence_runs(os.path.join(d, f"presence-rate-{rates[0]}.log"))
    idle = load_jsonl(os.path.join(d, "mosquitto-idle.jsonl"))
    rows.append((f"memory per idle device/client, {n:,} connected (B)",
                 stats([r["bytes_per_device"] for r in first]),
                 stats([r.get("server_rss_per_conn_B") for r in idle])))
    for rate in rates:
        pr = presence_runs(os.path.join(d, f"presence-rate-{rate}.log"))
        mq = load_jsonl(os.path.join(d, f"mosquitto-rate-{rate}.jsonl"))
        lat = lambda k: [r.get("latency_ms", {}).get(k) for r in mq]
        rows += [
            (f"server CPU per change/message at {rate:,}/s (µs)",
             stats([r["cpu_us_per_change"] for r in pr]),
             stats([r.get("server_cpu_us_per_msg") for r in mq])),
            (f"latency p50 at {rate:,}/s (ms)", stats([r["p50_ms"] for r in pr]), stats(lat("p50"))),
            (f"latency p99 at {rate:,}/s (ms)", stats([r["p99_ms"] for r in pr]), stats(lat("p99"))),
            (f"delivered at {rate:,}/s (fraction)", stats([r["delivered_ratio"] for r in pr]),
             stats([r["received"] / r["sent"] for r in mq if r.get("sent")])),
        ]
    for k in drops:
        log = meta["drop_logs"][str(k)]
        pr = presence_runs(os.path.join(d, log))
        mq = load_jsonl(os.path.join(d, f"mosquitto-drop-{k}.jsonl"))
        total = max(n, k)
        rows.append((f"drop {k:,} of {total:,} → all seen offline (ms)",
                     stats([r["drop_ms"] for r in pr]),
                     stats([r.get("storm", {}).get("all_seen_after_ms") for r in mq])))
    if meta.get("saturation"):
        pr = first
        mq = load_jsonl(os.path.join(d, "mosquitto-ramp.jsonl"))
        rows.append(("highest sustained rate, doubling steps (changes/s)",
                     stats([r.get("max_rate") for r in pr]),
                     stats([r["max_rate"] for r in mq])))
        un = load_jsonl(os.path.join(d, "mosquitto-unthrottled.jsonl"))
        if un:
            rows.append(("delivered msgs/s, generator unthrottled (Mosquitto only)", None,
                         stats([r.get("delivered_per_s") for r in un])))

    w = max(len(r[0]) for r in rows)
    print()
    print(f"Presence vs Mosquitto — {n:,} devices/clients, rates {', '.join(map(str, rates))}/s "
          f"for {meta['duration']}, drops {', '.join(map(str, drops))}, {meta['runs']} run(s); "
          "median (min–max)")
    print()
    print(f"| {'figure':<{w}} | Presence | Mosquitto | Presence / Mosquitto |")
    print(f"|{'-' * (w + 2)}|---|---|---|")
    for name, p, m in rows:
        print(f"| {name:<{w}} | {cell(p)} | {cell(m)} | {ratio(p, m)} |")
    notes = []
    ramp = load_jsonl(os.path.join(d, "mosquitto-ramp.jsonl"))
    if any(r.get("generator_limited") for r in ramp):
        notes.append("Mosquitto's highest rate is where the Python load generator stopped "
                     "keeping up (a lower bound for Mosquitto itself).")
    for name, p, m in rows:
        if (p is None or m is None) and "only" not in name:
            notes.append(f"no figure for '{name}' on one side: see the logs in {d}")
    for note in notes:
        print(f"note: {note}")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "presence":
        try:
            runs = parse_presence(sys.argv[2])
        except (OSError, ValueError) as e:
            sys.exit(f"peers.py: {e}")
        for r in runs:
            print(json.dumps(r))
    elif len(sys.argv) == 4 and sys.argv[1] == "sustained":
        sys.exit(sustained(sys.argv[2], float(sys.argv[3])))
    elif len(sys.argv) == 3 and sys.argv[1] == "report":
        report(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
