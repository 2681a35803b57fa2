#!/bin/sh
# Generates the section 3 man pages in docs/man/ (or in the directory given as $1) from
# include/asyncev.h and docs/api.md: one page per public function, named after it, plus the
# overview page asyncev.3. POSIX sh and awk only, so that it runs where python does not.
#
# Where the text comes from:
#  - SYNOPSIS: the AEV_EXPORT declarations of the header, exactly as declared.
#  - NAME, DESCRIPTION, RETURN VALUE, ERRORS, THREADS: the docs/api.md entry ("### `aev_x`, ...")
#    that names the function. A sentence starting "Thread:" goes to THREADS, the part of a
#    paragraph from a sentence starting "Errors" (and the list after it) to ERRORS, a paragraph
#    starting "Returns" (and its list) to RETURN VALUE; the rest is the description.
#  - Functions documented together share their text; each still gets its own page (no .so links,
#    so that `man -l` renders every file by itself).
# A public function without an entry in docs/api.md is an error: document it there first.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/docs/man}
header=$root/include/asyncev.h
api=$root/docs/api.md

mkdir -p "$out"
# Stale pages of renamed functions must not survive a regeneration.
rm -f "$out"/*.3

awk -v outdir="$out" '
BEGIN {
    # NAME lines where the first sentence of the entry says too little by itself.
    n = split("aev_is_active=tell whether a watcher is active or pending|" \
        "aev_watcher_error=the error that stopped a watcher|" \
        "aev_wall_time=read the wall clock in nanoseconds since the epoch|" \
        "aev_now=the loop\047s cached monotonic time, and refreshing it|" \
        "aev_child_rpid=the pid and status a child watcher reported|" \
        "aev_child_set=change what an inactive child watcher watches|" \
        "aev_cleanup_init=watchers called when the loop is destroyed|" \
        "aev_fork_init=watchers called in the child after fork()|" \
        "aev_embed_init=initialise a watcher that runs another loop|" \
        "aev_embed_set=change the loop an inactive embed watcher runs|" \
        "aev_embed_start=start or stop running an embedded loop|" \
        "aev_embed_sweep=run one non-blocking iteration of an embedded loop|" \
        "aev_io_set=change the fd and events of an inactive io watcher|" \
        "aev_periodic_set=change the schedule of an inactive periodic watcher|" \
        "aev_stat_set=change the path of an inactive stat watcher|" \
        "aev_stat_stat=read the stat data of a stat watcher\047s path now|" \
        "aev_timer_again=restart a timer from its repeat interval|" \
        "aev_timer_set=change the delay and interval of an inactive timer|" \
        "aev_watcher_loop=the loop a watcher belongs to|" \
        "aev_set_invoke_hook=replace, or run, the step that invokes pending callbacks|" \
        "aev_suspend=suspend and resume a loop\047s timers", pairs, "|")
    for (k = 1; k <= n; k++) {
        i = index(pairs[k], "=")
        name_override[substr(pairs[k], 1, i - 1)] = substr(pairs[k], i + 1)
    }
}
function repl(s, from, to,    r, i) {
    r = ""
    while ((i = index(s, from)) > 0) {
        r = r substr(s, 1, i - 1) to
        s = substr(s, i + length(from))
    }
    return r s
}
function trim(s) {
    sub(/^[ \t]+/, "", s)
    sub(/[ \t]+$/, "", s)
    return s
}
# Markdown inline markup to roff: `code` bold, **bold**, *italic*, links reduced to their text.
function inline(s,    r, i, seg, code, t) {
    s = repl(s, "\\", "\\e")
    while (match(s, /\[[^]]*\]\([^)]*\)/)) {
        t = substr(s, RSTART + 1, RLENGTH)
        sub(/\]\(.*$/, "", t)
        s = substr(s, 1, RSTART - 1) t substr(s, RSTART + RLENGTH)
    }
    r = ""
    code = 0
    while (1) {
        i = index(s, "`")
        seg = (i > 0) ? substr(s, 1, i - 1) : s
        if (code) {
            r = r "\\fB" repl(seg, "-", "\\-") "\\fR"
        } else {
            r = r text_markup(seg)
        }
        if (i == 0)
            break
        s = substr(s, i + 1)
        code = !code
    }
    if (r ~ /^[.\047]/)
        r = "\\&" r
    return r
}
function text_markup(s,    r, i, on) {
    r = ""
    on = 0
    while ((i = index(s, "**")) > 0) {
        r = r substr(s, 1, i - 1) (on ? "\\fR" : "\\fB")
        on = !on
        s = substr(s, i + 2)
    }
    s = r s
    while (match(s, /\*[A-Za-z][^*]*[A-Za-z]\*/))
        s = substr(s, 1, RSTART - 1) "\\fI" substr(s, RSTART + 1, RLENGTH - 2) "\\fR" \
            substr(s, RSTART + RLENGTH)
    return s
}
# Plain text for the NAME line.
function plain(s,    t) {
    while (match(s, /\[[^]]*\]\([^)]*\)/)) {
        t = substr(s, RSTART + 1, RLENGTH)
        sub(/\]\(.*$/, "", t)
        s = substr(s, 1, RSTART - 1) t substr(s, RSTART + RLENGTH)
    }
    s = repl(s, "`", "")
    s = repl(s, "**", "")
    return repl(s, "\\", "\\e")
}
function add(target, text) {
    if (target == "err")
        err = err text
    else if (target == "ret")
        ret = ret text
    else if (target == "thr")
        thr = thr text
    else
        desc = desc text
}
# Splits a text paragraph into its description, THREADS and ERRORS parts.
function text_block(p,    i, rest, j, e) {
    if (p ~ /^Returns/) {
        target = "ret"
        add("ret", ".PP\n" inline(p) "\n")
        return
    }
    i = index(p, "Thread: ")
    if (i == 1 || (i > 2 && substr(p, i - 2, 2) == ". ")) {
        rest = substr(p, i + 8)
        # The sentence ends at a full stop followed by a space and a capital, or at the end.
        j = match(rest, /\. [A-Z]/)
        if (j > 0) {
            thr = thr ".PP\n" inline(toupper(substr(rest, 1, 1)) substr(rest, 2, j)) "\n"
            p = trim(substr(p, 1, i - 1) substr(rest, j + 2))
        } else {
            thr = thr ".PP\n" inline(toupper(substr(rest, 1, 1)) substr(rest, 2)) "\n"
            p = trim(substr(p, 1, i - 1))
        }
    }
    target = "desc"
    if (p == "")
        return
    e = 0
    if (p ~ /^Errors/)
        e = 1
    else if (match(p, /\. Errors/))
        e = RSTART + 2
    if (e == 1) {
        err = err ".PP\n" inline(p) "\n"
        target = "err"
    } else if (e > 1) {
        desc = desc ".PP\n" inline(substr(p, 1, e - 2)) "\n"
        err = err ".PP\n" inline(substr(p, e)) "\n"
        target = "err"
    } else {
        if (shortdesc == "")
            shortdesc = p
        desc = desc ".PP\n" inline(p) "\n"
    }
}
function flush_block(    k, j, n, cells, c, row) {
    if (btype == "")
        return
    if (!in_entry) {
        # Area introduction: only a "**Thread**:" rule is taken, as the area default.
        if (btype == "list")
            for (k = 1; k <= nb; k++)
                if (index(bl[k], "- **Thread**: ") == 1)
                    area_thread = inline(toupper(substr(bl[k], 15, 1)) substr(bl[k], 16))
    } else if (btype == "code") {
        if (seen_text) {
            c = ".PP\n.RS 4\n.nf\n"
            for (k = 1; k <= nb; k++)
                c = c ((bl[k] ~ /^[.\047]/) ? "\\&" : "") repl(bl[k], "\\", "\\e") "\n"
            add(target, c ".fi\n.RE\n")
        }
    } else if (btype == "table") {
        c = ""
        row = 0
        for (k = 1; k <= nb; k++) {
            if (bl[k] ~ /^\|[-| :]*$/)
                continue
            n = split(bl[k], cells, "|")
            row++
            c = c ".TP\n" inline(trim(cells[2])) "\n"
            for (j = 3; j < n; j++)
                c = c inline(trim(cells[j])) ((j < n - 1) ? "; " : "") "\n"
        }
        add(target, c)
    } else if (btype == "list") {
        seen_text = 1
        for (k = 1; k <= nb; k++)
            add(target, ".IP " (bl[k] ~ /^[0-9]+\. / ? "\"" substr(bl[k], 1, index(bl[k], ".")) "\" 4" : "\\(bu 2") "\n" \
                inline(bl[k] ~ /^[0-9]+\. / ? substr(bl[k], index(bl[k], " ") + 1) : substr(bl[k], 3)) "\n")
    } else {
        seen_text = 1
        text_block(bl[1])
    }
    btype = ""
    nb = 0
}
function start_block(t) {
    flush_block()
    btype = t
    nb = 0
}
function is_item(l) {
    return l ~ /^- / || l ~ /^[0-9]+\. /
}
function reset_entry() {
    desc = ""; ret = ""; err = ""; thr = ""; shortdesc = ""
    target = "desc"
    seen_text = 0
}
function write_entry(    k, f, name, file, proto, type, seealso, others, s) {
    if (!in_entry)
        return
    s = plain(shortdesc)
    sub(/[.;:] .*$/, "", s)
    sub(/ \(.*$/, "", s)
    sub(/\.$/, "", s)
    if (s ~ /^[A-Z][a-z ]/)
        s = tolower(substr(s, 1, 1)) substr(s, 2)
    if (s == "" || length(s) > 80)
        s = "libasyncev " tolower(area) " functions"
    if (ent[1] in name_override)
        s = name_override[ent[1]]
    others = ""
    for (k = 1; k <= nent; k++)
        others = others (k > 1 ? ", " : "") ent[k]
    for (k = 1; k <= nent; k++) {
        name = ent[k]
        file = outdir "/" name ".3"
        printf ".\\\" Generated by scripts/gen_man.sh from include/asyncev.h and docs/api.md.\n" > file
        printf ".\\\" Do not edit: change docs/api.md or the header and run the script.\n" > file
        printf ".TH %s 3 \"\" \"libasyncev %s\" \"libasyncev Manual\"\n", toupper(name), version > file
        printf ".SH NAME\n%s \\- %s\n", others, s > file
        printf ".SH SYNOPSIS\n.nf\n.B #include <asyncev.h>\n.PP\n" > file
        for (f = 1; f <= nent; f++)
            printf "%s\n", proto_of[ent[f]] > file
        printf ".fi\n" > file
        printf ".SH DESCRIPTION\n%s", desc > file
        printf ".SH RETURN VALUE\n" > file
        if (ret != "") {
            printf "%s", ret > file
        } else {
            for (f = 1; f <= nent; f++) {
                type = type_of[ent[f]]
                printf ".PP\n\\fB%s\\fR()", ent[f] > file
                if (type == "void")
                    printf " returns nothing.\n" > file
                else if (type == "int")
                    printf " returns 0 on success (or the value described above) and a negative errno value on failure; see ERRORS.\n" > file
                else
                    printf " returns the value described above; it does not fail.\n" > file
            }
        }
        printf ".SH ERRORS\n%s", (err != "" ? err : "None.\n") > file
        printf ".SH THREADS\n" > file
        if (thr != "")
            printf "%s", thr > file
        else if (area_thread != "")
            printf "%s\n", area_thread > file
        else if (name ~ /_init$/)
            printf "Any thread, as long as nothing else uses the watcher at the same time: an init function writes only the watcher.\n" > file
        else
            printf "The loop\047s thread: call it on the thread that runs the loop, never concurrently with another call on the same loop.\n" > file
        seealso = ""
        for (f = 1; f <= narea[area]; f++)
            if (area_fn[area, f] != name)
                seealso = seealso ".BR " area_fn[area, f] " (3),\n"
        printf ".SH SEE ALSO\n%s.BR asyncev (3)\n.PP\n", seealso > file
        printf "docs/api.md (section \\(lq%s\\(rq) and docs/concepts.md in the libasyncev sources.\n", area > file
        close(file)
    }
}
# Names of public functions in a "###" heading, in order.
function heading_functions(h,    rest, i, j, nm) {
    nent = 0
    rest = h
    while ((i = index(rest, "`")) > 0) {
        rest = substr(rest, i + 1)
        j = index(rest, "`")
        if (j == 0)
            break
        nm = substr(rest, 1, j - 1)
        rest = substr(rest, j + 1)
        if (nm in proto_of)
            ent[++nent] = nm
    }
    return nent
}

FNR == 1 { pass++ }

# Pass 1: the header.
pass == 1 && /^#define AEV_VERSION_(MAJOR|MINOR|PATCH) / { ver[$2] = $3 }
pass == 1 && /^AEV_EXPORT / { decl = $0; indecl = 1 }
pass == 1 && indecl && !/^AEV_EXPORT / { decl = decl " " $0 }
pass == 1 && indecl && /;/ {
    indecl = 0
    sub(/^AEV_EXPORT +/, "", decl)
    gsub(/[ \t]+/, " ", decl)
    nm = decl
    sub(/ *\(.*$/, "", nm)
    type = nm
    sub(/[A-Za-z0-9_]+$/, "", type)
    type = trim(type)
    sub(/^.*[^A-Za-z0-9_]/, "", nm)
    proto_of[nm] = decl
    type_of[nm] = type
    fn_order[++nfn] = nm
    next
}
pass == 1 { next }

# Pass 2: which functions each area of docs/api.md documents.
pass == 2 && /^## / { area = substr($0, 4) ; next }
pass == 2 && /^### / {
    n = heading_functions($0)
    for (k = 1; k <= n; k++) {
        if (ent[k] in documented) {
            printf "gen_man: %s has two entries in docs/api.md\n", ent[k] > "/dev/stderr"
            exit 1
        }
        documented[ent[k]] = area
        area_fn[area, ++narea[area]] = ent[k]
    }
    if (n > 0 && !(area in area_seen)) {
        area_seen[area] = 1
        areas[++nareas] = area
    }
    next
}
pass == 2 { next }

# Pass 3: the entries.
pass == 3 && FNR == 1 {
    version = ver["AEV_VERSION_MAJOR"] "." ver["AEV_VERSION_MINOR"] "." ver["AEV_VERSION_PATCH"]
    for (k = 1; k <= nfn; k++)
        if (!(fn_order[k] in documented)) {
            printf "gen_man: %s has no \"### \" entry in docs/api.md\n", fn_order[k] > "/dev/stderr"
            failed = 1
        }
    if (failed)
        exit 1
}
pass == 3 && incode {
    if ($0 ~ /^```/) {
        incode = 0
        flush_block()
    } else {
        bl[++nb] = $0
    }
    next
}
pass == 3 && /^#/ {
    flush_block()
    write_entry()
    if ($0 ~ /^## /) {
        area = substr($0, 4)
        area_thread = ""
        in_entry = 0
    } else if ($0 ~ /^### /) {
        in_entry = heading_functions($0) > 0
        reset_entry()
    }
    next
}
pass == 3 && /^```/ { start_block("code"); incode = 1; next }
pass == 3 && /^---$/ { flush_block(); next }
pass == 3 && /^[ \t]*$/ { flush_block(); next }
pass == 3 && /^\|/ {
    if (btype != "table")
        start_block("table")
    bl[++nb] = $0
    next
}
pass == 3 && is_item($0) {
    if (btype != "list")
        start_block("list")
    bl[++nb] = $0
    next
}
pass == 3 {
    if (btype == "list") {
        bl[nb] = bl[nb] " " trim($0)
    } else if (btype == "text") {
        bl[1] = bl[1] " " trim($0)
    } else {
        start_block("text")
        bl[nb = 1] = trim($0)
    }
    next
}
END {
    if (failed || pass < 3)
        exit 1
    flush_block()
    write_entry()
    file = outdir "/asyncev.3"
    printf ".\\\" Generated by scripts/gen_man.sh from include/asyncev.h and docs/api.md.\n" > file
    printf ".TH ASYNCEV 3 \"\" \"libasyncev %s\" \"libasyncev Manual\"\n", version > file
    printf ".SH NAME\nasyncev \\- a small reactor event loop for C11\n" > file
    printf ".SH SYNOPSIS\n.nf\n.B #include <asyncev.h>\n.fi\n.PP\n" > file
    printf "Link with \\fB\\-lasyncev\\fR, or use \\fBpkg\\-config asyncev\\fR or CMake\\(aqs \\fBfind_package(asyncev)\\fR.\n" > file
    printf ".SH DESCRIPTION\n" > file
    printf "libasyncev runs one loop per thread. The program starts watchers (structs it allocates itself) for the events it waits for, and \\fBaev_run\\fR(3) calls each watcher\\(aqs callback, \\fBvoid cb(aev_watcher *w, unsigned events)\\fR, when its event happens.\n" > file
    printf ".PP\nFunctions that can fail return 0 or a negative errno value; \\fBaev_strerror\\fR(3) gives its text. Time is an \\fBaev_time_t\\fR, a signed 64-bit count of nanoseconds (\\fBAEV_MSEC\\fR, \\fBAEV_SEC\\fR build intervals). Only \\fBaev_async_send\\fR(3), \\fBaev_async_sent\\fR(3) and \\fBaev_post\\fR(3) may be called from another thread or a signal handler.\n" > file
    printf ".SH FUNCTIONS\n" > file
    for (a = 1; a <= nareas; a++) {
        printf ".SS %s\n", areas[a] > file
        for (f = 1; f <= narea[areas[a]]; f++)
            printf ".BR %s (3)%s\n", area_fn[areas[a], f], (f < narea[areas[a]] ? "," : "") > file
    }
    printf ".SH SEE ALSO\ndocs/tutorial.md, docs/concepts.md and docs/api.md in the libasyncev sources.\n" > file
    close(file)
}
' "$header" "$api" "$api"
