#!/usr/bin/env bash
# Checks that docs/api.md mentions every public function: each name declared with AEV_EXPORT in
# include/asyncev.h must appear in backticks (`aev_name`) in docs/api.md. Exits 1 and lists the
# missing names otherwise. Works from any directory.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

header=include/asyncev.h
doc=docs/api.md

for f in "$header" "$doc"; do
    if [[ ! -f $f ]]; then
        echo "docs: $f not found" >&2
        exit 1
    fi
done

# A declaration starts a line with AEV_EXPORT; the function name is the identifier right before
# the first '(' (the parameter list may continue on the next lines).
mapfile -t names < <(sed -n 's/^AEV_EXPORT[^(]*[^A-Za-z0-9_]\([A-Za-z_][A-Za-z0-9_]*\)[[:space:]]*(.*/\1/p' \
    "$header" | sort -u)

if [[ ${#names[@]} -eq 0 ]]; then
    echo "docs: no AEV_EXPORT function found in $header" >&2
    exit 1
fi

missing=()
for name in "${names[@]}"; do
    if ! grep -qF "\`$name\`" "$doc"; then
        missing+=("$name")
    fi
done

total=${#names[@]}
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "docs: ${#missing[@]} of $total public functions not documented in $doc:" >&2
    printf '  %s\n' "${missing[@]}" >&2
    exit 1
fi
echo "docs: $total of $total public functions documented"

# Every public function must have its man page in docs/man/, and the committed pages must be what
# scripts/gen_man.sh makes from the header and docs/api.md now (regenerate and compare).
man_dir=docs/man
man_missing=()
for name in "${names[@]}"; do
    if [[ ! -f $man_dir/$name.3 ]]; then
        man_missing+=("$name")
    fi
done
if [[ ${#man_missing[@]} -gt 0 ]]; then
    echo "docs: ${#man_missing[@]} of $total public functions have no page in $man_dir:" >&2
    printf '  %s\n' "${man_missing[@]}" >&2
    exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! sh scripts/gen_man.sh "$tmp" >&2; then
    echo "docs: scripts/gen_man.sh failed" >&2
    exit 1
fi
if ! diff -r "$man_dir" "$tmp" >&2; then
    echo "docs: $man_dir is out of date: run scripts/gen_man.sh and commit the result" >&2
    exit 1
fi
# The pages must render without warnings, where groff is installed.
if command -v groff >/dev/null 2>&1; then
    for page in "$man_dir"/*.3; do
        warnings=$(groff -man -Tutf8 -ww -z "$page" 2>&1)
        if [[ -n $warnings ]]; then
            echo "docs: $page: $warnings" >&2
            exit 1
        fi
    done
fi
echo "docs: $total of $total public functions have an up-to-date man page in $man_dir"

# docs/guarantees.md proves each promise with tests named `tests/<file>.c: test_name`: each
# such test must still exist as a function in that file.
guarantees=docs/guarantees.md
stale=()
nrefs=0
while read -r file fn; do
    nrefs=$((nrefs + 1))
    if [[ ! -f $file ]] || ! grep -qE "^static void ${fn}\(" "$file"; then
        stale+=("$file: $fn")
    fi
done < <(grep -oE '`tests/[A-Za-z0-9_/]+\.c: test_[A-Za-z0-9_]+`' "$guarantees" | tr -d '`' |
    sed 's/: / /' | sort -u)
if [[ $nrefs -eq 0 ]]; then
    echo "docs: $guarantees names no test" >&2
    exit 1
fi
if [[ ${#stale[@]} -gt 0 ]]; then
    echo "docs: $guarantees names tests that do not exist:" >&2
    printf '  %s\n' "${stale[@]}" >&2
    exit 1
fi
echo "docs: the $nrefs tests named in $guarantees exist"
