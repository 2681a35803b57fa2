# Draws docs/bench/results.png from docs/bench/results.csv (both written by scripts/bench.sh).
#
#   gnuplot -e "datafile='docs/bench/results.csv'; outfile='docs/bench/results.png'; \
#               subtitle='2 vCPU, Linux 6.18'" bench/plot.gp
#
# One row per workload, one bar per peer: asyncev's advantage over that peer, drawn from the
# 1.0 line (parity) on a log scale, so 2x faster and 2x slower are bars of the same length on
# either side. The CSV's ratio columns are already "higher is better for asyncev" for every
# workload (rate: asyncev / peer; CPU time or bytes: peer / asyncev). An empty cell (peer not
# built in, or not a contender) draws no bar.
#
# Columns used: 1 workload, 2 mode (plain | pinned), 9 ratio_libev, 10 ratio_libuv,
# 11 ratio_libevent.

if (!exists("datafile")) datafile = 'docs/bench/results.csv'
if (!exists("outfile")) outfile = 'docs/bench/results.png'
if (!exists("subtitle")) subtitle = ''

set datafile separator ","
stats datafile skip 1 using 0 nooutput
rows = STATS_records

set terminal pngcairo size 1100, 190 + 30 * rows font "sans,10" noenhanced
set output outfile

set title "libasyncev against its peers, per workload (median of interleaved rounds)\n".subtitle
xmin = 0.1
xmax = 20
set logscale x 2
set xrange [xmin:xmax]
set xtics ("1/8" 0.125, "1/4" 0.25, "1/2" 0.5, "1" 1, "2" 2, "4" 4, "8" 8, "16" 16)
set xlabel "asyncev's advantage over the peer, log scale:  " . \
           "< 1 the peer did better,  > 1 asyncev did better"
set yrange [rows - 0.5:-0.5]
set ytics scale 0
set grid xtics
set key below horizontal
set bmargin 6
set style fill solid 0.85 noborder

# Parity.
set arrow 1 from 1, graph 0 to 1, graph 1 nohead lw 2 lc rgb "black"

# A bar from 1 to r (either direction), clipped to the x range so that an outlier still shows.
clip(r) = r < xmin ? xmin : (r > xmax ? xmax : r)
lo(c) = valid(c) ? (column(c) < 1 ? clip(column(c)) : 1) : NaN
hi(c) = valid(c) ? (column(c) < 1 ? 1 : clip(column(c))) : NaN
label(c) = strcol(1) . (strcol(2) eq "pinned" ? "  [pinned]" : "")
h = 0.26

# The first element only places the workload names (every row, whichever peers it has).
plot datafile skip 1 using (1):0:ytic(label(0)) with points ps 0 notitle, \
     '' skip 1 using (valid(9) ? 1 : NaN):0:(lo(9)):(hi(9)):($0 - 1.5 * h):($0 - 0.5 * h) \
         with boxxyerror lc rgb "#1f77b4" title "vs libev", \
     '' skip 1 using (valid(10) ? 1 : NaN):0:(lo(10)):(hi(10)):($0 - 0.5 * h):($0 + 0.5 * h) \
         with boxxyerror lc rgb "#ff7f0e" title "vs libuv", \
     '' skip 1 using (valid(11) ? 1 : NaN):0:(lo(11)):(hi(11)):($0 + 0.5 * h):($0 + 1.5 * h) \
         with boxxyerror lc rgb "#2ca02c" title "vs libevent"
