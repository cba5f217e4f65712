# Cross-compiling DistributedGPT for 64-bit ARM (Raspberry Pi OS 64-bit, other aarch64 Linux)
# on a Debian / Ubuntu x86-64 machine, with Debian's multiarch packages:
#
#   dpkg --add-architecture arm64 && apt-get update
#   apt-get install crossbuild-essential-arm64 qemu-user libeigen3-dev nlohmann-json3-dev \
#       libcli11-dev libasio-dev catch2 libopenblas-dev:arm64 libfmt-dev:arm64 \
#       libpcre2-dev:arm64 libssl-dev:arm64 libcpp-httplib-dev:arm64 libsentencepiece-dev:arm64
#   cmake -S . -B build-arm64 -G Ninja \
#       -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/aarch64-linux-gnu.cmake
#
# Libraries come from /usr/lib/aarch64-linux-gnu (the :arm64 -dev packages), headers from
# /usr/include (shared by all architectures) and /usr/include/aarch64-linux-gnu; the host's
# x86-64 libraries are never looked at. Test binaries run under qemu-aarch64 (ctest and
# catch_discover_tests use CMAKE_CROSSCOMPILING_EMULATOR; see the end of this file for -L).
#
# DGPT_ARM64_EXTRA_ROOT (cache variable or environment variable): one more directory laid out
# like / (usr/lib/aarch64-linux-gnu, usr/include) searched before the system's. Debian 12's
# libsentencepiece-dev and libsentencepiece0 are not Multi-Arch: same, so their :arm64 versions
# cannot be installed next to the :amd64 ones that the native build needs; tests/arm64/run.sh
# unpacks the arm64 .debs into such a directory (and points the .pc file's prefix at it).

set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

set(_dgpt_triplet aarch64-linux-gnu)
if(NOT CMAKE_C_COMPILER)
  set(CMAKE_C_COMPILER ${_dgpt_triplet}-gcc)
endif()
if(NOT CMAKE_CXX_COMPILER)
  set(CMAKE_CXX_COMPILER ${_dgpt_triplet}-g++)
endif()

if(NOT DEFINED DGPT_ARM64_EXTRA_ROOT AND DEFINED ENV{DGPT_ARM64_EXTRA_ROOT})
  set(DGPT_ARM64_EXTRA_ROOT "$ENV{DGPT_ARM64_EXTRA_ROOT}")
endif()
# Toolchain files are re-read for every try_compile: pass the variable on to those too.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES DGPT_ARM64_EXTRA_ROOT)

# Search roots: the extra root (if any), the cross toolchain's own tree, then / for the multiarch
# directories (<root>/usr/lib/aarch64-linux-gnu via CMAKE_LIBRARY_ARCHITECTURE) and the
# architecture-independent CMake packages in /usr/share and /usr/lib/cmake (Eigen3, CLI11,
# nlohmann_json, Catch2).
set(CMAKE_FIND_ROOT_PATH /usr/${_dgpt_triplet} /)
if(DGPT_ARM64_EXTRA_ROOT)
  list(PREPEND CMAKE_FIND_ROOT_PATH "${DGPT_ARM64_EXTRA_ROOT}")
endif()
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)   # build tools (python3, ninja, clang) are the host's
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# Never pick up an x86-64 library or CMake package by accident.
list(APPEND CMAKE_IGNORE_PATH /usr/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu
     /usr/lib/x86_64-linux-gnu/cmake)

# pkg-config (PCRE2, OpenBLAS, sentencepiece, cpp-httplib): only arm64 and arch-independent .pc
# files. PKG_CONFIG_LIBDIR replaces pkg-config's default search path entirely.
set(_dgpt_pc_dirs /usr/lib/${_dgpt_triplet}/pkgconfig /usr/share/pkgconfig)
if(DGPT_ARM64_EXTRA_ROOT)
  list(PREPEND _dgpt_pc_dirs "${DGPT_ARM64_EXTRA_ROOT}/usr/lib/${_dgpt_triplet}/pkgconfig")
endif()
string(REPLACE ";" ":" _dgpt_pc_dirs "${_dgpt_pc_dirs}")
set(ENV{PKG_CONFIG_LIBDIR} "${_dgpt_pc_dirs}")
set(ENV{PKG_CONFIG_PATH} "")
unset(ENV{PKG_CONFIG_SYSROOT_DIR})

# Run aarch64 binaries (tests, catch_discover_tests) under user-mode QEMU.
# The ELF interpreter /lib/ld-linux-aarch64.so.1 must come from the same glibc build as the
# libc.so.6 it loads. With the :arm64 -dev packages installed, libc6:arm64 provides both in
# /lib/aarch64-linux-gnu, and plain `qemu-aarch64` uses them. `-L /usr/aarch64-linux-gnu`
# (the cross toolchain's glibc, libc6-arm64-cross) would then pair that tree's ld.so with the
# multiarch libc.so.6 (the cross tree has no libopenblas etc., so lookups fall back to /lib):
# when the two packages differ in version (Debian 12: 2.36-8cross1 vs 2.36-9+deb12uN) the
# first pthread_create hangs. So -L is used only when there is no multiarch aarch64 loader.
if(NOT CMAKE_CROSSCOMPILING_EMULATOR)
  find_program(DGPT_QEMU_AARCH64 NAMES qemu-aarch64 qemu-aarch64-static
               DOC "user-mode QEMU for running aarch64 binaries")
  if(DGPT_QEMU_AARCH64)
    if(EXISTS /lib/ld-linux-aarch64.so.1 OR EXISTS /usr/lib/ld-linux-aarch64.so.1)
      set(CMAKE_CROSSCOMPILING_EMULATOR "${DGPT_QEMU_AARCH64}")
    else()
      set(CMAKE_CROSSCOMPILING_EMULATOR "${DGPT_QEMU_AARCH64};-L;/usr/${_dgpt_triplet}")
    endif()
  endif()
endif()
