#!/usr/bin/env bash
# Checks the systemd units in deploy/systemd/ (ctest deploy_systemd_verify):
#  1. `systemd-analyze verify` accepts every unit (a copy whose ExecStart*= point at the built
#     dgpt and at deploy/systemd/dgpt-wait-ready): no error, no warning;
#  2. `systemd-analyze security --offline` rates each unit's exposure at most 2.0;
#  3. the example confs set what the units need;
#  4. the units' own command lines, expanded as systemd would with the example confs (addresses,
#     model and key swapped for test ones), really run: a worker and `dgpt serve` start, the
#     ExecStartPost= readiness probes pass, /health is "ok", a completion works, SIGTERM stops
#     both with status 0 — all under the kernel's PR_SET_MDWE, what MemoryDenyWriteExecute= enforces.
# Usage: check_systemd.sh --dgpt BUILD/tools/dgpt --work DIR
# Exit 77 (skipped) without systemd-analyze (Debian package `systemd`).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
units=$root/deploy/systemd
helper=$root/tests/deploy/unit_exec.py
py=/usr/bin/python3
dgpt="" work=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --dgpt) dgpt=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    *) echo "usage: $0 --dgpt PATH --work DIR" >&2; exit 2 ;;
  esac
done
[[ -x $dgpt && -n $work ]] || { echo "usage: $0 --dgpt PATH --work DIR" >&2; exit 2; }
dgpt=$(cd "$(dirname "$dgpt")" && pwd)/$(basename "$dgpt")

if ! command -v systemd-analyze >/dev/null; then
  echo "SKIP: systemd-analyze not found (Debian package systemd); the units are not checked"
  exit 77
fi
fail() { echo "FAIL: $*"; exit 1; }

rm -rf "$work" && mkdir -p "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

# 1. verify. The copy points at executables that exist here.
mkdir -p "$work/units"
for unit in "$units"/*.service; do
  sed -e "s#/usr/local/bin/dgpt#$dgpt#g" \
      -e "s#/usr/local/libexec/dgpt-wait-ready#$units/dgpt-wait-ready#g" \
      "$unit" >"$work/units/$(basename "$unit")"
done
verify_names=()
for unit in "$work"/units/*.service; do
  name=$(basename "$unit")
  [[ $name == *@.service ]] && name=${name%@.service}@stage1.service  # a template: an instance
  verify_names+=("$work/units/$name")
done
echo "systemd-analyze verify ${verify_names[*]##*/}"
status=0
output=$(cd "$work/units" && systemd-analyze verify --man=no --recursive-errors=no \
           "${verify_names[@]}" 2>&1) || status=$?
[[ $status -eq 0 && -z $output ]] || fail "systemd-analyze verify (exit $status): $output"
echo "  ok: no errors, no warnings"

# 2. exposure
for unit in "${verify_names[@]}"; do
  line=$(systemd-analyze security --offline=true "$unit" 2>&1 | grep 'Overall exposure' || true)
  echo "  ${line#→ }"
  systemd-analyze security --offline=true --threshold=20 "$unit" >/dev/null 2>&1 ||
    fail "$(basename "$unit"): exposure above 2.0: $line"
done

# 3. example confs
examples=$units/examples
grep -q '^DGPT_LISTEN=' "$examples/worker-stage1.conf" &&
  grep -q '^DGPT_MODEL=' "$examples/worker-stage1.conf" || fail "worker-stage1.conf lacks DGPT_LISTEN/DGPT_MODEL"
for key in DGPT_LISTEN DGPT_MODEL DGPT_WORKERS; do
  grep -q "^$key=" "$examples/coordinator.conf" || fail "coordinator.conf lacks $key"
done

# 4. run the units' command lines
model=$work/model
"$py" "$root/weights/make_random_model.py" --out "$model" --n-layer 2 --n-head 2 --n-embd 32 \
  --n-positions 64 --seed 3 >/dev/null
openssl rand -hex 32 >"$work/key" 2>/dev/null || "$py" -c 'import secrets; print(secrets.token_hex(32))' >"$work/key"
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
worker_port=$(free_port)
serve_port=$(free_port)

mdwe=("$py" "$helper" mdwe)
if ! "${mdwe[@]}" /bin/true 2>"$work/mdwe.err"; then
  echo "  note: this kernel lacks PR_SET_MDWE ($(cat "$work/mdwe.err")): W^X is not checked here"
  mdwe=()
fi

# argv_of UNIT INSTANCE KEY ENVFILE --set ...: the expanded command line, into the array `argv`.
argv_of() {
  argv=()
  local word
  while IFS= read -r -d '' word; do argv+=("$word"); done < <("$py" "$helper" argv "$@")
}

common_sets=(--set DGPT_THREADS=1 --set "DGPT_AUTH_KEY_FILE=$work/key")
worker_env=("$examples/worker-stage1.conf" "${common_sets[@]}" --set "DGPT_LISTEN=127.0.0.1:$worker_port"
            --set "DGPT_MODEL=$model" --set DGPT_READY_TIMEOUT=60)
argv_of "$work/units/dgpt-worker@.service" stage1 ExecStart "${worker_env[@]}"
echo "worker: ${argv[*]}"
"${mdwe[@]}" "${argv[@]}" 2>"$work/worker.log" &
worker_pid=$!
pids+=("$worker_pid")
argv_of "$work/units/dgpt-worker@.service" stage1 ExecStartPost "${worker_env[@]}"
echo "worker ready probe: ${argv[*]}"
MAINPID=$worker_pid "${argv[@]}" || fail "worker readiness: $(tail -c 2000 "$work/worker.log")"

serve_env=("$examples/coordinator.conf" "${common_sets[@]}" --set "DGPT_LISTEN=127.0.0.1:$serve_port"
           --set "DGPT_MODEL=$model" --set "DGPT_WORKERS=127.0.0.1:$worker_port"
           --set "DGPT_ARGS=--max-sequences 2 --timeout 30" --set DGPT_READY_TIMEOUT=60)
argv_of "$work/units/dgpt-coordinator.service" "" ExecStart "${serve_env[@]}"
echo "coordinator: ${argv[*]}"
"${mdwe[@]}" "${argv[@]}" 2>"$work/serve.log" &
serve_pid=$!
pids+=("$serve_pid")
argv_of "$work/units/dgpt-coordinator.service" "" ExecStartPost "${serve_env[@]}"
echo "coordinator ready probe: ${argv[*]}"
MAINPID=$serve_pid "${argv[@]}" || fail "coordinator readiness: $(tail -c 2000 "$work/serve.log")"

"$py" - "$serve_port" <<'EOF' || fail "HTTP checks; serve log: $(tail -c 2000 "$work/serve.log")"
import json, sys, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
health = json.load(urllib.request.urlopen(base + "/health", timeout=30))
assert health["status"] == "ok", health
print("  /health:", json.dumps(health))
body = json.dumps({"model": health["model"], "prompt": "Hello", "max_tokens": 8, "temperature": 0}).encode()
request = urllib.request.Request(base + "/v1/completions", body, {"Content-Type": "application/json"})
answer = json.load(urllib.request.urlopen(request, timeout=60))
assert answer["usage"]["completion_tokens"] >= 1, answer
print("  completion:", json.dumps(answer["choices"][0]["text"]))
EOF

# A probe for a port nobody listens on must time out with status 1.
if "$units/dgpt-wait-ready" tcp "127.0.0.1:$(free_port)" 1 >/dev/null 2>&1; then
  fail "dgpt-wait-ready succeeded on a closed port"
fi

for name in serve worker; do
  pid_var=${name}_pid
  kill -TERM "${!pid_var}"
  status=0
  wait "${!pid_var}" || status=$?
  [[ $status -eq 0 ]] || fail "$name exited with $status after SIGTERM: $(tail -c 2000 "$work/$name.log")"
done
pids=()
echo "  SIGTERM: coordinator and worker exited 0${mdwe:+ (under PR_SET_MDWE)}"
echo "PASS"
