#!/usr/bin/env bash
# Runs every test: installs missing packages, builds with warnings as errors, runs ctest.
# Usage: tests/run.sh [extra ctest arguments, e.g. -R reference]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${DGPT_BUILD_DIR:-$root/build}
jobs=$(nproc)

bash "$root/deploy/install-deps.sh" --test
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDGPT_WERROR=ON >/dev/null
cmake --build "$build" -j "$jobs"
cd "$build"
ctest --output-on-failure --timeout 900 -j "$jobs" "$@"
