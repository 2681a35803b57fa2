#!/usr/bin/env bash
# Runs every benchmark in bench/ for libasyncev and the peers that are installed (libev, libuv,
# libevent), and writes the results to docs/bench/: results.csv, results.json, results.png
# (drawn by bench/plot.gp) and README.md (the table, the date, the machine and the command).
#
#   scripts/bench.sh               5 rounds per benchmark: about 5 minutes on a 2-vCPU VM
#   scripts/bench.sh --quick       3 rounds and smaller counts: about 2 minutes
#   scripts/bench.sh --no-install  never run apt-get; only say what is missing
#   scripts/bench.sh --out DIR     write the results to DIR instead of docs/bench
#
# It builds a Release tree in build/bench (-DAEV_BENCH=ON -DAEV_TESTS=OFF). Every program runs
# its contenders in interleaved rounds (round 1 of each, then round 2, ...) and reports medians;
# this script collects those medians into one table. The ping-pong programs run twice: plain,
# and pinned to one CPU (taskset -c 0); see bench/README.md for why both matter on a small VM.
# Missing peers are installed with apt-get when run as root (libev-dev libuv1-dev libevent-dev,
# and gnuplot-nox for the plot); otherwise the script names the command and goes on without.
set -euo pipefail

caller_pwd=$PWD
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=scripts/deps.sh
. scripts/deps.sh

usage()
{
    sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

quick=0
install=1
out=$root/docs/bench
build=$root/build/bench
args=("$@")
while [ $# -gt 0 ]; do
    case $1 in
    --quick) quick=1 ;;
    --no-install) install=0 ;;
    --out)
        [ $# -ge 2 ] || { echo "--out needs a directory" >&2; exit 2; }
        case $2 in
        /*) out=$2 ;;
        *) out=$caller_pwd/$2 ;;
        esac
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        echo "unknown option: $1" >&2
        usage >&2
        exit 2
        ;;
    esac
    shift
done
command_line="scripts/bench.sh${args[*]:+ ${args[*]}}"

# ---- parameters: the same for every contender; --quick trades precision for time -------------

if [ "$quick" -eq 1 ]; then
    rounds=3
    pingpong_count=20000   # async_pingpong round trips per run (plain runs: ~20k/s on a VM)
    pummel_count=5000000   # async_pummel sends per run, over all sender threads
    loop_count=1000000     # loop_count iterations per run
    timers_count=1000000   # timers: a million timers (the workload's definition), 1M churn ops
    pipes_count=50000      # pipes: writes per run
    tcp_count=20000        # tcp_pingpong round trips per run, over all connections
else
    rounds=5
    pingpong_count=50000
    pummel_count=20000000
    loop_count=2000000
    timers_count=1000000
    pipes_count=100000
    tcp_count=50000
fi
pipes_sizes=100,1000,5000 # socketpairs; 5000 pairs = the issue's 10000 fds

# ---- peers and tools -----------------------------------------------------------------------

# Succeeds if a C program that includes <header> and references `expr` compiles and links
# with the given flags.
c_links()
{
    local header=$1 expr=$2 bin
    shift 2
    command -v cc >/dev/null 2>&1 || return 1
    bin=$(mktemp)
    if printf '#include <%s>\nint main(void) { return (int)(%s); }\n' "$header" "$expr" |
        cc -x c - -o "$bin" "$@" >/dev/null 2>&1; then
        rm -f "$bin"
        return 0
    fi
    rm -f "$bin"
    return 1
}

pkgconf_has() { command -v pkg-config >/dev/null 2>&1 && pkg-config --exists "$@"; }

# Prints the Debian packages that are missing for the peers and the plot, one per line.
missing_packages()
{
    command -v pkg-config >/dev/null 2>&1 || echo pkg-config
    c_links ev.h 'ev_version_major() < 0' -lev || echo libev-dev
    pkgconf_has libuv || echo libuv1-dev
    pkgconf_has libevent_core libevent_pthreads || echo libevent-dev
    command -v gnuplot >/dev/null 2>&1 || echo gnuplot-nox
}

installed_now=0
check_peers()
{
    local missing
    mapfile -t missing < <(missing_packages)
    if [ ${#missing[@]} -eq 0 ]; then
        echo "==> peers libev, libuv, libevent and gnuplot are installed"
        return 0
    fi
    echo "==> missing: ${missing[*]}"
    echo "    to install them: apt-get install ${missing[*]}"
    if [ "$install" -eq 1 ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> installing them (running as root; --no-install prevents this)"
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            "${missing[@]}"
        installed_now=1
        return 0
    fi
    echo "    going on without them: their columns stay empty"
}

if [ "$install" -eq 1 ]; then
    # cmake, a C compiler and friends, as scripts/build.sh and scripts/test.sh get them.
    # shellcheck disable=SC2119 # no extra packages needed here
    aev_install_deps
fi
check_peers
have_gnuplot=0
command -v gnuplot >/dev/null 2>&1 && have_gnuplot=1
have_taskset=0
command -v taskset >/dev/null 2>&1 && taskset -c 0 true 2>/dev/null && have_taskset=1

# ---- build -----------------------------------------------------------------------------------

jobs=$(nproc 2>/dev/null || echo 2)
mkdir -p "$build"
# A cache from before the peers were installed would remember them as missing.
[ "$installed_now" -eq 0 ] || rm -f "$build/CMakeCache.txt"
echo "==> configuring (Release, AEV_BENCH=ON, AEV_TESTS=OFF) in $build"
if ! cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DAEV_BENCH=ON -DAEV_TESTS=OFF \
    >"$build/configure.log" 2>&1; then
    cat "$build/configure.log" >&2
    exit 1
fi
grep 'asyncev bench:' "$build/configure.log" || true
echo "==> building"
if ! cmake --build "$build" -j "$jobs" >"$build/build.log" 2>&1; then
    tail -n 40 "$build/build.log" >&2
    exit 1
fi

# ---- running ---------------------------------------------------------------------------------

bin=$build/bench
raw=$out/raw
mkdir -p "$raw"
rm -f "$raw"/*.txt "$raw"/*.csv
failed=()
loads=()
started=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
t_start=$(date +%s)

# run NAME MODE PROGRAM ARGS...: MODE is plain or pinned (taskset -c 0). Output goes to the
# terminal and to raw/NAME.txt; --csv raw/NAME.csv is added for the programs that write one.
run()
{
    local name=$1 mode=$2 prefix=()
    shift 2
    if [ "$mode" = pinned ]; then
        if [ "$have_taskset" -eq 0 ]; then
            echo "==> $name: skipped (taskset not usable here)"
            return 0
        fi
        prefix=(taskset -c 0)
    fi
    local load
    load=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')
    loads+=("$name: $load")
    echo
    echo "==> $name ($mode; load average before: $load)"
    {
        echo "\$ ${prefix[*]:+${prefix[*]} }$*"
        echo "load average before: $load"
    } >"$raw/$name.txt"
    if ! (cd "$bin" && "${prefix[@]}" "$@") 2>&1 | tee -a "$raw/$name.txt"; then
        failed+=("$name")
    fi
}

run async_pingpong plain ./async_pingpong --rounds "$rounds" --count "$pingpong_count" \
    --csv "$raw/async_pingpong.csv"
run async_pingpong-pinned pinned ./async_pingpong --rounds "$rounds" --count "$pingpong_count" \
    --csv "$raw/async_pingpong-pinned.csv"
run tcp_pingpong plain ./tcp_pingpong --rounds "$rounds" --count "$tcp_count" --conns 1,100 \
    --csv "$raw/tcp_pingpong.csv"
run tcp_pingpong-pinned pinned ./tcp_pingpong --rounds "$rounds" --count "$tcp_count" \
    --conns 1,100 --csv "$raw/tcp_pingpong-pinned.csv"
run async_pummel plain ./async_pummel --rounds "$rounds" --count "$pummel_count" \
    --csv "$raw/async_pummel.csv"
run loop_count plain ./loop_count --rounds "$rounds" --count "$loop_count" \
    --csv "$raw/loop_count.csv"
run loop_count-pinned pinned ./loop_count --rounds "$rounds" --count "$loop_count" \
    --csv "$raw/loop_count-pinned.csv"
run timers plain ./timers --rounds "$rounds" --count "$timers_count" --csv "$raw/timers.csv"
run pipes plain ./pipes --rounds "$rounds" --count "$pipes_count" --sizes "$pipes_sizes" \
    --csv "$raw/pipes.csv"
run sizes plain ./sizes
elapsed=$(($(date +%s) - t_start))
load_end=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')

# ---- collecting the medians ------------------------------------------------------------------

# The programs' CSV files share one layout: name-or-variant, contender, threads/conns/pairs,
# round, count, elapsed_ns, rate, callbacks-or-setup, status; "median" rows and "#" comments
# are skipped. (timers' "million" rows carry start CPU ns in column 6 and run CPU ns in 7.)
#
# medians FILE COLUMN [COL=VALUE ...]: "contender median" for each contender, over the rounds
# that succeeded and match every COL=VALUE; the same median as the programs print.
medians()
{
    local file=$1 col=$2
    shift 2
    [ -f "$file" ] || return 0
    awk -F, -v col="$col" -v filters="$*" '
        BEGIN { ncs = split(col, cs, "+")     # "6+7": the sum of two columns per round
                nf = split(filters, f, " ")
                for (i = 1; i <= nf; i++) { split(f[i], kv, "="); fc[i] = kv[1]; fv[i] = kv[2] } }
        NR == 1 || /^#/ || $4 == "median" || $9 != "ok" { next }
        { for (i = 1; i <= nf; i++) if ($(fc[i]) != fv[i]) next
          s = 0; for (i = 1; i <= ncs; i++) s += $(cs[i])
          n[$2]++; v[$2, n[$2]] = s }
        END { for (c in n) {
                  k = n[c]
                  for (i = 1; i <= k; i++) a[i] = v[c, i]
                  for (i = 2; i <= k; i++) {            # insertion sort: a handful of rounds
                      x = a[i]; j = i - 1
                      while (j >= 1 && a[j] > x) { a[j + 1] = a[j]; j-- }
                      a[j + 1] = x }
                  m = k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
                  printf "%s %.4f\n", c, m } }' "$file"
}

csv_out=$out/results.csv
header="workload,mode,unit,better,asyncev,libev,libuv,libevent"
echo "$header,ratio_libev,ratio_libuv,ratio_libevent" >"$csv_out.tmp"

# emit LABEL MODE UNIT BETTER DECIMALS "contender value" lines (stdin): one line of results.csv.
# Ratios are "asyncev's advantage": asyncev / peer where higher is better (rates), peer / asyncev
# where lower is better (CPU time, bytes); > 1 always means asyncev did better.
emit()
{
    awk -v label="$1" -v mode="$2" -v unit="$3" -v better="$4" -v dec="$5" '
        { val[$1] = $2 }
        END {
            if (!("asyncev" in val)) exit
            a = val["asyncev"]
            line = label "," mode "," unit "," better "," sprintf("%." dec "f", a)
            split("libev libuv libevent", peers, " ")
            ratios = ""
            for (i = 1; i <= 3; i++) {
                p = peers[i]
                if ((p in val) && val[p] > 0 && a > 0) {
                    line = line "," sprintf("%." dec "f", val[p])
                    r = better == "higher" ? a / val[p] : val[p] / a
                    ratios = ratios "," sprintf("%.3f", r)
                } else {
                    line = line ","
                    ratios = ratios ","
                }
            }
            print line ratios
        }' >>"$csv_out.tmp"
}

# row LABEL MODE UNIT BETTER DECIMALS SCALE FILE COLUMN [COL=VALUE ...]: the medians of one
# workload from a program's CSV, each multiplied by SCALE (e.g. 1e-9: ns to s).
row()
{
    local label=$1 mode=$2 unit=$3 better=$4 dec=$5 scale=$6 file=$7 col=$8
    shift 8
    medians "$file" "$col" "$@" | awk -v s="$scale" '{ printf "%s %.6f\n", $1, $2 * s }' |
        emit "$label" "$mode" "$unit" "$better" "$dec"
}

# Each ping-pong workload plain, then pinned, so that the two sit next to each other.
for mode in plain pinned; do
    sfx=""
    if [ "$mode" = pinned ]; then sfx=-pinned; fi
    row "async ping-pong (2 threads)" "$mode" "round trips/s" higher 0 1 \
        "$raw/async_pingpong$sfx.csv" 7 1=pingpong
done
for c in 1 100; do
    for mode in plain pinned; do
        sfx=""
        if [ "$mode" = pinned ]; then sfx=-pinned; fi
        row "tcp ping-pong C=$c" "$mode" "round trips/s" higher 0 1 \
            "$raw/tcp_pingpong$sfx.csv" 7 1=tcp_pingpong 3="$c"
    done
done
for t in 1 2 4; do
    row "async pummel T=$t" plain "sends/s" higher 0 1 "$raw/async_pummel.csv" 7 1=pummel 3="$t"
done
row "loop_count (idle)" plain "iterations/s" higher 0 1 "$raw/loop_count.csv" 7 1=loop_count
row "loop_count (idle)" pinned "iterations/s" higher 0 1 "$raw/loop_count-pinned.csv" 7 \
    1=loop_count
row "million timers: start" plain "CPU s" lower 4 1e-9 "$raw/timers.csv" 6 1=million
row "million timers: run" plain "CPU s" lower 4 1e-9 "$raw/timers.csv" 7 1=million
row "million timers: total" plain "CPU s" lower 4 1e-9 "$raw/timers.csv" 6+7 1=million
row "timer churn" plain "ops/s" higher 0 1 "$raw/timers.csv" 7 1=churn
for n in ${pipes_sizes//,/ }; do
    for v in plain timeout; do
        row "pipes N=$n $v" plain "events/s" higher 0 1 "$raw/pipes.csv" 7 1="$v" 3="$n"
    done
done
# sizes prints a table, not a CSV: the watcher rows (asyncev libev libuv) and the loop rows.
if [ -f "$raw/sizes.txt" ]; then
    for w in io timer async; do
        awk -v w="$w" '$1 == w && $2 ~ /^[0-9]+$/ {
                print "asyncev", $2
                if ($3 ~ /^[0-9]+$/) print "libev", $3
                if ($4 ~ /^[0-9]+$/) print "libuv", $4
                exit }' "$raw/sizes.txt" | emit "sizeof $w watcher" plain bytes lower 0
    done
    awk '/^loop / { on = 1; next }
         on && $1 ~ /^(asyncev|libev|libuv)$/ && $3 ~ /^[0-9]+$/ { print $1, $3 }' \
        "$raw/sizes.txt" | emit "bytes per loop" plain bytes lower 0
fi
mv "$csv_out.tmp" "$csv_out"

# ---- the table -------------------------------------------------------------------------------

# table text|markdown: results.csv as an aligned table or a Markdown table.
table()
{
    awk -F, -v fmt="$1" '
        function num(v, d,   s, i, o, n, frac) {   # thousands separators for big numbers
            if (v == "") return "-"
            if (d > 0) return v
            s = sprintf("%.0f", v); n = length(s); o = ""
            for (i = 1; i <= n; i++) {
                o = o substr(s, i, 1)
                if ((n - i) % 3 == 0 && i < n) o = o "," }
            return o }
        function ratio(r) { return r == "" ? "-" : sprintf("%.2fx", r) }
        NR == 1 { next }
        { dec = ($5 ~ /\./) ? 1 : 0
          name = $1 ($2 == "pinned" ? " [pinned]" : "")
          if (fmt == "markdown")
              printf "| %s | %s %s | %s | %s | %s |\n", name, num($5, dec), $3, ratio($9),
                     ratio($10), ratio($11)
          else
              printf "%-38s %15s %-14s %9s %9s %9s\n", name, num($5, dec), $3, ratio($9),
                     ratio($10), ratio($11) }' "$csv_out"
}

echo
echo "==> results (median of $rounds interleaved rounds; vs peer: > 1.00x = asyncev better)"
printf '%-38s %15s %-14s %9s %9s %9s\n' workload asyncev unit "vs libev" "vs libuv" \
    "vs libevent"
table text

# ---- machine facts, JSON, plot, README -------------------------------------------------------

cpu_model=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' ||
    true)
mem=$(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo 2>/dev/null || true)
cc_path=$(sed -n 's/^CMAKE_C_COMPILER:[A-Z]*=//p' "$build/CMakeCache.txt")
cc_version=$("${cc_path:-cc}" --version 2>/dev/null | head -n 1 || true)
ver_libev=$(printf '#include <ev.h>\nEV_VERSION_MAJOR.EV_VERSION_MINOR\n' |
    cc -E -P -x c - 2>/dev/null | tail -n 1 | tr -d ' ' || true)
[[ $ver_libev =~ ^[0-9]+\.[0-9]+$ ]] || ver_libev=""
ver_libuv=$(pkg-config --modversion libuv 2>/dev/null || true)
ver_libevent=$(pkg-config --modversion libevent_core 2>/dev/null || true)
machine="$(nproc) CPUs, Linux $(uname -r), ${cpu_model:-unknown CPU}, ${mem:-? GiB}"

json_str() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
json_or_null() { if [ -n "$1" ]; then json_str "$1"; else printf null; fi; }
{
    echo "{"
    echo "  \"date\": $(json_str "$started"),"
    echo "  \"command\": $(json_str "$command_line"),"
    echo "  \"rounds\": $rounds,"
    echo "  \"quick\": $([ "$quick" -eq 1 ] && echo true || echo false),"
    echo "  \"seconds\": $elapsed,"
    echo "  \"machine\": {\"nproc\": $(nproc), \"kernel\": $(json_str "$(uname -r)"),"
    echo "              \"cpu\": $(json_str "$cpu_model"), \"memory\": $(json_str "$mem"),"
    echo "              \"compiler\": $(json_str "$cc_version")},"
    echo "  \"peers\": {\"libev\": $(json_or_null "$ver_libev"), \"libuv\": $(json_or_null \
        "$ver_libuv"), \"libevent\": $(json_or_null "$ver_libevent")},"
    echo "  \"load_average_end\": $(json_str "$load_end"),"
    sep=""
    printf '  "failed": ['
    for f in "${failed[@]}"; do
        printf '%s%s' "$sep" "$(json_str "$f")"
        sep=", "
    done
    echo "],"
    echo "  \"ratio\": \"asyncev's advantage over the peer: asyncev / peer for rates," \
        "peer / asyncev for CPU time and bytes; > 1 means asyncev better\","
    echo "  \"results\": ["
    awk -F, 'NR == 1 { next }
        function v(x) { return x == "" ? "null" : x }  # the CSV cells are JSON numbers
        { if (n++) printf ",\n"
          printf "    {\"workload\": \"%s\", \"mode\": \"%s\", ", $1, $2
          printf "\"unit\": \"%s\", \"better\": \"%s\", ", $3, $4
          printf "\"asyncev\": %s, \"libev\": %s, ", v($5), v($6)
          printf "\"libuv\": %s, \"libevent\": %s, ", v($7), v($8)
          printf "\"ratio\": {\"libev\": %s, ", v($9)
          printf "\"libuv\": %s, \"libevent\": %s}}", v($10), v($11) }
        END { printf "\n" }' "$csv_out"
    echo "  ]"
    echo "}"
} >"$out/results.json"

rm -f "$out/results.png"
if [ "$have_gnuplot" -eq 1 ]; then
    gnuplot -e "datafile='$csv_out'; outfile='$out/results.png'; \
subtitle='$(date -u +%F), $machine'" "$root/bench/plot.gp"
else
    echo "==> gnuplot not installed: no results.png (apt-get install gnuplot-nox)"
fi

# The target lines each program printed, prefixed with the run's name.
targets=$(for f in "$raw"/*.txt; do
    grep -E '^ *(pummel )?target' "$f" | sed "s|^ *|$(basename "$f" .txt): |" || true
done)
{
    echo "# Benchmark results"
    echo
    echo "Generated by \`scripts/bench.sh\`; do not edit by hand (run it again instead)."
    echo "What each workload measures, and why the numbers are what they are:"
    echo "[bench/README.md](../../bench/README.md)."
    echo
    echo "* Date: $started (took $((elapsed / 60)) min $((elapsed % 60)) s)"
    echo "* Command: \`$command_line\` ($rounds interleaved rounds per benchmark, medians)"
    echo "* Machine: \`nproc\` = $(nproc), \`uname -r\` = $(uname -r)," \
        "CPU: ${cpu_model:-unknown}, ${mem:-? GiB} RAM"
    echo "* Compiler: ${cc_version:-unknown}; Release build in \`build/bench\`"
    echo "* Peers: libev ${ver_libev:-not installed}, libuv ${ver_libuv:-not installed}," \
        "libevent ${ver_libevent:-not installed}"
    echo "* Load average (1, 5, 15 min) before each program, and at the end: other work on the"
    echo "  machine (builds, tests) adds noise, most of all to the plain (unpinned) runs."
    echo
    for l in "${loads[@]}"; do echo "  * $l"; done
    echo "  * end: $load_end"
    if [ ${#failed[@]} -gt 0 ]; then
        echo
        echo "**Failed (a run crashed, timed out or failed its checks): ${failed[*]}.** See raw/."
    fi
    echo
    echo "\"vs peer\" is asyncev's advantage: asyncev / peer for rates, peer / asyncev for CPU"
    echo "time and bytes, so above 1.00x asyncev did better. \"[pinned]\": run under"
    echo "\`taskset -c 0\` (every thread on one CPU); the others are plain. \"-\": the peer is"
    echo "not a contender in that workload (libevent has no idle watcher, and timers and sizes are"
    echo "compared with libev and libuv only) or is not installed."
    echo
    echo "| workload | asyncev | vs libev | vs libuv | vs libevent |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    table markdown
    echo
    if [ -f "$out/results.png" ]; then
        echo "![asyncev's advantage per workload, log scale](results.png)"
        echo
    fi
    echo "## Targets, as each program judged them"
    echo
    echo '```'
    printf '%s\n' "$targets"
    echo '```'
    echo
    echo "Files: [results.csv](results.csv) (the table), [results.json](results.json) (the"
    echo "table and the facts above), [raw/](raw/) (each program's full output with min and max"
    echo "per contender, and its per-round CSV)."
} >"$out/README.md"

echo
echo "==> wrote $out/README.md, results.csv, results.json$([ -f "$out/results.png" ] &&
    echo ", results.png"), raw/ ($((elapsed / 60)) min $((elapsed % 60)) s of benchmarks)"
if [ ${#failed[@]} -gt 0 ]; then
    echo "==> FAILED: ${failed[*]} (see $raw)" >&2
    exit 1
fi
