#!/usr/bin/env bash
# Installs the Debian / Ubuntu / Raspberry Pi OS packages DistributedGPT builds and tests with.
# Idempotent: installs only what is missing. Works as root or as a user with sudo.
set -euo pipefail

packages=(
  build-essential g++ cmake ninja-build pkg-config git curl ca-certificates
  libasio-dev libeigen3-dev libopenblas-dev libsentencepiece-dev libcli11-dev libfmt-dev
  catch2 nlohmann-json3-dev libcpp-httplib-dev libssl-dev libpcre2-dev
  python3 python3-numpy python3-regex
)

missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$package")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null; then
  as_root=(sudo)
else
  echo "install-deps: missing packages (${missing[*]}) and not root; run as root or install sudo" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
