#!/usr/bin/env bash
# Runs the test matrix, each configuration in its own build directory under ./build:
#   ci-plain  gcc, -Werror: every test, then the install is used by outside programs
#             (examples/showcase.c through pkg-config, tests/consumer through find_package)
#   ci-asan   gcc, AddressSanitizer + UndefinedBehaviorSanitizer, -Werror: every test
#   ci-tsan   clang, ThreadSanitizer, -Werror: the tests labelled "thread"
# Every configuration runs even if an earlier one failed; a summary follows, and the exit status
# is non-zero if anything failed. Installs missing build dependencies first (see deps.sh).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=scripts/deps.sh
. scripts/deps.sh
# clang for the TSan run: GCC's TSan does not support atomic_thread_fence (GCC 12 warns, -Wtsan),
# and a second compiler's warnings under -Werror catch more than one.
aev_install_deps tsan

jobs=$(nproc 2>/dev/null || echo 2)
[ "$jobs" -ge 2 ] || jobs=2

summary=()
failed=0

# Records the outcome of one stage for the summary.
record()
{
    local name=$1 rc=$2
    if [ "$rc" -eq 0 ]; then
        summary+=("PASS  $name")
    else
        summary+=("FAIL  $name")
        failed=1
    fi
}

# Configures and builds one configuration: configure_and_build DIR CC [cmake args...]
configure_and_build()
{
    local dir=$1 cc=$2
    shift 2
    echo
    echo "==> configuring $dir (CC=$cc $*)"
    CC=$cc cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAEV_TESTS=ON \
        -DAEV_EXAMPLES=ON "$@" || return 1
    echo "==> building $dir"
    cmake --build "$dir" -j "$jobs" || return 1
}

# Runs ctest in DIR with any extra arguments; fails if no test matched.
run_ctest()
{
    local dir=$1
    shift
    echo "==> testing $dir"
    ctest --test-dir "$dir" --output-on-failure --no-tests=error -j "$jobs" "$@"
}

# The install tree must work for outside programs: pkg-config (examples/Makefile) and CMake's
# find_package (tests/consumer).
check_install()
{
    local dir=$1
    local prefix=$dir/prefix
    echo "==> installing $dir into $prefix"
    rm -rf "$prefix"
    # The prefix was given at configure time: asyncev.pc records it then.
    cmake --install "$dir" >/dev/null || return 1
    local pcdir=$prefix/lib/pkgconfig
    echo "==> examples/showcase.c via pkg-config ($pcdir)"
    mkdir -p "$dir/pkgconfig-showcase"
    # -B: always rebuild, so that this run really compiles against this prefix.
    PKG_CONFIG_PATH=$pcdir make -B -C "$root/examples" OUT="$dir/pkgconfig-showcase" \
        CFLAGS="-O2 -Wall -Wextra -Werror" || return 1
    "$dir/pkgconfig-showcase/showcase" || return 1
    echo "==> tests/consumer via find_package(asyncev)"
    cmake -S "$root/tests/consumer" -B "$dir/consumer" -DCMAKE_PREFIX_PATH="$prefix" \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null || return 1
    cmake --build "$dir/consumer" -j "$jobs" || return 1
    "$dir/consumer/consumer" || return 1
    if [ -x "$dir/consumer/consumer_static" ]; then
        "$dir/consumer/consumer_static" || return 1
    fi
}

# ---- plain ----------------------------------------------------------------------------------
plain=$root/build/ci-plain
# The benchmarks are built here too and smoke-tested with a tiny count (label bench): whichever
# peers (libev, libuv, libevent) happen to be installed are included, none is required.
if configure_and_build "$plain" gcc -DAEV_WERROR=ON -DAEV_BENCH=ON \
    -DCMAKE_INSTALL_PREFIX="$plain/prefix" -DCMAKE_INSTALL_LIBDIR=lib; then
    record "plain: build (gcc, -Werror)" 0
    rc=0
    run_ctest "$plain" || rc=$?
    record "plain: ctest (all tests, every backend)" "$rc"
    rc=0
    check_install "$plain" || rc=$?
    record "plain: install, showcase via pkg-config, consumer via find_package" "$rc"
else
    record "plain: build (gcc, -Werror)" 1
fi

# ---- ASan + UBSan ---------------------------------------------------------------------------
asan=$root/build/ci-asan
# LeakSanitizer stops the process with ptrace-like means that some containers deny; it then
# fails every program at exit. Leak checking is dropped, loudly, only where it cannot work.
lsan_works()
{
    local probe rc=0
    probe=$(mktemp -d)
    printf 'int main(void) { return 0; }\n' >"$probe/p.c"
    if gcc -fsanitize=address "$probe/p.c" -o "$probe/p" 2>/dev/null; then
        ASAN_OPTIONS=detect_leaks=1 "$probe/p" >"$probe/out" 2>&1 || rc=$?
        [ "$rc" -eq 0 ] || cat "$probe/out" >&2
    fi
    rm -rf "$probe"
    return "$rc"
}
detect_leaks=1
if ! lsan_works; then
    detect_leaks=0
    echo "warning: LeakSanitizer does not work here; ASan runs without leak checks" >&2
    summary+=("NOTE  asan: LeakSanitizer unavailable on this machine, leak checks skipped")
fi
if configure_and_build "$asan" gcc -DAEV_SANITIZE=address -DAEV_WERROR=ON; then
    record "asan+ubsan: build (gcc)" 0
    rc=0
    ASAN_OPTIONS=detect_leaks=$detect_leaks:abort_on_error=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        run_ctest "$asan" || rc=$?
    record "asan+ubsan: ctest (all tests)" "$rc"
else
    record "asan+ubsan: build (gcc)" 1
fi

# ---- TSan -----------------------------------------------------------------------------------
tsan=$root/build/ci-tsan
# Older TSan runtimes cannot cope with the large mmap randomisation of recent kernels
# ("unexpected memory mapping"); running without ASLR avoids that where setarch works.
tsan_wrap=()
if command -v setarch >/dev/null 2>&1 && setarch "$(uname -m)" -R true 2>/dev/null; then
    tsan_wrap=(setarch "$(uname -m)" -R)
fi
if configure_and_build "$tsan" clang -DAEV_SANITIZE=thread -DAEV_WERROR=ON; then
    record "tsan: build (clang)" 0
    rc=0
    TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
        "${tsan_wrap[@]}" ctest --test-dir "$tsan" --output-on-failure --no-tests=error \
        -j "$jobs" -L thread || rc=$?
    record "tsan: ctest -L thread" "$rc"
else
    record "tsan: build (clang)" 1
fi

# ---- summary --------------------------------------------------------------------------------
echo
echo "================ libasyncev test summary ================"
printf '%s\n' "${summary[@]}"
echo "========================================================="
if [ "$failed" -ne 0 ]; then
    echo "RESULT: FAILED (see the output above for details)"
    exit 1
fi
echo "RESULT: all passed"
