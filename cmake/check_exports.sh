#!/bin/sh
# Checks the dynamic symbol table of the shared library against the public header:
#  1. every exported function or object must be named aev_* (hidden visibility leaks nothing
#     else, and internal aev__* names must stay hidden too);
#  2. every function declared AEV_EXPORT in the header must be exported.
# Usage: check_exports.sh path/to/libasyncev.so path/to/asyncev.h   (NM may name the nm to use)
set -eu

if [ $# -ne 2 ]; then
    echo "usage: $0 LIBRARY.so HEADER.h" >&2
    exit 2
fi
lib=$1
header=$2
nm_cmd=${NM:-nm}

for f in "$lib" "$header"; do
    if [ ! -r "$f" ]; then
        echo "check_exports: cannot read $f" >&2
        exit 2
    fi
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Defined dynamic symbols of code or data: T/t text, D/d data, B/b bss, R/r read-only, W/V weak,
# i indirect function. Version nodes (A) and the like are not symbols the program can call.
"$nm_cmd" -D --defined-only "$lib" >"$tmp/nm.out"
awk 'NF >= 3 && $2 ~ /^[TtDdBbRrWwVvi]$/ { sub(/@.*/, "", $3); print $3 }' "$tmp/nm.out" |
    sort -u >"$tmp/exported"

if [ ! -s "$tmp/exported" ]; then
    echo "check_exports: $lib exports no functions or objects at all" >&2
    exit 1
fi

# Function names declared AEV_EXPORT. A declaration may wrap, so lines are joined from the one
# starting with AEV_EXPORT up to the first '('; the name is the identifier right before it.
awk '
    /^AEV_EXPORT[ \t]/ { decl = $0; collecting = 1 }
    collecting && decl != $0 { decl = decl " " $0 }
    collecting && decl ~ /\(/ { print decl; collecting = 0 }
' "$header" |
    sed -n 's/^\([^(]*[^A-Za-z0-9_(]\)\{0,1\}\([A-Za-z_][A-Za-z0-9_]*\)[ \t]*(.*/\2/p' |
    sort -u >"$tmp/declared"

if [ ! -s "$tmp/declared" ]; then
    echo "check_exports: no AEV_EXPORT declarations found in $header" >&2
    exit 1
fi

status=0

# aev__ names are internal even though they start with aev_.
grep -v '^aev_' "$tmp/exported" >"$tmp/foreign" || true
grep '^aev__' "$tmp/exported" >>"$tmp/foreign" || true
if [ -s "$tmp/foreign" ]; then
    echo "check_exports: FAIL: symbols exported outside the public aev_ namespace:" >&2
    sed 's/^/    /' "$tmp/foreign" >&2
    status=1
fi

comm -23 "$tmp/declared" "$tmp/exported" >"$tmp/missing"
if [ -s "$tmp/missing" ]; then
    echo "check_exports: FAIL: AEV_EXPORT functions of $header not exported:" >&2
    sed 's/^/    /' "$tmp/missing" >&2
    status=1
fi

comm -13 "$tmp/declared" "$tmp/exported" | grep -v -x -F -f "$tmp/foreign" >"$tmp/undeclared" || true
if [ -s "$tmp/undeclared" ]; then
    # Not an error: a variable, or a function kept for ABI compatibility, may be exported
    # without an AEV_EXPORT function declaration. Report it so that it is a conscious choice.
    echo "check_exports: note: exported but not declared AEV_EXPORT in the header:"
    sed 's/^/    /' "$tmp/undeclared"
fi

if [ "$status" -eq 0 ]; then
    echo "check_exports: OK: $(wc -l <"$tmp/declared") declared functions exported," \
        "$(wc -l <"$tmp/exported") exported symbols, all aev_*"
fi
exit "$status"
