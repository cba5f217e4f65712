#!/usr/bin/env bash
# Runs deploy/ansible/site.yml for real against this machine (ctest deploy_ansible_local, slow):
#  1. tags check_packages,install_dependencies,build with localhost as the boss
#     (ansible_connection=local): a snapshot of the repository (WORK/snapshot, so edits made
#     meanwhile do not count as changes) is synced to WORK/src, built in WORK/build and
#     installed to WORK/prefix — the repository's own build folders are not touched;
#  2. the installed dgpt generates text from a small random model;
#  3. the same run again reports changed=0 (idempotent);
#  4. tags ensure_model_dir,download_model,split_model,distribute_shards,key with localhost as
#     the boss and as two workers (each with its own folders under WORK): a random model is made
#     and split in two, each worker gets only its own shard (checked against the manifest's
#     sha256) and the key (0640, group dgpt); again, changed=0. Makes the `dgpt` system user and
#     group if missing (removed at the end if this test made them);
#  5. only when systemd is PID 1 and this machine has no dgpt deployment (/etc/dgpt): the
#     key, model, split, shard, start and health steps with localhost as boss and single worker
#     (installs to /usr/local, units in /etc/systemd/system), a second run changes nothing,
#     then everything it made is removed. In a container (no systemd) this part is skipped.
# Usage: check_ansible_local.sh --work DIR
# Exit 77 (skipped) without ansible-playbook or when not root.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --work) work=$2; shift 2 ;;
    *) echo "usage: $0 --work DIR" >&2; exit 2 ;;
  esac
done
[[ -n $work ]] || { echo "usage: $0 --work DIR" >&2; exit 2; }
command -v ansible-playbook >/dev/null ||
  { echo "SKIP: ansible-playbook not found (Debian package ansible)"; exit 77; }
[[ $(id -u) -eq 0 ]] || { echo "SKIP: needs root (the playbook installs packages)"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }

mkdir -p "$work"
work=$(cd "$work" && pwd)
export ANSIBLE_NOCOLOR=1 ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_RETRY_FILES_ENABLED=false
# Build at low priority with one job: this may share a small machine.

cat >"$work/inventory.ini" <<EOF
[boss]
localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3

[workers]

[dgpt:children]
boss
workers
EOF
# The files of the checkout (tracked and untracked, not ignored), as they are now.
rm -rf "$work/snapshot" && mkdir -p "$work/snapshot"
if git -C "$root" rev-parse --show-toplevel >/dev/null 2>&1; then
  (cd "$root" && git ls-files -z -co --exclude-standard |
     tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -xf - -C "$work/snapshot"
else
  tar -C "$root" --exclude='./build*' --exclude=./models --exclude=./.git -cf - . |
    tar -xf - -C "$work/snapshot"
fi
# The snapshot's playbook; its dgpt_repo default is the snapshot.
playbook=(nice -n 10 ansible-playbook "$work/snapshot/deploy/ansible/site.yml")
build_vars=(-e "dgpt_repo=$work/snapshot" -e "dgpt_src_dir=$work/src" -e "dgpt_build_dir=$work/build" -e "dgpt_prefix=$work/prefix"
            -e dgpt_build_jobs=$(nproc))

# recap LOG: the "changed=N" of the PLAY RECAP, summed over hosts.
changed_count() { awk '/^PLAY RECAP/ {r=1} r && match($0, /changed=[0-9]+/) {s += substr($0, RSTART+8, RLENGTH-8)} END {print s+0}' "$1"; }

run() {  # run LOG ARGS...: the playbook; its log goes to LOG and, on failure, to the test log
  local log=$1; shift
  echo "+ ansible-playbook site.yml $*"
  if ! "${playbook[@]}" -i "$work/inventory.ini" "$@" >"$log" 2>&1; then
    tail -n 60 "$log"
    fail "ansible-playbook $* failed (log: $log)"
  fi
  grep -A3 '^PLAY RECAP' "$log"
}

# 1. install_dependencies + build
tags=check_packages,install_dependencies,build
start_s=$SECONDS
run "$work/run1.log" --tags "$tags" "${build_vars[@]}"
echo "first run: $((SECONDS - start_s)) s"
grep -E 'all [0-9]+ packages installed|missing \(' "$work/run1.log" | sed 's/^ *"msg": /check_packages: /' || true

# 2. the installed binary works
dgpt=$work/prefix/bin/dgpt
[[ -x $dgpt && -x $work/prefix/libexec/dgpt-wait-ready ]] || fail "dgpt / dgpt-wait-ready not installed in $work/prefix"
/usr/bin/python3 "$root/weights/make_random_model.py" --out "$work/model" --n-layer 2 --n-head 2 \
  --n-embd 32 --n-positions 64 --seed 2 >/dev/null
out=$("$dgpt" generate --model "$work/model" --prompt "Hi" --max-tokens 4 --seed 1 --threads 1 --json 2>/dev/null) ||
  fail "the installed dgpt does not generate"
grep -q '"generated_ids"' <<<"$out" || fail "unexpected output: $out"
echo "installed dgpt generates: ok"

# 3. idempotent
run "$work/run2.log" --tags "$tags" "${build_vars[@]}"
changed=$(changed_count "$work/run2.log")
[[ $changed -eq 0 ]] || { grep -B2 '^changed:' "$work/run2.log" | head -40; fail "second run changed $changed things"; }
echo "second run: changed=0"

# 4. model, split, shards and key: the boss and two workers, all this machine
user_existed=0
getent passwd dgpt >/dev/null && user_existed=1
group_existed=0
getent group dgpt >/dev/null && group_existed=1
remove_user() {
  [[ $user_existed -eq 1 ]] || userdel dgpt 2>/dev/null || true
  [[ $group_existed -eq 1 ]] || groupdel dgpt 2>/dev/null || true
}
trap remove_user EXIT
c=$work/cluster
rm -rf "$c"
local_host="ansible_connection=local ansible_python_interpreter=/usr/bin/python3"
cat >"$work/inventory-cluster.ini" <<EOF
[boss]
boss $local_host dgpt_key_file=$c/boss/etc/key

[workers]
w0 $local_host dgpt_stage=0 dgpt_shard_dir=$c/w0/shards dgpt_key_file=$c/w0/etc/key
w1 $local_host dgpt_stage=1 dgpt_shard_dir=$c/w1/shards dgpt_key_file=$c/w1/etc/key

[dgpt:children]
boss
workers

[dgpt:vars]
dgpt_data_dir=$c/boss/data
dgpt_model=tiny
dgpt_model_source=random
EOF
# --forks 1: the three "hosts" are one machine; in parallel they would race to make the user.
cluster_vars=(--forks 1 -e "dgpt_prefix=$work/prefix" -e '{"dgpt_random_model_args": ["--n-layer", "3"]}'
              --tags ensure_model_dir,download_model,split_model,distribute_shards,key)
run_cluster() {  # run_cluster LOG: the playbook with the cluster inventory
  cp "$work/inventory-cluster.ini" "$work/inventory.ini"
  run "$1" "${cluster_vars[@]}"
}
run_cluster "$work/cluster1.log"
manifest=$c/boss/data/shards/manifest.json
[[ -f $manifest ]] || fail "no $manifest"
manifest_field() {  # manifest_field PYTHON-EXPRESSION-ON-m
  /usr/bin/python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' \
    "$manifest" "$1"
}
echo "split: $(manifest_field '[s["layers"] for s in m["stages"]]')"
for k in 0 1; do
  shard=$c/w$k/shards/stage-$k/model.safetensors
  [[ -f $shard ]] || fail "w$k did not get its shard"
  [[ ! -e $c/w$k/shards/stage-$((1 - k)) ]] || fail "w$k got the other stage's shard too"
  want=$(manifest_field "m['stages'][$k]['sha256']")
  have=$(sha256sum "$shard" | cut -d' ' -f1)
  [[ $want == "$have" ]] || fail "w$k shard sha256 $have, manifest $want"
  cmp -s "$c/boss/etc/key" "$c/w$k/etc/key" || fail "w$k's key differs from the boss's"
  perms=$(stat -c '%a %U %G' "$c/w$k/etc/key")
  [[ $perms == "640 root dgpt" ]] || fail "w$k key: $perms, expected 640 root dgpt"
done
echo "shards: each worker has only its own, sha256 as in the manifest; key 0640 root:dgpt"
run_cluster "$work/cluster2.log"
changed=$(changed_count "$work/cluster2.log")
[[ $changed -eq 0 ]] || { grep -B2 '^changed:' "$work/cluster2.log" | head -40; fail "second run changed $changed things"; }
echo "second run: changed=0"

# 5. start/health, only on a real systemd machine without a dgpt deployment
if [[ $(cat /proc/1/comm 2>/dev/null) != systemd || ! -d /run/systemd/system ]]; then
  echo "start/health skipped: systemd is not PID 1 here (PID 1 is '$(cat /proc/1/comm 2>/dev/null)'), so units cannot run"
  echo "PASS"
  exit 0
fi
if [[ -e /etc/dgpt || -e /etc/systemd/system/dgpt-coordinator.service || -e /usr/local/bin/dgpt ]]; then
  echo "start/health skipped: this machine already has a dgpt deployment (/etc/dgpt, units or /usr/local/bin/dgpt)"
  echo "PASS"
  exit 0
fi
data=/var/lib/dgpt-ctest
cleanup_systemd() {
  systemctl disable --now dgpt-coordinator.service dgpt-worker@stage0.service >/dev/null 2>&1 || true
  rm -f /etc/systemd/system/dgpt-coordinator.service /etc/systemd/system/dgpt-worker@.service \
        /usr/local/bin/dgpt /usr/local/libexec/dgpt-wait-ready
  systemctl daemon-reload || true
  rm -rf /etc/dgpt "$data"
  remove_user
}
trap cleanup_systemd EXIT
cat >"$work/inventory-systemd.ini" <<EOF
[boss]
localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3

[workers]
localhost

[dgpt:children]
boss
workers

[dgpt:vars]
dgpt_stage=0
dgpt_listen_address=127.0.0.1
dgpt_worker_port=17070
dgpt_serve_listen=127.0.0.1:18080
dgpt_model=tiny
dgpt_model_source=random
dgpt_data_dir=$data
dgpt_worker_threads=1
dgpt_serve_threads=1
EOF
systemd_vars=(-e "dgpt_repo=$work/snapshot" -e "dgpt_src_dir=$work/src" -e "dgpt_build_dir=$work/build" -e dgpt_build_jobs=$(nproc))
cp "$work/inventory-systemd.ini" "$work/inventory.ini"
run "$work/run3.log" "${systemd_vars[@]}"
run "$work/run4.log" "${systemd_vars[@]}"
changed=$(changed_count "$work/run4.log")
[[ $changed -eq 0 ]] || { grep -B2 '^changed:' "$work/run4.log" | head -40; fail "second full run changed $changed things"; }
systemctl is-active dgpt-worker@stage0.service dgpt-coordinator.service
echo "systemd: worker and coordinator started, /health ok, second run changed=0"
echo "PASS"
