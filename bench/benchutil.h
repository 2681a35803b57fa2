/*
 * Shared harness of the async benchmarks: option parsing, running one measurement in a child
 * process with a time limit, medians, the result table and the CSV file.
 *
 * Every measurement runs in a forked child so that a library that hangs or crashes costs one
 * failed run (the parent kills it at the deadline) instead of the whole benchmark, and so that
 * no library's global state (libevent's threading hooks, for one) leaks into the next run.
 */
#ifndef BENCHUTIL_H
#define BENCHUTIL_H

#include <stdint.h>
#include <stdio.h>

#define BU_MAX_ROUNDS 101
#define BU_MAX_IMPLS 8
#define BU_MAX_THREADS 8

/* What one measurement is asked to do. */
typedef struct bu_params {
    uint64_t count;      /* round trips (ping-pong) or sends over all threads (pummel) */
    int threads;         /* sender threads (pummel only) */
    int64_t duration_ns; /* pummel: send for this long instead of `count` sends if > 0 */
} bu_params;

/* What one measurement found; filled in by the child and copied to the parent through a pipe. */
typedef struct bu_result {
    int ok;             /* 1 if the run finished and its own checks passed */
    int64_t elapsed_ns; /* the timed part only */
    uint64_t ops;       /* round trips or sends actually done */
    uint64_t callbacks; /* callbacks run by the receiving loop(s) */
    char err[160];      /* why it failed, if !ok */
} bu_result;

typedef struct bu_impl bu_impl;
/* Runs one measurement (in the child); returns 0 or -1 after bu_fail(). */
typedef int (*bu_run_fn)(const bu_impl *impl, const bu_params *p, bu_result *r);

/* One contender: a library, or a floor that uses no library at all. */
struct bu_impl {
    const char *name;
    bu_run_fn run;
    const void *ctx;  /* for run(): the library adaptor, or NULL */
    const char *note; /* footnote printed under the table, or NULL */
};

typedef struct bu_options {
    int rounds;
    uint64_t count;
    int count_given;
    double timeout_s;
    int64_t duration_ns;
    const char *csv_path;
    const char *only; /* comma-separated names, or NULL for all */
    int threads[BU_MAX_THREADS];
    int nthreads;
} bu_options;

/* Everything measured for one contender (and one thread count). */
typedef struct bu_row {
    const bu_impl *impl;
    double rate[BU_MAX_ROUNDS]; /* ops per second of the successful rounds */
    uint64_t callbacks[BU_MAX_ROUNDS];
    int nok;
    int nfail;
    char lasterr[160];
} bu_row;

/* Parses the options common to both programs; exits on --help or a bad option. */
void bu_parse_options(int argc, char **argv, bu_options *o, const char *prog, const char *what,
                      int with_threads);
/* True if `name` was selected by --only (or no --only was given). */
int bu_selected(const bu_options *o, const char *name);
/* Keeps, in order, the n contenders in impls that --only selected; returns how many are left.
 * If none is, prints `names` (every contender the program knows, built in or not) and exits
 * with status 2: a misspelt --only must not pass for a successful run that measured nothing. */
int bu_select_impls(const bu_options *o, bu_impl *impls, int n, const char *names);

/* The header line of the CSV lines that bu_record() and bu_csv_medians() write. */
#define BU_CSV_HEADER "bench,contender,threads,round,count,elapsed_ns,rate_per_s,callbacks,status"
/* Opens the CSV file and writes `header` and a newline; NULL if path is NULL (no --csv). Exits
 * with status 2 if it cannot be opened, before any run spends minutes on unsaved results. */
FILE *bu_csv_open(const char *path, const char *header);
/* Prints the machine facts that matter for reading the numbers (CPUs usable, peers missing). */
void bu_print_header(const char *title, const bu_options *o);

/* Runs impl->run(p) in a child process; kills it after timeout_s. Returns r->ok. */
int bu_run_isolated(const bu_impl *impl, const bu_params *p, double timeout_s, bu_result *r);
/* Records a result in a row and, if csv is not NULL, as one CSV line. */
void bu_record(bu_row *row, const bu_result *r, FILE *csv, const char *bench, int threads,
               int round, uint64_t count);

double bu_median(const double *v, int n);
uint64_t bu_median_u64(const uint64_t *v, int n);
/* Median rate of a row, or 0 if no round succeeded. */
double bu_row_median(const bu_row *row);

/* Points rows[i] at impls[i] with nothing recorded yet; returns the index of asyncev's row, or
 * -1, as bu_print_table() wants it. */
int bu_rows_init(bu_row *rows, const bu_impl *impls, int n);
/* Closes the CSV file (if any) and reports the failed runs; returns main()'s exit status. */
int bu_finish(FILE *csv, int failures);

/* Prints the table: median, min and max rate, and "asyncev/this" for every row.
 * ours is the index of the asyncev row (or -1). show_callbacks adds the callbacks column. */
void bu_print_table(const char *unit, const bu_row *rows, int nrows, int ours, int show_callbacks);
/* Writes the medians as CSV lines with round "median". */
void bu_csv_medians(FILE *csv, const char *bench, int threads, uint64_t count, const bu_row *rows,
                    int nrows);
/* Prints one target line: ours/peer against `factor`; returns 1 if met, 0 if missed, -1 if it
 * cannot be judged (a row missing or failed). */
int bu_check_target(const char *label, const bu_row *rows, int nrows, const char *peer,
                    double factor);

/* Monotonic clock in nanoseconds. */
int64_t bu_now(void);
/* snprintf into r->err and mark the run failed; returns -1 for `return bu_fail(...)`. */
int bu_fail(bu_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif /* BENCHUTIL_H */
