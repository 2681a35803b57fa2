#!/usr/bin/env bash
# Runs the API fuzzer (tests/fuzz/fuzz_api.c: libFuzzer + a reference model of the documented
# semantics) for a bounded time, then replays the repository's corpus.
#
#   scripts/fuzz.sh [SECONDS]        default 120
#
# Environment: FUZZ_JOBS=2 runs two fuzzing processes (-jobs/-workers; the machine has two
# vCPUs, so no more); FUZZ_ARGS adds libFuzzer flags (e.g. FUZZ_ARGS=-seed=1).
#
# The build is clang with -DAEV_FUZZ=ON in build/fuzz. The fuzzer works on a copy of
# tests/fuzz/corpus (and regressions/) in a scratch directory, so the repository's corpus is never
# modified; the scratch directory is printed and kept. Exit status: non-zero if the fuzzer found a
# crash, a model mismatch or a hang (the crashing input's path is printed), or if the replay of
# the repository's corpus fails.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
secs=${1:-120}
jobs=${FUZZ_JOBS:-1}
if ! [[ $secs =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
    echo "usage: $0 [SECONDS]" >&2
    exit 2
fi
if [ "$jobs" -gt 2 ]; then
    jobs=2
fi
command -v clang >/dev/null 2>&1 || {
    echo "error: clang is needed for libFuzzer" >&2
    exit 1
}

build=$root/build/fuzz
echo "==> configuring $build (clang, AEV_FUZZ=ON)"
CC=clang cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAEV_FUZZ=ON \
    -DAEV_TESTS=ON -DAEV_WERROR=ON -DAEV_EXAMPLES=OFF >/dev/null
targets=(fuzz_api fuzz_replay)
if grep -q '^AEV_KQUEUE_EMU:BOOL=ON' "$build/CMakeCache.txt"; then
    targets+=(fuzz_replay_kqemu)
fi
echo "==> building ${targets[*]}"
cmake --build "$build" -j 2 --target "${targets[@]}"

bin=$build/tests/fuzz
scratch=$(mktemp -d "${TMPDIR:-/tmp}/aev-fuzz.XXXXXX")
mkdir -p "$scratch/corpus" "$scratch/artifacts"
cp "$root"/tests/fuzz/corpus/* "$scratch/corpus/"
if [ -d "$root/tests/fuzz/regressions" ]; then
    cp "$root"/tests/fuzz/regressions/* "$scratch/corpus/" 2>/dev/null || true
fi

# -timeout=0: libFuzzer's SIGALRM check is off; the harness has its own watchdog (20 s per
# input), and a timer signal would interrupt the loop's poll, which the model checks.
flags=(-max_total_time="$secs" -max_len=1024 -timeout=0 -print_final_stats=1
    -artifact_prefix="$scratch/artifacts/")
if [ "$jobs" -gt 1 ]; then
    flags+=(-jobs="$jobs" -workers="$jobs")
fi
# shellcheck disable=SC2206 # FUZZ_ARGS is a list of flags
flags+=(${FUZZ_ARGS:-})

echo "==> fuzzing for ${secs} s (${jobs} process(es)); scratch directory $scratch"
rc=0
(cd "$scratch" && "$bin/fuzz_api" "${flags[@]}" "$scratch/corpus") >"$scratch/fuzz.log" 2>&1 ||
    rc=$?
# With -jobs, each process writes fuzz-<n>.log in the scratch directory; otherwise fuzz.log.
logs=("$scratch"/fuzz-*.log)
[ -f "${logs[0]}" ] || logs=("$scratch/fuzz.log")
for log in "${logs[@]}"; do
    grep -E '^#[0-9]+.*(DONE|pulse)' "$log" | tail -1 || true
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec)' "$log" || true
done

found=()
for f in "$scratch"/artifacts/*; do
    [ -e "$f" ] && found+=("$f")
done
if [ "$rc" -ne 0 ] || [ ${#found[@]} -ne 0 ]; then
    echo
    echo "==> FAILED: the fuzzer stopped with status $rc"
    grep -h -A40 -E 'MODEL MISMATCH|TIMEOUT|ERROR: AddressSanitizer|runtime error|deadly signal' \
        "$scratch"/fuzz*.log | head -80 || true
    for f in "${found[@]}"; do
        echo "crashing input: $f"
    done
    echo "replay one with: AEV_FUZZ_TRACE=1 $bin/fuzz_replay <input>" \
        "(fuzz_replay_kqemu if its backend is kqueue)"
    exit 1
fi
echo "==> no crash or mismatch; new corpus in $scratch/corpus"
echo "    (keep useful inputs with: $bin/fuzz_api -merge=1 $root/tests/fuzz/corpus $scratch/corpus)"

echo "==> replaying the repository's corpus"
"$bin/fuzz_replay" "$root/tests/fuzz/corpus" "$root/tests/fuzz/regressions"
if [ -x "$bin/fuzz_replay_kqemu" ]; then
    "$bin/fuzz_replay_kqemu" "$root/tests/fuzz/corpus" "$root/tests/fuzz/regressions"
fi
echo "==> fuzz: all passed"
