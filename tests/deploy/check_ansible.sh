#!/usr/bin/env bash
# Checks deploy/ansible/ (ctest deploy_ansible_lint): the example inventory parses into a boss and
# workers, `ansible-playbook --syntax-check` passes, every workflow tag exists, and ansible-lint
# passes with its strictest (production) profile.
# Exit 77 (skipped) without ansible-playbook / ansible-lint (Debian packages ansible, ansible-lint).
set -euo pipefail
dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../deploy/ansible" && pwd)
for tool in ansible-playbook ansible-inventory ansible-lint; do
  if ! command -v "$tool" >/dev/null; then
    echo "SKIP: $tool not found (Debian packages ansible and ansible-lint); the playbook is not checked"
    exit 77
  fi
done
fail() { echo "FAIL: $*"; exit 1; }
cd "$dir"
export ANSIBLE_NOCOLOR=1 NO_COLOR=1 ANSIBLE_LOCALHOST_WARNING=false

graph=$(ansible-inventory -i inventory.example.ini --graph 2>&1) || fail "inventory: $graph"
echo "$graph"
grep -q '@boss:' <<<"$graph" && grep -q '@workers:' <<<"$graph" || fail "inventory lacks boss/workers groups"

echo "ansible-playbook --syntax-check"
ansible-playbook -i inventory.example.ini site.yml --syntax-check || fail "syntax check"

tags=$(ansible-playbook -i inventory.example.ini site.yml --list-tags --tags all,never 2>&1)
for tag in update reboot check_packages install_dependencies build ensure_model_dir download_model \
           split_model distribute_shards start restart health key; do
  grep -qE "TASK TAGS: \[.*\b$tag\b" <<<"$tags" || fail "no task has the tag $tag"
done
echo "tags: all workflow tags present"

echo "ansible-lint --profile production"
ansible-lint --offline --nocolor --profile production site.yml || fail "ansible-lint"
echo "PASS"
