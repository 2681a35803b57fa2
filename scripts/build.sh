#!/usr/bin/env bash
# Quick start: installs missing build dependencies, builds libasyncev (Release) in ./build,
# installs it into ./build/prefix, then builds and runs examples/showcase.c against that install
# through pkg-config, the way an outside program would use the library. Safe to run again.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=scripts/deps.sh
. scripts/deps.sh
# shellcheck disable=SC2119 # no extra packages needed here
aev_install_deps

build=$root/build
prefix=$build/prefix
jobs=$(nproc 2>/dev/null || echo 2)

echo "==> configuring (Release) in $build"
# A fixed libdir keeps the pkg-config path predictable (no lib/x86_64-linux-gnu).
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_INSTALL_LIBDIR=lib
echo "==> building"
cmake --build "$build" -j "$jobs"
echo "==> installing into $prefix"
cmake --install "$build" >/dev/null

echo "==> building examples/showcase.c with pkg-config against $prefix"
mkdir -p "$build/examples"
PKG_CONFIG_PATH=$prefix/lib/pkgconfig make -C examples OUT="$build/examples"
echo "==> running the showcase"
# The Makefile embeds the library directory as rpath; LD_LIBRARY_PATH is belt and braces.
LD_LIBRARY_PATH=$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} "$build/examples/showcase"

echo
echo "Built: $prefix/lib/libasyncev.so (and libasyncev.a), header in $prefix/include."
echo "Run the tests with scripts/test.sh, or: ctest --test-dir build --output-on-failure"
