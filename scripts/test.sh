#!/usr/bin/env bash
# Runs the test matrix, each configuration in its own build directory under ./build:
#   ci-plain  gcc, -Werror: every test, then the install is used by outside programs
#             (examples/showcase.c through pkg-config, tests/consumer through find_package), and
#             the Debian package from `cpack -G DEB` is installed with dpkg, used the same way
#             from /usr, and removed (as root only; skipped otherwise)
#   ci-asan   gcc, AddressSanitizer + UndefinedBehaviorSanitizer, -Werror: every test
#   ci-tsan   clang, ThreadSanitizer, -Werror: the tests labelled "thread"
#   soak      the soak test of ci-plain for $AEV_CI_SOAK_SECONDS (default 120) on epoll, and a
#             quarter of that on poll with the self-pipe wakeup (CTest runs it for 20 s)
#   fuzz      the libFuzzer API harness (clang) for $AEV_CI_FUZZ_SECONDS (default 120), then the
#             corpus replayed (scripts/fuzz.sh, in build/fuzz)
#   valgrind  every test program under memcheck (scripts/valgrind.sh, in build/valgrind)
# Set AEV_CI_QUICK=1 to skip the last three (the long-running ones) on a developer machine.
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
    # The prefix was given at configure time (asyncev.pc is written at install time, so
    # `--prefix` would work too).
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

# The Debian package must work from the system paths alone: `cpack -G DEB` in DIR, `dpkg -i`,
# then examples/showcase.c through a plain `pkg-config --cflags --libs asyncev`, tests/consumer
# through find_package() without CMAKE_PREFIX_PATH and tests/consumer_make (pkg-config and a
# Makefile, shared and static); at the end, whatever happened, `dpkg --purge` (-r, and forget
# the package) leaves the machine as it was. Returns 2 (skipped) where packages cannot be
# installed: not root, or no dpkg.
check_deb()
{
    local dir=$1 pkg=libasyncev-dev
    local out=$dir/deb
    if [ "$(id -u)" -ne 0 ] || ! command -v dpkg >/dev/null 2>&1 ||
        ! command -v cpack >/dev/null 2>&1; then
        echo "==> SKIPPING the Debian package stage: it needs root, dpkg and cpack" \
            "(uid $(id -u); dpkg: $(command -v dpkg || echo missing))"
        return 2
    fi
    echo "==> cpack -G DEB in $dir"
    rm -rf "$out"
    mkdir -p "$out"
    (cd "$dir" && cpack -G DEB -B "$out/cpack") >"$out/cpack.log" 2>&1 || {
        cat "$out/cpack.log"
        return 1
    }
    local debs=("$out"/cpack/*.deb)
    if [ ${#debs[@]} -ne 1 ] || [ ! -f "${debs[0]}" ]; then
        echo "error: expected one .deb in $out/cpack, found: ${debs[*]}" >&2
        return 1
    fi
    local deb=${debs[0]} version
    version=$(dpkg-deb --field "$deb" Version) || return 1
    dpkg-deb --field "$deb" Package Version Architecture Depends Maintainer | sed 's/^/    /'

    # The whole install/use/remove sequence runs in a subshell whose EXIT trap removes the
    # package. A lock keeps two runs on one machine from removing each other's install.
    (
        exec 9>/tmp/libasyncev-deb-stage.lock
        if command -v flock >/dev/null 2>&1 && ! flock -w 300 9; then
            echo "error: another run holds /tmp/libasyncev-deb-stage.lock" >&2
            exit 1
        fi
        if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q ' installed$'; then
            echo "error: $pkg is already installed; this stage installs and removes it:" \
                "run 'dpkg --purge $pkg' first if it is a leftover" >&2
            exit 1
        fi
        # --purge is dpkg -r that also forgets the package, leaving no "rc" entry behind.
        trap 'echo "==> dpkg --purge $pkg"; dpkg --purge "$pkg" >/dev/null ||
              echo "warning: dpkg --purge $pkg failed; remove it by hand" >&2' EXIT
        echo "==> dpkg -i $(basename "$deb")"
        dpkg -i "$deb" >/dev/null || exit 1
        # Nothing but the system's default search paths from here on.
        unset PKG_CONFIG_PATH PKG_CONFIG_LIBDIR CMAKE_PREFIX_PATH LD_LIBRARY_PATH LIBRARY_PATH \
            CPATH C_INCLUDE_PATH

        local libdir prefix
        prefix=$(pkg-config --variable=prefix asyncev) || exit 1
        libdir=$(pkg-config --variable=libdir asyncev) || exit 1
        if [ "$prefix" != /usr ] || [ "$(pkg-config --modversion asyncev)" != "$version" ]; then
            echo "error: pkg-config finds asyncev $(pkg-config --modversion asyncev) in" \
                "$prefix, not the package's $version in /usr" >&2
            exit 1
        fi
        # The real file, its SONAME link and the development link, all from the package.
        local major=${version%%.*} f
        for f in "$libdir/libasyncev.so.$version" "$libdir/libasyncev.so.$major" \
            "$libdir/libasyncev.so" "$libdir/libasyncev.a" /usr/include/asyncev.h \
            "$libdir/pkgconfig/asyncev.pc" "$libdir/cmake/asyncev/asyncevConfig.cmake"; do
            dpkg -S "$f" >/dev/null 2>&1 || {
                echo "error: $f is not installed by $pkg" >&2
                exit 1
            }
        done
        if ! readelf -d "$libdir/libasyncev.so.$version" |
            grep -q "SONAME.*\[libasyncev\.so\.$major\]"; then
            echo "error: $libdir/libasyncev.so.$version has no SONAME libasyncev.so.$major" >&2
            exit 1
        fi

        echo "==> examples/showcase.c via pkg-config from /usr"
        # shellcheck disable=SC2046 # pkg-config's output is meant to be split into words
        gcc -O2 -Wall -Wextra -Werror $(pkg-config --cflags asyncev) -o "$out/showcase" \
            "$root/examples/showcase.c" $(pkg-config --libs asyncev) -pthread || exit 1
        # The program must run on the packaged library, found without any extra path. (With a
        # merged /usr, the loader may name it /lib/...: compare the files, not the names.)
        local loaded
        loaded=$(ldd "$out/showcase" |
            sed -n "s/^[[:space:]]*libasyncev\.so\.$major => \([^ ]*\).*/\1/p")
        if [ -z "$loaded" ] || [ "$(readlink -f "$loaded")" != \
            "$(readlink -f "$libdir/libasyncev.so.$version")" ]; then
            echo "error: showcase does not load the packaged $libdir/libasyncev.so.$version:" >&2
            ldd "$out/showcase" >&2
            exit 1
        fi
        "$out/showcase" || exit 1

        echo "==> tests/consumer_make (pkg-config, Makefile) from /usr"
        make -B -s -C "$root/tests/consumer_make" OUT="$out" || exit 1
        "$out/consumer_pc" || exit 1
        "$out/consumer_pc_static" || exit 1
        if ldd "$out/consumer_pc_static" | grep -q libasyncev; then
            echo "error: consumer_pc_static loads libasyncev.so: not linked statically" >&2
            exit 1
        fi

        echo "==> tests/consumer via find_package(asyncev) from /usr"
        cmake -S "$root/tests/consumer" -B "$out/consumer" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
            >/dev/null || exit 1
        local found
        found=$(sed -n 's/^asyncev_DIR:PATH=//p' "$out/consumer/CMakeCache.txt")
        if [ "$found" != "$libdir/cmake/asyncev" ]; then
            echo "error: find_package found asyncev in '$found', not $libdir/cmake/asyncev" >&2
            exit 1
        fi
        cmake --build "$out/consumer" -j "$jobs" >/dev/null || exit 1
        "$out/consumer/consumer" || exit 1
        "$out/consumer/consumer_static" || exit 1
    ) || return 1
    # The trap ran: nothing of the package may be left, not even dpkg's record of it.
    if dpkg-query -W "$pkg" >/dev/null 2>&1 || [ -e /usr/include/asyncev.h ]; then
        echo "error: $pkg is still known to dpkg after dpkg --purge" >&2
        return 1
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
    rc=0
    check_deb "$plain" || rc=$?
    if [ "$rc" -eq 2 ]; then
        summary+=("SKIP  plain: .deb stage (needs root and dpkg)")
    else
        record "plain: cpack -G DEB, dpkg -i, consumers from /usr, dpkg --purge" "$rc"
    fi
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

# ---- long-running stages --------------------------------------------------------------------
if [ "${AEV_CI_QUICK:-0}" = 1 ]; then
    summary+=("SKIP  soak, fuzz, valgrind (AEV_CI_QUICK=1)")
else
    # soak: the longer run the issue asks of CI, on the build already tested above.
    soak_secs=${AEV_CI_SOAK_SECONDS:-120}
    if [ -x "$plain/tests/soak/soak" ]; then
        rc=0
        echo "==> soak: ${soak_secs} s on epoll"
        AEV_BACKEND=epoll "$plain/tests/soak/soak" --seconds "$soak_secs" || rc=$?
        echo "==> soak: $((soak_secs / 4)) s on poll with the self-pipe wakeup"
        AEV_BACKEND=poll AEVT_WAKEUP=pipe "$plain/tests/soak/soak" --seconds $((soak_secs / 4)) ||
            rc=$?
        record "soak: ${soak_secs} s epoll + $((soak_secs / 4)) s poll/pipe (RSS, fds, answers, timers)" "$rc"
    else
        record "soak: program missing from $plain" 1
    fi
    rc=0
    scripts/fuzz.sh "${AEV_CI_FUZZ_SECONDS:-120}" || rc=$?
    record "fuzz: libFuzzer ${AEV_CI_FUZZ_SECONDS:-120} s against the model, corpus replay" "$rc"
    rc=0
    scripts/valgrind.sh || rc=$?
    record "valgrind: memcheck over the test suite" "$rc"
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
