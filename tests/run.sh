#!/usr/bin/env bash
# Runs every test: installs missing packages, builds with warnings as errors, runs ctest, then
# cross-builds for aarch64 and runs the suite again under qemu (tests/arm64/run.sh).
# Usage: tests/run.sh [extra ctest arguments, e.g. -R reference]   (with arguments, or with
# DGPT_SKIP_ARM64=1, only the native ctest part runs)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${DGPT_BUILD_DIR:-$root/build}
jobs=$(nproc)

bash "$root/deploy/install-deps.sh" --test
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDGPT_WERROR=ON >/dev/null
cmake --build "$build" -j "$jobs"

set +e
(cd "$build" && ctest --output-on-failure --timeout 900 -j "$jobs" "$@") 2>&1 |
  tee "$build/ctest.log"
ctest_status=${PIPESTATUS[0]}
set -e
summary=$(grep -E "tests passed, [0-9]+ tests failed out of [0-9]+" "$build/ctest.log" | tail -1)
native_failed=$(sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+).*/\1/' <<<"$summary")
native_total=$(sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+).*/\2/' <<<"$summary")
native_failed=${native_failed:-0}
native_total=${native_total:-0}

arm_passed=0
arm_failed=0
arm_status=0
if [[ $# -eq 0 && "${DGPT_SKIP_ARM64:-0}" != 1 ]]; then
  set +e
  DGPT_X86_DGPT="$build/tools/dgpt" bash "$root/tests/arm64/run.sh" 2>&1 | tee "$build/arm64.log"
  arm_status=${PIPESTATUS[0]}
  set -e
  arm_line=$(grep -E "^[0-9]+ passed, [0-9]+ failed" "$build/arm64.log" | tail -1 || true)
  arm_passed=$(sed -E 's/^([0-9]+) passed.*/\1/' <<<"$arm_line")
  arm_failed=$(sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/' <<<"$arm_line")
  arm_passed=${arm_passed:-0}
  arm_failed=${arm_failed:-0}
fi

echo
echo "native (ctest): $((native_total - native_failed)) passed, $native_failed failed;" \
     "aarch64 under qemu: $arm_passed passed, $arm_failed failed"
echo "$((native_total - native_failed + arm_passed)) passed, $((native_failed + arm_failed)) failed"
[[ $ctest_status -eq 0 && $arm_status -eq 0 ]]
