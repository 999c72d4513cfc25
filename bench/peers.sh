#!/usr/bin/env bash
# Presence and Mosquitto side by side, same load shape, one run: N idle devices/clients,
# R status changes/s to one consumer, a drop of K connections at once. Prints both tables and
# the ratios Presence / Mosquitto. See docs/benchmarks.md ("Against a peer: Mosquitto").
#
#   bench/peers.sh [--devices N] [--rates "R1 R2"] [--drops "K1 K2"] [--runs 3]
#                  [--duration 5s] [--no-saturation] [--quick] [--out DIR]
#
# Env: PRESENCE_BIN (default target/release/presence, built if missing), PEER_BENCH (the MQTT
# load generator, default ../shared/bench/presence_bench.py beside the repo), MOSQUITTO.
# Everything runs on 127.0.0.1; every phase is bounded by `timeout`.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
devices=5000 rates="2000 5000" drops="2000 10000" runs=3 duration=5s saturation=1 out=""

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while (($#)); do
  case $1 in
    --devices) devices=$2; shift ;;
    --rates) rates=$2; shift ;;
    --drops) drops=$2; shift ;;
    --runs) runs=$2; shift ;;
    --duration) duration=$2; shift ;;
    --no-saturation) saturation=0 ;;
    --quick) devices=300 rates=1000 drops=100 runs=1 duration=2s saturation=0 ;;
    --out) out=$2; shift ;;
    -h|--help) usage ;;
    *) echo "peers.sh: unknown argument $1" >&2; usage 2 >&2 ;;
  esac
  shift
done
[[ $duration =~ ^([0-9]+)s?$ ]] || { echo "peers.sh: --duration must be whole seconds like 5s" >&2; exit 2; }
secs=${BASH_REMATCH[1]}
read -ra rates <<<"$rates"
read -ra drops <<<"$drops"
((devices > 0 && runs > 0 && secs > 0 && ${#rates[@]} > 0 && ${#drops[@]} > 0)) || usage 2 >&2

log() { printf '[peers %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- tools ---------------------------------------------------------------------------------
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
peer_bench=${PEER_BENCH:-$here/../../shared/bench/presence_bench.py}
[[ -f $peer_bench ]] || { echo "peers.sh: no load generator at $peer_bench (set PEER_BENCH)" >&2; exit 1; }
mosquitto=${MOSQUITTO:-/usr/sbin/mosquitto}
if [[ ! -x $mosquitto ]]; then
  log "installing mosquitto"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto; } >/dev/null
fi
py=python3
if ! "$py" -c 'import psutil' 2>/dev/null; then
  venv=${XDG_CACHE_HOME:-$HOME/.cache}/presence-peers-venv
  if ! "$venv/bin/python" -c 'import psutil' 2>/dev/null; then
    log "installing psutil into $venv"
    python3 -m venv "$venv" && "$venv/bin/pip" install -q --disable-pip-version-check psutil >/dev/null
  fi
  py=$venv/bin/python
fi
# (PRESENCE_BIN is not passed on: the server reads PRESENCE_* variables as its settings.)
presence=${PRESENCE_BIN:-$repo/target/release/presence}
if [[ ! -x $presence ]]; then
  [[ -z ${PRESENCE_BIN:-} ]] || { echo "peers.sh: PRESENCE_BIN=$presence is not executable" >&2; exit 1; }
  log "building $presence"
  (cd "$repo" && cargo build --release --quiet)
fi

out=${out:-$(mktemp -d /tmp/peers.XXXXXX)}
mkdir -p "$out"
log "results and logs in $out"

# --- our own mosquitto on a free loopback port ------------------------------------------------
mosq_pid="" holder_pid="" port="" top_rate=0
cleanup() {
  [[ -z $holder_pid ]] || kill "$holder_pid" 2>/dev/null || true
  [[ -z $mosq_pid ]] || kill "$mosq_pid" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mosq_start() {
  port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  printf '%s\n' "listener $port 127.0.0.1" "allow_anonymous true" "persistence false" \
    "log_dest none" "max_connections -1" >"$out/mosquitto.conf"
  "$mosquitto" -c "$out/mosquitto.conf" >/dev/null 2>&1 &
  mosq_pid=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "peers.sh: mosquitto did not start on port $port" >&2
  exit 1
}
mosq_stop() {
  kill "$mosq_pid" 2>/dev/null || true
  wait "$mosq_pid" 2>/dev/null || true
  mosq_pid=""
}
# One measurement on a fresh mosquitto (no retained messages or grown heap from the last one).
mqtt() { # mqtt OUTFILE SCENARIO ARGS…
  local file=$1; shift
  timeout -k 5 $((secs * 2 + 180)) "$py" "$peer_bench" mqtt "$@" --port "$port" --pid "$mosq_pid" \
    --out "$file" >/dev/null 2>>"$out/mosquitto.stderr" || log "failed: mqtt $* (see $out/mosquitto.stderr)"
}

# --- Presence ----------------------------------------------------------------------------------
# Each `presence bench` holds one rate and one drop. The first rate's invocation also ramps (for
# the saturation figure); a drop above N, or any other drop, gets its own invocation on
# max(N, K) devices at the first rate.
d0=$devices
for k in "${drops[@]}"; do
  if ((k <= devices && (d0 == devices || k < d0))); then d0=$k; fi
done
for r in "${rates[@]}"; do if ((r > top_rate)); then top_rate=$r; fi; done
# The MQTT generator sends what is due every 10 ms (its `tick`); presence bench is given the
# same tick, so both servers see the same bursts (by default it sends every millisecond).
tick=10ms
presence_bench() { # presence_bench LOG ARGS…
  local file=$1; shift
  log "presence bench $* --duration $duration --runs $runs --tick $tick"
  timeout -k 10 $((runs * (secs + 600) + 600)) env -u PRESENCE_BIN "$presence" bench "$@" --duration "$duration" \
    --runs "$runs" --tick "$tick" >"$out/$file" 2>"$out/$file.stderr" || log "failed: presence bench $* (see $out/$file*)"
  grep '^run ' "$out/$file" >&2 || true
}
drop_logs=""
for i in "${!rates[@]}"; do
  ramp=--no-ramp
  ((i == 0 && saturation)) && ramp=""
  presence_bench "presence-rate-${rates[i]}.log" --devices "$devices" --rate "${rates[i]}" \
    --drop "$d0" $ramp
done
for k in "${drops[@]}"; do
  if ((k == d0)); then
    drop_logs+="\"$k\": \"presence-rate-${rates[0]}.log\","
  else
    presence_bench "presence-drop-$k.log" --devices $((k > devices ? k : devices)) \
      --rate "${rates[0]}" --drop "$k" --no-ramp
    drop_logs+="\"$k\": \"presence-drop-$k.log\","
  fi
done

# --- Mosquitto, same shape -----------------------------------------------------------------
established() { ss -Htn state established "( sport = :$port )" | wc -l; }
for run in $(seq "$runs"); do
  log "mosquitto run $run/$runs: $devices idle clients"
  mosq_start; mqtt "$out/mosquitto-idle.jsonl" idle -n "$devices"; mosq_stop
  for rate in "${rates[@]}"; do
    log "mosquitto run $run/$runs: $rate msgs/s for ${secs}s from $devices publishers"
    mosq_start
    mqtt "$out/mosquitto-rate-$rate.jsonl" tput -p "$devices" -m $((rate * secs)) --rate "$rate" \
      --timeout $((secs + 20))
    mosq_stop
  done
  for k in "${drops[@]}"; do
    total=$((k > devices ? k : devices))
    log "mosquitto run $run/$runs: drop $k of $total"
    mosq_start
    if ((total > k)); then # the clients that stay, as in presence bench
      timeout -k 5 900 "$py" "$peer_bench" mqtt idle -n $((total - k)) --port "$port" --settle 600 \
        >/dev/null 2>&1 &
      holder_pid=$!
      for _ in $(seq 1200); do (($(established) >= total - k)) && break; sleep 0.1; done
    fi
    mqtt "$out/mosquitto-drop-$k.jsonl" idle -n "$k" --storm --timeout 60
    [[ -z $holder_pid ]] || { kill "$holder_pid" 2>/dev/null || true; wait "$holder_pid" 2>/dev/null || true; }
    holder_pid=""
    mosq_stop
  done
  if ((saturation)); then
    # Presence bench's ramp: doubling steps of 250·2^k, 3 s each, sustained = ≥ 95 % delivered
    # and p99 < 1 s. Mosquitto sustains the rates above, so start at the step just below the
    # highest of them. Stop where it fails or the generator cannot send that fast.
    rate=250 max=0 limited=false
    while ((rate * 2 <= top_rate)); do rate=$((rate * 2)); done
    while ((rate <= 256000)); do
      log "mosquitto run $run/$runs: ramp step $rate msgs/s"
      mosq_start
      rm -f "$out/step.json"
      mqtt "$out/step.json" tput -p "$devices" -m $((rate * 3)) --rate "$rate" --timeout 30 || true
      mosq_stop
      [[ -s $out/step.json ]] && cat "$out/step.json" >>"$out/mosquitto-ramp-steps.jsonl"
      rc=0; [[ -s $out/step.json ]] && { "$py" "$here/peers.py" sustained "$out/step.json" "$rate" || rc=$?; } || rc=1
      if ((rc == 0)); then max=$rate; rate=$((rate * 2)); continue; fi
      ((rc == 2)) && limited=true
      break
    done
    echo "{\"run\": $run, \"max_rate\": $max, \"generator_limited\": $limited}" >>"$out/mosquitto-ramp.jsonl"
    if [[ $limited == true ]]; then # the generator's own ceiling: as fast as it can send
      log "mosquitto run $run/$runs: unthrottled, 200000 msgs"
      mosq_start
      mqtt "$out/mosquitto-unthrottled.jsonl" tput -p "$devices" -m 200000 --timeout 30
      mosq_stop
    fi
  fi
done

printf '{"devices": %d, "rates": [%s], "drops": [%s], "runs": %d, "duration": "%s", "saturation": %s, "drop_logs": {%s}}\n' \
  "$devices" "$(IFS=,; echo "${rates[*]}")" "$(IFS=,; echo "${drops[*]}")" "$runs" "$duration" \
  "$( ((saturation)) && echo true || echo false)" "${drop_logs%,}" >"$out/meta.json"
"$py" "$here/peers.py" report "$out" | tee "$out/report.md"
