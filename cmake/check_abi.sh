#!/bin/sh
# Keeps the exported ABI of libasyncev deliberate: abi/asyncev.sym lists, one per line and
# sorted (LC_ALL=C), every symbol the shared library exports, and nothing may change it silently.
#
#   check_abi.sh check LIBRARY.so LIST [OBJECTS]
#       Fails when the dynamic symbol table of LIBRARY.so and LIST differ (a symbol appeared or
#       disappeared), when LIST is not sorted and unique, and, if OBJECTS (the library's object
#       files, separated by ';' as CMake lists them) is given, when an object file defines a
#       symbol with default visibility that LIST does not have. The linker version script is
#       made from LIST, so such a symbol is not exported at all; without this last check a new
#       AEV_EXPORT function would be hidden without anyone noticing.
#   check_abi.sh update LIST OBJECTS
#       Rewrites LIST from the default-visibility symbols of OBJECTS: the deliberate way to change
#       the ABI. Review the difference (git diff abi/) before committing it.
#
# NM and READELF may name the tools to use.
set -eu

nm_cmd=${NM:-nm}
readelf_cmd=${READELF:-readelf}
LC_ALL=C
export LC_ALL

usage()
{
    echo "usage: $0 check LIBRARY.so LIST [OBJECTS] | $0 update LIST OBJECTS" >&2
    exit 2
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The symbols that object files define with global or weak binding and default visibility, that
# is, those that would be exported without a version script. Arguments: file names, or one or
# more ';'-separated lists of them.
object_symbols()
{
    : >"$tmp/objects"
    for arg in "$@"; do
        printf '%s\n' "$arg" | tr ';' '\n' >>"$tmp/objects"
    done
    if [ ! -s "$tmp/objects" ]; then
        echo "check_abi: no object files given" >&2
        exit 2
    fi
    while IFS= read -r obj; do
        [ -n "$obj" ] || continue
        if [ ! -r "$obj" ]; then
            echo "check_abi: cannot read $obj" >&2
            exit 2
        fi
        # Columns: Num: Value Size Type Bind Vis Ndx Name. UND symbols are references.
        "$readelf_cmd" -sW "$obj" |
            awk '($5 == "GLOBAL" || $5 == "WEAK") && $6 == "DEFAULT" && $7 != "UND" &&
                 NF >= 8 { sub(/@.*/, "", $8); print $8 }'
    done <"$tmp/objects" | sort -u
}

if [ $# -lt 1 ]; then
    usage
fi
mode=$1
shift

case $mode in
update)
    [ $# -ge 2 ] || usage
    list=$1
    shift
    object_symbols "$@" >"$tmp/new"
    if [ ! -s "$tmp/new" ]; then
        echo "check_abi: the object files define no default-visibility symbols" >&2
        exit 1
    fi
    if [ -r "$list" ]; then
        sort -u "$list" >"$tmp/old"
    else
        : >"$tmp/old"
    fi
    cp "$tmp/new" "$list"
    echo "check_abi: wrote $(wc -l <"$list") symbols to $list"
    comm -13 "$tmp/old" "$tmp/new" | sed 's/^/    added:   /'
    comm -23 "$tmp/old" "$tmp/new" | sed 's/^/    removed: /'
    exit 0
    ;;
check)
    if [ $# -lt 2 ] || [ $# -gt 3 ]; then
        usage
    fi
    lib=$1
    list=$2
    ;;
*)
    usage
    ;;
esac

for f in "$lib" "$list"; do
    if [ ! -r "$f" ]; then
        echo "check_abi: cannot read $f" >&2
        exit 2
    fi
done

update_hint()
{
    echo "If the change is deliberate, update the list and commit it with the change:" >&2
    echo "    cmake --build <build dir> --target abi-update    (then review: git diff abi/)" >&2
    echo "or edit $list by hand (one symbol per line, sorted with LC_ALL=C sort)." >&2
    echo "Removing a symbol, or changing the meaning of one, breaks programs built against the" >&2
    echo "old library: raise the major version (project VERSION and AEV_VERSION_MAJOR) too." >&2
}

status=0

# The list itself must stay in the canonical form, so that its diffs are one line per symbol.
if ! sort -c -u "$list" 2>/dev/null; then
    echo "check_abi: FAIL: $list is not sorted and unique (LC_ALL=C sort -u)" >&2
    status=1
fi
sort -u "$list" >"$tmp/listed"
if [ ! -s "$tmp/listed" ]; then
    echo "check_abi: FAIL: $list is empty" >&2
    exit 1
fi

# Defined dynamic symbols of code or data, without their version suffix (@@ASYNCEV_0).
"$nm_cmd" -D --defined-only "$lib" >"$tmp/nm.out"
awk 'NF >= 3 && $2 ~ /^[TtDdBbRrWwVvi]$/ { sub(/@.*/, "", $3); print $3 }' "$tmp/nm.out" |
    sort -u >"$tmp/exported"

comm -13 "$tmp/listed" "$tmp/exported" >"$tmp/appeared"
comm -23 "$tmp/listed" "$tmp/exported" >"$tmp/disappeared"
if [ -s "$tmp/appeared" ] || [ -s "$tmp/disappeared" ]; then
    echo "check_abi: FAIL: the symbols exported by $lib differ from $list:" >&2
    sed 's/^/    + /; s/$/   (exported, not in the list)/' "$tmp/appeared" >&2
    sed 's/^/    - /; s/$/   (in the list, not exported)/' "$tmp/disappeared" >&2
    status=1
fi

if [ $# -eq 3 ]; then
    object_symbols "$3" >"$tmp/visible"
    comm -13 "$tmp/listed" "$tmp/visible" >"$tmp/unlisted"
    if [ -s "$tmp/unlisted" ]; then
        echo "check_abi: FAIL: default visibility (AEV_EXPORT) in the object files, but not in" \
            "$list, so the version script keeps them out of the library:" >&2
        sed 's/^/    + /' "$tmp/unlisted" >&2
        status=1
    fi
fi

if [ "$status" -ne 0 ]; then
    update_hint
    exit 1
fi
echo "check_abi: OK: $lib exports exactly the $(wc -l <"$tmp/listed") symbols of $list"
