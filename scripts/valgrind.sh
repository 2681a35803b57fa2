#!/usr/bin/env bash
# Runs the test suite under valgrind's memcheck and fails on any memory error or leak:
#   build/valgrind   $CC (default gcc), RelWithDebInfo, no sanitizers (valgrind cannot run
#                    sanitized programs), tests and examples
# Every test program runs under memcheck through `ctest -T memcheck`, two at a time (-j, default
# the number of CPUs, at least 2); the soak test too, for its default 20 s. On the project's
# 2-vCPU VM the memcheck run takes 2 to 3 minutes (1 min 55 s quiet, 3 min with other work on
# the machine); nothing needs shortening under valgrind today.
#
# Usage: scripts/valgrind.sh [extra ctest arguments, e.g. -R async]
# Installs missing build dependencies first (see deps.sh) and valgrind if it is missing.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=scripts/deps.sh
. scripts/deps.sh
aev_install_deps

if ! command -v valgrind >/dev/null 2>&1; then
    echo "==> installing valgrind"
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends valgrind; } || {
        echo "error: valgrind is needed; please install it" >&2
        exit 1
    }
fi

jobs=$(nproc 2>/dev/null || echo 2)
[ "$jobs" -ge 2 ] || jobs=2
dir=$root/build/valgrind

# memcheck's options:
#  --leak-check=full --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect
#      leaks that no pointer reaches are errors; "possible" (interior pointers, e.g. the DTV of a
#      thread that still runs) and "still reachable" (globals at exit) are not, and not printed.
#  --error-exitcode=99  any error fails the test (99 is used by no test program).
#  --track-fds=no  open fds at exit are not reported: several tests keep fds open on purpose
#      until exit, and the soak test checks its fds itself.
#  --trace-children=no  a program started by exec (none of ours does so today; a shell or
#      /bin/true would be) is not ours to check and would only make the run slower. Children
#      made by fork() without exec are memchecked all the same, with their reports in the same
#      log (--child-silent-after-fork=no): an error there exits the child with 99, which its
#      parent's test then sees, and the scan below catches whatever a parent does not check.
#  -q  only errors are printed, so any "==pid==" line in a log is one.
# valgrind 3.19 (Debian 12) does not know epoll_pwait2 (syscall 441) nor pidfd_open (434): it
# prints a warning for each call and returns ENOSYS, and the library falls back to epoll_wait()
# and to SIGCHLD. Under such a valgrind those fallbacks are what memcheck sees, not the pidfd
# and epoll_pwait2 paths (the plain and sanitizer runs of scripts/test.sh cover those).
vg_opts="-q --tool=memcheck --leak-check=full --errors-for-leak-kinds=definite,indirect"
vg_opts+=" --show-leak-kinds=definite,indirect --error-exitcode=99 --track-fds=no"
vg_opts+=" --trace-children=no --child-silent-after-fork=no --num-callers=40"
# tests/valgrind.supp does not exist: nothing needed suppressing. If it ever does, each entry
# must say why in a comment, and it is used here.
if [ -f "$root/tests/valgrind.supp" ]; then
    vg_opts+=" --suppressions=$root/tests/valgrind.supp"
fi

# Not run under memcheck, because they are not programs of ours: exports and abi (sh with nm and
# readelf over the built library), docs (bash over the sources) and version.header (cmake -P).
# The benchmarks' smoke tests (label bench) are not configured here (AEV_BENCH is off).
exclude='^(exports|abi|docs|version\.header)$'

echo "==> configuring $dir"
CC=${CC:-gcc} cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAEV_TESTS=ON \
    -DAEV_EXAMPLES=ON -DAEV_BENCH=OFF -DAEV_SANITIZE=
echo "==> building $dir"
cmake --build "$dir" -j "$jobs"

# Stale logs of an earlier run would confuse the scan below.
rm -f "$dir"/Testing/Temporary/MemoryChecker.*.log
echo "==> ctest -T memcheck in $dir (valgrind $(valgrind --version))"
start=$(date +%s)
rc=0
# ctest says "Cannot find file: .../DartConfiguration.tcl": expected, the project has no CDash
# setup (include(CTest)); the memcheck settings come with --overwrite instead.
# AEVT_SLOW=1: the test programs' slow mode (tests/testutil.h), in case they were built where
# <valgrind/valgrind.h> is missing and cannot tell by themselves that they run under valgrind.
AEVT_SLOW=1 ctest --test-dir "$dir" -T memcheck \
    --overwrite MemoryCheckCommand="$(command -v valgrind)" \
    --overwrite MemoryCheckCommandOptions="$vg_opts" \
    --output-on-failure --no-tests=error -j "$jobs" -E "$exclude" "$@" || rc=$?
elapsed=$(($(date +%s) - start))

# Any report in any log is an error, also one from a forked child whose exit status nobody
# checked; show them all.
bad=$(grep -l '^==[0-9]*==' "$dir"/Testing/Temporary/MemoryChecker.*.log 2>/dev/null || true)
if [ -n "$bad" ]; then
    for log in $bad; do
        echo
        echo "==> memcheck reports in $log:"
        grep -v '^--[0-9]*-- ' "$log"
    done
    rc=1
fi

echo
echo "==> valgrind memcheck run: $((elapsed / 60)) min $((elapsed % 60)) s"
if [ "$rc" -ne 0 ]; then
    echo "RESULT: FAILED (memcheck errors or failed tests above)"
    exit 1
fi
echo "RESULT: all passed under memcheck"
