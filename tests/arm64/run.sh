#!/usr/bin/env bash
# Cross-builds DistributedGPT for aarch64 and runs its tests under user-mode QEMU.
#
#   tests/arm64/run.sh            # install what is missing, build into build-arm64/, test
#
# 1. Installs what is missing (idempotent; as root or through sudo): crossbuild-essential-arm64,
#    qemu-user and the :arm64 -dev packages (dpkg --add-architecture arm64 first). Debian 12's
#    sentencepiece packages are not Multi-Arch: same, so their arm64 .debs are unpacked into
#    build-arm64/deps/root instead of installed (the x86-64 ones stay for the native build).
# 2. Cross-builds with cmake/toolchains/aarch64-linux-gnu.cmake (-Werror, as tests/run.sh).
# 3. Runs under qemu-aarch64: the Catch2 unit tests (ctest, through CMAKE_CROSSCOMPILING_EMULATOR),
#    the numpy reference cases and the loopback pipeline cases (their python drivers get
#    build-arm64/dgpt-qemu, a wrapper that execs the aarch64 dgpt under qemu, as --dgpt), then
#    tests/arm64/check_mixed.py: an x86-64 coordinator with aarch64 workers.
#
# Exit status: 0 when everything passed, 1 when a test (or the build) failed. When the cross
# toolchain or the arm64 packages cannot be installed (offline mirror, no multiarch, no root)
# or qemu cannot run aarch64 binaries here, it prints "SKIPPED: <reason>" and exits 0.
# The last line is always "N passed, N failed".
#
# Environment:
#   DGPT_ARM64_BUILD_DIR  build directory (default: build-arm64 at the repository root)
#   DGPT_ARM64_JOBS       build and ctest parallelism (default: nproc); the build runs niced
#   DGPT_X86_DGPT         the x86-64 dgpt for check_mixed.py (default: $DGPT_BUILD_DIR/tools/dgpt
#                         or build/tools/dgpt when it exists, else one is built in
#                         build-arm64/host-x86)
#   DGPT_ARM64_FULL=1     also run the GPT-2 124M-shaped cases (reference_gpt2_124m,
#                         pipeline_gpt2_124m_3_stages: about 2.5 more minutes under qemu)
# pipeline_worker_killed_mid_generation is never run here: its requests of 900 tokens through
# three 768-wide stages take ~5 minutes under qemu, past the driver's fixed 120 s limit.
#   DGPT_ARM64_BINFMT     `dgpt generate --local-workers` re-executes /proc/self/exe, which
#                         needs binfmt_misc to start an aarch64 child under qemu-user (QEMU 7.2
#                         maps the path to the aarch64 binary but cannot exec it without it).
#                         auto (default): run that case only when an aarch64 handler is
#                         registered; register: as root, register one for this run and remove it
#                         at exit; off: skip the case.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${DGPT_ARM64_BUILD_DIR:-$root/build-arm64}
jobs=${DGPT_ARM64_JOBS:-$(nproc)}
full=${DGPT_ARM64_FULL:-0}
binfmt_mode=${DGPT_ARM64_BINFMT:-auto}
triplet=aarch64-linux-gnu
started=$(date +%s)

passed=0
failed=0
failures=()
notes=()

log() { echo "arm64: $*"; }
elapsed() { echo "$(( $(date +%s) - started )) s"; }
skip() {
  echo
  echo "SKIPPED: $*"
  echo "0 passed, 0 failed"
  exit 0
}
summary() {
  echo
  echo "=== aarch64 (qemu-user) summary, $(elapsed) ==="
  for note in "${notes[@]+"${notes[@]}"}"; do echo "note: $note"; done
  for failure in "${failures[@]+"${failures[@]}"}"; do echo "FAILED: $failure"; done
  if (( failed == 0 )); then echo "RESULT: all aarch64 tests passed"; else echo "RESULT: FAILED"; fi
  echo "$passed passed, $failed failed"
}
pass() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); failures+=("$1"); }

# ---------------------------------------------------------------------------------------------
# 1. Packages

host_packages=(crossbuild-essential-arm64 qemu-user cmake ninja-build pkg-config python3
               python3-numpy libeigen3-dev nlohmann-json3-dev libcli11-dev libasio-dev catch2)
arm64_packages=(libopenblas-dev libfmt-dev libpcre2-dev libssl-dev libcpp-httplib-dev)

installed() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]; }

command -v dpkg >/dev/null && command -v apt-get >/dev/null ||
  skip "not a Debian/Ubuntu system (no dpkg/apt-get)"

missing=()
for p in "${host_packages[@]}"; do installed "$p" || missing+=("$p"); done
for p in "${arm64_packages[@]}"; do installed "$p:arm64" || missing+=("$p:arm64"); done
# libsentencepiece-dev:arm64 is fine when it can be installed (no amd64 one in the way);
# otherwise its .debs are unpacked below.
sentencepiece_installed=0
installed libsentencepiece-dev:arm64 && sentencepiece_installed=1

if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  as_root=(none)
fi
apt_options=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=2)

if (( ${#missing[@]} > 0 )); then
  [[ ${as_root[0]-} == none ]] && skip "missing packages (${missing[*]}) and not root, no sudo"
  export DEBIAN_FRONTEND=noninteractive
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    log "dpkg --add-architecture arm64"
    "${as_root[@]}" dpkg --add-architecture arm64 || skip "dpkg --add-architecture arm64 failed"
  fi
  log "installing ${missing[*]}"
  "${as_root[@]}" apt-get "${apt_options[@]}" update -qq ||
    skip "apt-get update failed (offline mirror?)"
  if ! "${as_root[@]}" apt-get "${apt_options[@]}" install -y -qq --no-install-recommends \
      "${missing[@]}" >"${TMPDIR:-/tmp}/dgpt-arm64-apt.$$.log" 2>&1; then
    tail -5 "${TMPDIR:-/tmp}/dgpt-arm64-apt.$$.log"
    rm -f "${TMPDIR:-/tmp}/dgpt-arm64-apt.$$.log"
    skip "apt-get install of the cross toolchain / arm64 packages failed (no multiarch mirror?)"
  fi
  rm -f "${TMPDIR:-/tmp}/dgpt-arm64-apt.$$.log"
else
  log "all cross packages already installed"
fi

qemu=$(command -v qemu-aarch64 || command -v qemu-aarch64-static || true)
[[ -n $qemu ]] || skip "qemu-aarch64 not found after installing qemu-user"
command -v $triplet-g++ >/dev/null || skip "$triplet-g++ not found after installing crossbuild-essential-arm64"

mkdir -p "$build" || { fail "cannot create $build"; summary; exit 1; }
extra_root=""
if (( sentencepiece_installed == 0 )); then
  # Unpack libsentencepiece0 + libsentencepiece-dev (arm64) into build-arm64/deps/root.
  deps=$build/deps
  extra_root=$deps/root
  version=$(apt-cache policy libsentencepiece-dev:arm64 2>/dev/null | awk '/Candidate:/ {print $2}')
  [[ -n $version && $version != "(none)" ]] || skip "no libsentencepiece-dev:arm64 in the apt sources"
  if [[ $(cat "$deps/version" 2>/dev/null) != "$version" ]]; then
    log "unpacking libsentencepiece0:arm64 + libsentencepiece-dev:arm64 $version into $extra_root"
    rm -rf "$deps" && mkdir -p "$deps/debs"
    (cd "$deps/debs" && apt-get "${apt_options[@]}" download -qq \
        "libsentencepiece0:arm64=$version" "libsentencepiece-dev:arm64=$version" 2>&1 |
        grep -v "unsandboxed") || true
    debs=("$deps"/debs/*.deb)
    [[ ${#debs[@]} -eq 2 && -f ${debs[0]} ]] ||
      skip "apt-get download libsentencepiece*:arm64 failed (offline mirror?)"
    for deb in "${debs[@]}"; do dpkg-deb -x "$deb" "$extra_root"; done
    sed -i "s|^prefix=/usr\$|prefix=$extra_root/usr|" \
        "$extra_root/usr/lib/$triplet/pkgconfig/sentencepiece.pc"
    echo "$version" >"$deps/version"
  fi
fi

# The aarch64 loader and libc must come from one glibc build: libc6:arm64's (pulled in by the
# :arm64 -dev packages) when it is there; `-L /usr/aarch64-linux-gnu` (libc6-arm64-cross) only
# otherwise — pairing the cross tree's ld.so with the multiarch libc.so.6 hangs in
# pthread_create when their versions differ (see the toolchain file).
if [[ -e /lib/ld-linux-aarch64.so.1 || -e /usr/lib/ld-linux-aarch64.so.1 ]]; then
  qemu_cmd=("$qemu")
else
  qemu_cmd=("$qemu" -L "/usr/$triplet")
fi

# Can qemu run an aarch64 binary here (a sandbox may forbid it)?
probe_dir=$build/probe
mkdir -p "$probe_dir"
printf '#include <cstdio>\n#include <thread>\nint main() { std::thread t([] { std::puts("aarch64 ok"); }); t.join(); }\n' \
  >"$probe_dir/probe.cc"
$triplet-g++ -O1 -pthread "$probe_dir/probe.cc" -o "$probe_dir/probe" 2>"$probe_dir/probe.log" ||
  skip "$triplet-g++ cannot compile a hello world: $(head -3 "$probe_dir/probe.log")"
[[ $(timeout 60 "${qemu_cmd[@]}" "$probe_dir/probe" 2>&1) == "aarch64 ok" ]] ||
  skip "qemu-aarch64 cannot run an aarch64 binary here"
log "toolchain: $($triplet-g++ --version | head -1); $("$qemu" --version | head -1)"

# ---------------------------------------------------------------------------------------------
# 2. Cross-build

log "configuring $build"
cmake_args=(-S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDGPT_WERROR=ON
            -DCMAKE_TOOLCHAIN_FILE="$root/cmake/toolchains/$triplet.cmake"
            -DDGPT_FUZZ_WORKS=OFF)  # libFuzzer needs clang for aarch64: the fuzz test is not run
[[ -n $extra_root ]] && cmake_args+=(-DDGPT_ARM64_EXTRA_ROOT="$extra_root")
if ! cmake "${cmake_args[@]}" >"$build/configure.log" 2>&1; then
  tail -20 "$build/configure.log"
  fail "cmake configure (see $build/configure.log)"
  summary; exit 1
fi
log "building with -j$jobs (nice 10)"
build_started=$(date +%s)
# -k 0: one target that does not build for aarch64 is one failure; the rest is still tested.
if nice -n 10 cmake --build "$build" -j "$jobs" -- -k 0 >"$build/build.log" 2>&1; then
  log "build done in $(( $(date +%s) - build_started )) s"
else
  grep -E "^FAILED:|error:" "$build/build.log" | head -20 | sed 's/^/    /'
  fail "cross build: $(grep -c '^FAILED:' "$build/build.log") target(s) failed (see $build/build.log)"
  log "build FAILED after $(( $(date +%s) - build_started )) s; testing what was built"
  [[ -x $build/tools/dgpt ]] || { summary; exit 1; }
fi
elf_machine() { od -An -tx1 -j18 -N2 "$1" 2>/dev/null | tr -d ' \n'; }  # b700 aarch64, 3e00 x86-64
[[ $(elf_machine "$build/tools/dgpt") == b700 ]] ||
  { fail "$build/tools/dgpt is not an aarch64 executable"; summary; exit 1; }

# Wrappers the python drivers get as --dgpt / --dump-logits.
for tool in tools/dgpt tests/reference/dump_logits; do
  wrapper=$build/$(basename "$tool")-qemu
  printf '#!/bin/sh\nexec %s %s "$@"\n' "${qemu_cmd[*]}" "$build/$tool" >"$wrapper"
  chmod +x "$wrapper"
done

# ---------------------------------------------------------------------------------------------
# 3. Tests under qemu

# A test step: runs "$@" with a time limit, prints its output indented, counts it.
run_step() {
  local name=$1 limit=$2; shift 2
  local t0 status out
  t0=$(date +%s)
  out=$(timeout --kill-after=10 "$limit" "$@" 2>&1)
  status=$?
  if (( status == 0 )); then
    pass
    echo "PASS $name ($(( $(date +%s) - t0 )) s)"
  else
    fail "$name"
    echo "$out" | tail -25 | sed 's/^/    /'
    (( status == 124 )) && echo "    (timed out after $limit s)"
    echo "FAIL $name ($(( $(date +%s) - t0 )) s)"
  fi
}

# binfmt_misc for `--local-workers` (see the header).
binfmt_dir=/proc/sys/fs/binfmt_misc
binfmt_ok=0
binfmt_entry=""
aarch64_handler_registered() {
  local entry
  for entry in "$binfmt_dir"/*; do
    [[ -f $entry && $(basename "$entry") != register && $(basename "$entry") != status ]] || continue
    grep -q '^enabled' "$entry" && grep -q 'magic 7f454c460201010000000000000000000200b700' "$entry" &&
      return 0
  done
  return 1
}
binfmt_mounted=0
cleanup_binfmt() {
  [[ -n $binfmt_entry && -e $binfmt_dir/$binfmt_entry ]] && echo -1 >"$binfmt_dir/$binfmt_entry"
  # Unmount only what this run mounted, and only when nobody registered anything since.
  if (( binfmt_mounted )) && [[ $(ls "$binfmt_dir" | grep -cvx 'register\|status') == 0 ]]; then
    umount "$binfmt_dir" 2>/dev/null
  fi
  return 0
}
trap cleanup_binfmt EXIT
if [[ $binfmt_mode != off ]] && aarch64_handler_registered; then
  binfmt_ok=1
elif [[ $binfmt_mode == register && $(id -u) -eq 0 ]]; then
  if [[ ! -e $binfmt_dir/register ]] && mount -t binfmt_misc binfmt_misc "$binfmt_dir" 2>/dev/null; then
    binfmt_mounted=1
  fi
  binfmt_entry=dgpt-arm64-test-$$
  magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
  mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
  if printf '%s' ":$binfmt_entry:M::$magic:$mask:$qemu:" >"$binfmt_dir/register" 2>/dev/null; then
    binfmt_ok=1
    log "registered binfmt_misc handler $binfmt_entry for this run (removed at exit)"
  else
    binfmt_entry=""
  fi
fi

echo
log "unit tests (ctest under $(basename "$qemu"))"
ctest_log=$build/ctest-unit.log
t0=$(date +%s)
(cd "$build" && timeout 900 ctest --timeout 300 -j "$jobs" --output-on-failure \
    -R '^(tokenizer|engine|net|tools)_tests:' >"$ctest_log" 2>&1)
ctest_status=$?
ctest_line=$(grep -E "tests passed, [0-9]+ tests failed out of [0-9]+" "$ctest_log" | tail -1)
if [[ $ctest_line =~ ([0-9]+)\ tests\ failed\ out\ of\ ([0-9]+) ]]; then
  unit_failed=${BASH_REMATCH[1]}
  unit_total=${BASH_REMATCH[2]}
  passed=$((passed + unit_total - unit_failed))
  failed=$((failed + unit_failed))
  if (( unit_failed > 0 )); then
    sed -n '/The following tests FAILED/,$p' "$ctest_log" | sed 's/^/    /'
    while read -r line; do failures+=("unit: $line"); done < <(
      sed -n '/The following tests FAILED/,$p' "$ctest_log" | grep -E '^\s+[0-9]+ - ' |
      sed -E 's/^\s+[0-9]+ - //')
  fi
  skipped_unit=$(grep -c "Skipped" "$ctest_log")
  echo "unit: $((unit_total - unit_failed))/$unit_total passed ($(( $(date +%s) - t0 )) s)$(
    (( skipped_unit > 0 )) && echo ", $skipped_unit reported skipped")"
elif (( ctest_status != 0 )); then
  tail -20 "$ctest_log"
  fail "ctest (unit tests) exited $ctest_status (see $ctest_log)"
else
  fail "ctest ran no unit tests (see $ctest_log)"
fi

py=/usr/bin/python3
shared=$root/../shared
echo
log "reference cases (engine on aarch64 vs the float64 numpy reference on the host, 1e-4)"
slow_reference=(gpt2_124m)
for case in $("$py" "$root/tests/reference/check_engine.py" --list); do
  if [[ $full != 1 && " ${slow_reference[*]} " == *" $case "* ]]; then
    notes+=("reference_$case not run (slow under emulation; DGPT_ARM64_FULL=1 runs it)")
    continue
  fi
  run_step "reference_$case" 600 "$py" "$root/tests/reference/check_engine.py" \
    --dgpt "$build/dgpt-qemu" --dump-logits "$build/dump_logits-qemu" --work "$build/models" \
    --shape "$case" --tokenizer-dir "$shared/gpt2-tokenizer"
done

echo
log "pipeline cases (aarch64 workers + coordinator on loopback vs aarch64 single process)"
pipeline_work=$build/models/pipeline
slow_pipeline=(gpt2_124m_3_stages)
run_step pipeline_make_models 300 "$py" "$root/tests/pipeline/check_pipeline.py" \
  --work "$pipeline_work" --case make_models
for case in $("$py" "$root/tests/pipeline/check_pipeline.py" --list); do
  [[ $case == make_models ]] && continue
  if [[ $full != 1 && " ${slow_pipeline[*]} " == *" $case "* ]]; then
    notes+=("pipeline_$case not run (slow under emulation; DGPT_ARM64_FULL=1 runs it)")
    continue
  fi
  if [[ $case == worker_killed_mid_generation ]]; then
    notes+=("pipeline_$case not run (its 900-token requests outlast the driver's 120 s limit under emulation)")
    continue
  fi
  if [[ $case == local_workers && $binfmt_ok != 1 ]]; then
    notes+=("pipeline_local_workers not run: --local-workers re-executes /proc/self/exe, which needs a binfmt_misc handler for aarch64 (none registered; DGPT_ARM64_BINFMT=register as root adds one for the run)")
    continue
  fi
  run_step "pipeline_$case" 600 "$py" "$root/tests/pipeline/check_pipeline.py" \
    --dgpt "$build/dgpt-qemu" --work "$pipeline_work" --case "$case"
done

echo
log "mixed cluster (x86-64 coordinator, aarch64 workers)"
x86_dgpt=${DGPT_X86_DGPT:-}
if [[ -z $x86_dgpt ]]; then
  for candidate in "${DGPT_BUILD_DIR:-}/tools/dgpt" "$root/build/tools/dgpt"; do
    if [[ -x $candidate && $(elf_machine "$candidate") == 3e00 ]]; then
      x86_dgpt=$candidate
      break
    fi
  done
fi
if [[ -z $x86_dgpt ]]; then
  host_build=$build/host-x86
  log "no x86-64 dgpt found: building one in $host_build"
  if cmake -S "$root" -B "$host_build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDGPT_BUILD_TESTS=OFF \
        >"$build/host-x86-build.log" 2>&1 &&
     nice -n 10 cmake --build "$host_build" -j "$jobs" --target dgpt >>"$build/host-x86-build.log" 2>&1; then
    x86_dgpt=$host_build/tools/dgpt
  else
    tail -20 "$build/host-x86-build.log"
    fail "x86-64 build of dgpt for the mixed cluster (see $build/host-x86-build.log)"
  fi
fi
if [[ -n $x86_dgpt ]]; then
  log "x86-64 dgpt: $x86_dgpt (built $(date -r "$x86_dgpt" '+%F %T'))"
  t0=$(date +%s)
  mixed_out=$(timeout --kill-after=10 900 "$py" "$root/tests/arm64/check_mixed.py" \
    --dgpt-x86 "$x86_dgpt" --dgpt-arm64 "$build/dgpt-qemu" --work "$build/models/mixed" 2>&1)
  status=$?
  echo "$mixed_out" | sed 's/^/    /'
  if (( status == 0 )); then
    pass; echo "PASS mixed_cluster ($(( $(date +%s) - t0 )) s)"
  else
    fail "mixed_cluster"; echo "FAIL mixed_cluster ($(( $(date +%s) - t0 )) s)"
  fi
fi

summary
(( failed == 0 ))
