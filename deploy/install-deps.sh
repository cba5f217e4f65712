#!/usr/bin/env bash
# Installs the Debian / Ubuntu / Raspberry Pi OS packages DistributedGPT builds with.
# Usage: deploy/install-deps.sh [--test]   (--test adds what the test suite needs: clang for
# the fuzzer, a browser for the web page test, node for the OpenAI client test, network and
# deployment tools; best effort: a test whose tool is missing says it skipped).
# Idempotent: installs only what is missing. Works as root or as a user with sudo.
set -euo pipefail

packages=(
  build-essential g++ cmake ninja-build pkg-config git curl ca-certificates
  libasio-dev libeigen3-dev libopenblas-dev libsentencepiece-dev libcli11-dev libfmt-dev
  catch2 nlohmann-json3-dev libcpp-httplib-dev libssl-dev libpcre2-dev
  python3 python3-numpy python3-regex
)
test_packages=(clang libclang-rt-dev chromium iproute2 nftables systemd ansible ansible-lint rsync)
# node and npm: many machines have them from elsewhere; take Debian's only if there are none.
command -v node >/dev/null || test_packages+=(nodejs)
command -v npm >/dev/null || test_packages+=(npm)

native=$(dpkg --print-architecture)
missing_of() {
  local package status
  for package in "$@"; do
    # This machine's architecture (other arches may be installed for cross builds); then
    # architecture-independent packages.
    status=$(dpkg-query -W -f='${Status}' "$package:$native" 2>/dev/null ||
             dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || echo "$package"
  done
}

mapfile -t missing < <(missing_of "${packages[@]}")
missing_test=()
[[ "${1:-}" == "--test" ]] && mapfile -t missing_test < <(missing_of "${test_packages[@]}")
if [[ ${#missing[@]} -eq 0 && ${#missing_test[@]} -eq 0 ]]; then
  echo "install-deps: all packages already installed"
  exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null; then
  as_root=(sudo)
else
  echo "install-deps: missing packages (${missing[*]} ${missing_test[*]}) and not root;" \
       "run as root or install sudo" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "install-deps: installing ${missing[*]}"
  "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
for package in "${missing_test[@]}"; do
  "${as_root[@]}" apt-get install -y -qq --no-install-recommends "$package" >/dev/null 2>&1 ||
    echo "install-deps: could not install $package; the tests that need it will skip"
done
