# shellcheck shell=bash
# Sourced by build.sh and test.sh: installs the Debian/Ubuntu packages needed to build and test
# libasyncev, but only what is missing, so that a machine that is ready is left alone.
#
#   aev_install_deps          cmake, pkg-config, gcc, make, nm and cmocka
#   aev_install_deps tsan     the same plus clang with its ThreadSanitizer runtime

# Succeeds if CC can compile and link a trivial C program with the given flags.
aev_cc_links()
{
    local cc=$1 out
    shift
    command -v "$cc" >/dev/null 2>&1 || return 1
    out=$(mktemp)
    if printf 'int main(void) { return 0; }\n' | "$cc" "$@" -x c - -o "$out" >/dev/null 2>&1; then
        rm -f "$out"
        return 0
    fi
    rm -f "$out"
    return 1
}

aev_install_deps()
{
    local missing=() entry
    # command:package pairs for the base toolchain.
    for entry in cmake:cmake pkg-config:pkg-config gcc:gcc make:make nm:binutils; do
        command -v "${entry%%:*}" >/dev/null 2>&1 || missing+=("${entry#*:}")
    done
    if ! command -v pkg-config >/dev/null 2>&1 || ! pkg-config --exists cmocka; then
        missing+=(libcmocka-dev)
    fi
    if [ "${1:-}" = tsan ]; then
        # Debian's clang only recommends its sanitizer runtimes: ask for them explicitly.
        command -v clang >/dev/null 2>&1 || missing+=(clang)
        aev_cc_links clang -fsanitize=thread || missing+=(libclang-rt-dev)
    fi
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi

    # libc6-dev comes with gcc but is named anyway: the C headers are what we really need.
    local pkgs=("${missing[@]}" libc6-dev)
    echo "==> installing build dependencies: ${pkgs[*]}"
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: apt-get not found; please install the equivalent of: ${pkgs[*]}" >&2
        return 1
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "error: not root and sudo not found; please install: ${pkgs[*]}" >&2
            return 1
        fi
        sudo=(sudo)
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q || return 1
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${pkgs[@]}" || return 1
}
