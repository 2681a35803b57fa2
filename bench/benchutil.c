/*
 * The harness shared by the benchmark programs; see benchutil.h.
 */
#include "benchutil.h"

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int64_t bu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int bu_fail(bu_result *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, sizeof r->err, fmt, ap);
    va_end(ap);
    r->ok = 0;
    return -1;
}

/* ---- options ------------------------------------------------------------------------------ */

static void usage(FILE *out, const char *prog, const char *what, int with_threads)
{
    fprintf(out,
            "usage: %s [options]\n"
            "%s\n"
            "options:\n"
            "  --rounds N     rounds per contender, interleaved; the median is reported (5)\n"
            "  --count N      %s\n"
            "  --csv FILE     also write every round and the medians to FILE as CSV\n"
            "  --timeout S    seconds one run may take before it is killed and failed (120)\n"
            "  --only LIST    comma-separated contenders to run (e.g. asyncev,libev)\n",
            prog, what,
            with_threads ? "sends per run over all threads, split evenly (20000000)"
                         : "round trips per run (200000)");
    if (with_threads) {
        fprintf(out, "  --threads LIST sender thread counts, comma-separated (1,2,4)\n"
                     "  --duration MS  send for MS milliseconds instead of a fixed count\n");
    }
    fprintf(out, "  --help         this text\n"
                 "Exit status: 0 if every run finished and passed its checks, 1 otherwise.\n");
}

static uint64_t parse_u64(const char *s, const char *opt)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v == 0 || s[0] == '-') {
        fprintf(stderr, "bad value for %s: '%s' (want a positive integer)\n", opt, s);
        exit(2);
    }
    return v;
}

static void parse_threads(bu_options *o, const char *list)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", list);
    o->nthreads = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (o->nthreads == BU_MAX_THREADS) {
            fprintf(stderr, "--threads: at most %d entries\n", BU_MAX_THREADS);
            exit(2);
        }
        uint64_t n = parse_u64(t, "--threads");
        if (n > 64) {
            fprintf(stderr, "--threads: %llu is too many (max 64)\n", (unsigned long long)n);
            exit(2);
        }
        o->threads[o->nthreads++] = (int)n;
    }
    if (o->nthreads == 0) {
        fprintf(stderr, "--threads: empty list\n");
        exit(2);
    }
}

void bu_parse_options(int argc, char **argv, bu_options *o, const char *prog, const char *what,
                      int with_threads)
{
    static const struct option longopts[] = {{"rounds", required_argument, NULL, 'r'},
                                             {"count", required_argument, NULL, 'n'},
                                             {"csv", required_argument, NULL, 'c'},
                                             {"timeout", required_argument, NULL, 't'},
                                             {"only", required_argument, NULL, 'o'},
                                             {"threads", required_argument, NULL, 'T'},
                                             {"duration", required_argument, NULL, 'd'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};

    memset(o, 0, sizeof *o);
    o->rounds = 5;
    o->timeout_s = 120;
    o->threads[0] = 1;
    o->threads[1] = 2;
    o->threads[2] = 4;
    o->nthreads = 3;

    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (!with_threads && (c == 'T' || c == 'd')) {
            c = '?';
        }
        switch (c) {
        case 'r': {
            uint64_t n = parse_u64(optarg, "--rounds");
            if (n > BU_MAX_ROUNDS) {
                fprintf(stderr, "--rounds: at most %d\n", BU_MAX_ROUNDS);
                exit(2);
            }
            o->rounds = (int)n;
            break;
        }
        case 'n':
            o->count = parse_u64(optarg, "--count");
            o->count_given = 1;
            break;
        case 'c':
            o->csv_path = optarg;
            break;
        case 't':
            o->timeout_s = (double)parse_u64(optarg, "--timeout");
            break;
        case 'o':
            o->only = optarg;
            break;
        case 'T':
            parse_threads(o, optarg);
            break;
        case 'd':
            o->duration_ns = (int64_t)parse_u64(optarg, "--duration") * 1000000;
            break;
        case 'h':
            usage(stdout, prog, what, with_threads);
            exit(0);
        default:
            usage(stderr, prog, what, with_threads);
            exit(2);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "unexpected argument '%s'\n", argv[optind]);
        usage(stderr, prog, what, with_threads);
        exit(2);
    }
    if (!o->count_given) {
        o->count = with_threads ? 20000000 : 200000;
    }
}

int bu_selected(const bu_options *o, const char *name)
{
    if (!o->only) {
        return 1;
    }
    size_t len = strlen(name);
    for (const char *p = o->only; *p;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == len && strncmp(p, name, n) == 0) {
            return 1;
        }
        if (!end) {
            break;
        }
        p = end + 1;
    }
    return 0;
}

int bu_select_impls(const bu_options *o, bu_impl *impls, int n, const char *names)
{
    int kept = 0;
    for (int i = 0; i < n; i++) {
        if (bu_selected(o, impls[i].name)) {
            impls[kept++] = impls[i];
        }
    }
    if (kept == 0) {
        fprintf(stderr, "--only selected nothing; names: %s\n", names);
        exit(2);
    }
    return kept;
}

FILE *bu_csv_open(const char *path, const char *header)
{
    if (!path) {
        return NULL;
    }
    FILE *csv = fopen(path, "w");
    if (!csv) {
        perror(path);
        exit(2);
    }
    fprintf(csv, "%s\n", header);
    return csv;
}

/* ---- header ------------------------------------------------------------------------------- */

/* The peers this program was built without, with the Debian package that provides each. */
static void print_missing(void)
{
    const char *pkgs[3];
    const char *names[3];
    int n = 0;
#ifndef HAVE_LIBEV
    names[n] = "libev";
    pkgs[n++] = "libev-dev";
#endif
#ifndef HAVE_LIBUV
    names[n] = "libuv";
    pkgs[n++] = "libuv1-dev";
#endif
#ifndef HAVE_LIBEVENT
    names[n] = "libevent";
    pkgs[n++] = "libevent-dev";
#endif
    if (n == 0) {
        printf("peers: libev, libuv, libevent (all built in)\n");
        return;
    }
    printf("missing peers (not found when this was configured):");
    for (int i = 0; i < n; i++) {
        printf(" %s", names[i]);
    }
    printf("\n  to add them: apt-get install");
    for (int i = 0; i < n; i++) {
        printf(" %s", pkgs[i]);
    }
    printf(" pkg-config, then re-run cmake with -DAEV_BENCH=ON and rebuild\n");
}

static void print_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) {
        return;
    }
    printf("CPUs usable: %d of %ld online (", CPU_COUNT(&set), sysconf(_SC_NPROCESSORS_ONLN));
    const char *sep = "";
    for (int i = 0; i < CPU_SETSIZE; i++) {
        if (CPU_ISSET(i, &set)) {
            printf("%s%d", sep, i);
            sep = ",";
        }
    }
    printf(")%s\n", CPU_COUNT(&set) == 1 ? ": all threads share one CPU (pinned)" : "");
}

void bu_print_header(const char *title, const bu_options *o)
{
    printf("%s\n", title);
    printf("rounds: %d (interleaved; median reported), timeout per run: %.0f s\n", o->rounds,
           o->timeout_s);
    print_cpus();
#ifdef AEVB_BUILD_TYPE
    printf("build type: %s%s\n", AEVB_BUILD_TYPE[0] ? AEVB_BUILD_TYPE : "(none)",
           strstr(AEVB_BUILD_TYPE, "Rel") ? "" : "  (WARNING: numbers need a Release build)");
#endif
    const char *backend = getenv("AEV_BACKEND");
    if (backend) {
        printf("AEV_BACKEND=%s\n", backend);
    }
    print_missing();
}

/* ---- running one measurement -------------------------------------------------------------- */

static void child_main(const bu_impl *impl, const bu_params *p, int fd)
{
    bu_result r;
    memset(&r, 0, sizeof r);
    if (impl->run(impl, p, &r) == 0 && r.err[0] == '\0') {
        r.ok = 1;
    } else if (r.err[0] == '\0') {
        bu_fail(&r, "failed without a reason");
    }
    const char *buf = (const char *)&r;
    size_t left = sizeof r;
    while (left > 0) {
        ssize_t n = write(fd, buf, left);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            _exit(3);
        }
        buf += n;
        left -= (size_t)n;
    }
    /* _exit: no atexit handlers or stdio buffers of the parent run twice, and threads that a
     * failed run left blocked are ended with the process. */
    _exit(0);
}

/* Reads the child's result until it is complete, EOF, or the deadline. Returns bytes read. */
static size_t read_result(int fd, bu_result *r, int64_t deadline)
{
    char *buf = (char *)r;
    size_t got = 0;
    while (got < sizeof *r) {
        int64_t left_ns = deadline - bu_now();
        if (left_ns <= 0) {
            break;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int rc = poll(&pfd, 1, (int)(left_ns / 1000000) + 1);
        if (rc < 0 && errno == EINTR) {
            continue;
        }
        if (rc <= 0) {
            continue; /* timeout: the deadline check above ends the loop */
        }
        ssize_t n = read(fd, buf + got, sizeof *r - got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        got += (size_t)n;
    }
    return got;
}

int bu_run_isolated(const bu_impl *impl, const bu_params *p, double timeout_s, bu_result *r)
{
    memset(r, 0, sizeof *r);
    int fds[2];
    if (pipe(fds) != 0) {
        return bu_fail(r, "pipe: %s", strerror(errno)), 0;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return bu_fail(r, "fork: %s", strerror(errno)), 0;
    }
    if (pid == 0) {
        close(fds[0]);
        child_main(impl, p, fds[1]);
    }
    close(fds[1]);

    int64_t deadline = bu_now() + (int64_t)(timeout_s * 1e9);
    size_t got = read_result(fds[0], r, deadline);
    close(fds[0]);
    int timed_out = got < sizeof *r && bu_now() >= deadline;
    if (timed_out) {
        kill(pid, SIGKILL);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (got == sizeof *r) {
        r->err[sizeof r->err - 1] = '\0';
        return r->ok;
    }
    memset(r, 0, sizeof *r);
    if (timed_out) {
        bu_fail(r, "timeout: no result after %.0f s (killed)", timeout_s);
    } else if (WIFSIGNALED(status)) {
        bu_fail(r, "crashed: %s", strsignal(WTERMSIG(status)));
    } else {
        bu_fail(r, "exited with status %d without a result", WEXITSTATUS(status));
    }
    return 0;
}

/* ---- statistics, table, CSV --------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

double bu_median(const double *v, int n)
{
    if (n <= 0) {
        return 0;
    }
    double s[BU_MAX_ROUNDS];
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

uint64_t bu_median_u64(const uint64_t *v, int n)
{
    if (n <= 0) {
        return 0;
    }
    uint64_t s[BU_MAX_ROUNDS];
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_u64);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

double bu_row_median(const bu_row *row)
{
    return bu_median(row->rate, row->nok);
}

void bu_record(bu_row *row, const bu_result *r, FILE *csv, const char *bench, int threads,
               int round, uint64_t count)
{
    double rate = 0;
    if (r->ok && r->elapsed_ns > 0) {
        rate = (double)r->ops * 1e9 / (double)r->elapsed_ns;
        row->rate[row->nok] = rate;
        row->callbacks[row->nok] = r->callbacks;
        row->nok++;
    } else {
        row->nfail++;
        snprintf(row->lasterr, sizeof row->lasterr, "%s", r->ok ? "zero elapsed time" : r->err);
    }
    if (csv) {
        fprintf(csv, "%s,%s,%d,%d,%llu,%lld,%.1f,%llu,%s\n", bench, row->impl->name, threads, round,
                (unsigned long long)count, (long long)r->elapsed_ns, rate,
                (unsigned long long)r->callbacks, r->ok ? "ok" : "fail");
        fflush(csv);
    }
}

int bu_rows_init(bu_row *rows, const bu_impl *impls, int n)
{
    int ours = -1;
    memset(rows, 0, (size_t)n * sizeof *rows);
    for (int i = 0; i < n; i++) {
        rows[i].impl = &impls[i];
        ours = strcmp(impls[i].name, "asyncev") == 0 ? i : ours;
    }
    return ours;
}

int bu_finish(FILE *csv, int failures)
{
    if (csv) {
        fclose(csv);
    }
    if (failures) {
        printf("\n%d run(s) failed\n", failures);
    }
    return failures ? 1 : 0;
}

/* Formats a rate with thousands separators, which make 7-digit numbers readable. */
static const char *fmt_rate(char *buf, size_t size, double v)
{
    char digits[32];
    snprintf(digits, sizeof digits, "%.0f", v);
    size_t len = strlen(digits), o = 0;
    for (size_t i = 0; i < len && o + 2 < size; i++) {
        if (i > 0 && (len - i) % 3 == 0) {
            buf[o++] = ',';
        }
        buf[o++] = digits[i];
    }
    buf[o] = '\0';
    return buf;
}

void bu_print_table(const char *unit, const bu_row *rows, int nrows, int ours, int show_callbacks)
{
    double ours_med = ours >= 0 ? bu_row_median(&rows[ours]) : 0;
    printf("%-16s %15s %15s %15s %13s%s %5s\n", "contender", unit, "min", "max", "asyncev/this",
           show_callbacks ? "  callbacks" : "", "runs");
    for (int i = 0; i < nrows; i++) {
        const bu_row *row = &rows[i];
        char med[32], lo[32], hi[32], ratio[32], cbs[32];
        if (row->nok == 0) {
            printf("%-16s %15s %15s %15s %13s%s %2d/%-2d  %s\n", row->impl->name, "FAILED", "-",
                   "-", "-", show_callbacks ? "          -" : "", row->nok, row->nok + row->nfail,
                   row->lasterr);
            continue;
        }
        double m = bu_row_median(row);
        double mn = row->rate[0], mx = row->rate[0];
        for (int k = 1; k < row->nok; k++) {
            mn = row->rate[k] < mn ? row->rate[k] : mn;
            mx = row->rate[k] > mx ? row->rate[k] : mx;
        }
        if (ours_med > 0) {
            snprintf(ratio, sizeof ratio, "%.2fx", ours_med / m);
        } else {
            snprintf(ratio, sizeof ratio, "-");
        }
        snprintf(cbs, sizeof cbs, "  %9llu",
                 (unsigned long long)bu_median_u64(row->callbacks, row->nok));
        printf("%-16s %15s %15s %15s %13s%s %2d/%-2d%s%s\n", row->impl->name,
               fmt_rate(med, sizeof med, m), fmt_rate(lo, sizeof lo, mn),
               fmt_rate(hi, sizeof hi, mx), ratio, show_callbacks ? cbs : "", row->nok,
               row->nok + row->nfail, row->nfail ? "  last failure: " : "",
               row->nfail ? row->lasterr : "");
    }
    for (int i = 0; i < nrows; i++) {
        if (rows[i].impl->note) {
            printf("  %s: %s\n", rows[i].impl->name, rows[i].impl->note);
        }
    }
}

void bu_csv_medians(FILE *csv, const char *bench, int threads, uint64_t count, const bu_row *rows,
                    int nrows)
{
    if (!csv) {
        return;
    }
    for (int i = 0; i < nrows; i++) {
        const bu_row *row = &rows[i];
        fprintf(csv, "%s,%s,%d,median,%llu,,%.1f,%llu,%s\n", bench, row->impl->name, threads,
                (unsigned long long)count, bu_row_median(row),
                (unsigned long long)bu_median_u64(row->callbacks, row->nok),
                row->nok ? "ok" : "fail");
    }
    fflush(csv);
}

static const bu_row *find_row(const bu_row *rows, int nrows, const char *name)
{
    for (int i = 0; i < nrows; i++) {
        if (strcmp(rows[i].impl->name, name) == 0) {
            return &rows[i];
        }
    }
    return NULL;
}

int bu_check_target(const char *label, const bu_row *rows, int nrows, const char *peer,
                    double factor)
{
    const bu_row *ours = find_row(rows, nrows, "asyncev");
    const bu_row *other = find_row(rows, nrows, peer);
    if (!ours || !other || ours->nok == 0 || other->nok == 0) {
        printf("  target %-40s: not judged (%s not measured)\n", label,
               !ours || ours->nok == 0 ? "asyncev" : peer);
        return -1;
    }
    double ratio = bu_row_median(ours) / bu_row_median(other);
    int met = ratio >= factor;
    printf("  target %-40s: asyncev/%s = %.3fx, need >= %.3fx: %s\n", label, peer, ratio, factor,
           met ? "met" : "MISSED");
    return met;
}
