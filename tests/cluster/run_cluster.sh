#!/usr/bin/env bash
# A 4-machine cluster on one machine (ctest cluster_netns): network namespaces for the boss and
# three workers, each with one veth cable into a bridge (the switch, in its own namespace):
#
#   boss 10.77.0.1 --h0--+
#   w1   10.77.0.11 -h1--+-- br0 (namespace dgptc-PID-sw)
#   w2   10.77.0.12 -h2--+
#   w3   10.77.0.13 -h3--+
#   out  10.77.0.99 -h4--+   (an outsider: the workers' firewall must drop it)
#
# tests/cluster/cluster.py (run in the boss namespace) starts the workers and `dgpt serve`, and
# checks output, failures and latency (see its docstring). Every namespace (and so every link)
# made here is deleted on exit, also on failure; namespaces left by an earlier run that was
# killed (dgptc-PID-* with PID gone) are deleted first.
# Usage: run_cluster.sh --dgpt BUILD/tools/dgpt --work DIR
# Exit 77 (skipped) when not root / not permitted to make namespaces, or without ip/tc.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
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
mkdir -p "$work"
work=$(cd "$work" && pwd)

skip() { echo "SKIP: $*"; exit 77; }
for tool in ip tc; do
  command -v "$tool" >/dev/null || skip "'$tool' not found (Debian package iproute2)"
done
[[ -x /usr/bin/python3 ]] || skip "/usr/bin/python3 not found"
[[ $(id -u) -eq 0 ]] || skip "needs root (CAP_NET_ADMIN) to make network namespaces"

prefix=dgptc-$$
boss=$prefix-boss
switch=$prefix-sw
workers=("$prefix-w1" "$prefix-w2" "$prefix-w3")
outsider=$prefix-out
made=()

cleanup() {
  local status=$? ns pid
  for ns in "${made[@]}"; do
    # Only processes of this run live in these namespaces.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  done
  for ns in "${made[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  [[ ${#made[@]} -eq 0 ]] || echo "cleanup: deleted namespaces ${made[*]}"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Leftovers of a run that was killed before its trap ran.
for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
  if [[ $ns =~ ^dgptc-([0-9]+)- ]] && ! kill -0 "${BASH_REMATCH[1]}" 2>/dev/null; then
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" && echo "removed stale namespace $ns"
  fi
done

add_ns() {
  local err
  if ! err=$(ip netns add "$1" 2>&1); then
    skip "cannot make network namespaces here (ip netns add: $err)"
  fi
  made+=("$1")
  ip -n "$1" link set lo up
}

add_ns "$switch"
ip -n "$switch" link add br0 type bridge
ip -n "$switch" link set br0 up
hosts=("$boss" "${workers[@]}" "$outsider")
addresses=(10.77.0.1 10.77.0.11 10.77.0.12 10.77.0.13 10.77.0.99)
for k in "${!hosts[@]}"; do
  ns=${hosts[$k]}
  add_ns "$ns"
  # A cable: h$k in the switch, eth0 in the host.
  ip -n "$switch" link add "h$k" type veth peer name eth0 netns "$ns"
  ip -n "$switch" link set "h$k" master br0 up
  ip -n "$ns" addr add "${addresses[$k]}/24" dev eth0
  ip -n "$ns" link set eth0 up
done
echo "namespaces: ${made[*]}"
for k in "${!hosts[@]}"; do
  echo "  ${hosts[$k]}: $(ip -n "${hosts[$k]}" -br addr show dev eth0 | awk '{print $3}')"
done

ip netns exec "$boss" /usr/bin/python3 "$here/cluster.py" run --dgpt "$dgpt" --work "$work" \
  --ns-boss "$boss" --ns-switch "$switch" --ns-outsider "$outsider" --ns-workers "$(IFS=,; echo "${workers[*]}")"
