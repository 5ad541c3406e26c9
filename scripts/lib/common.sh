# Shared by scripts/demo, scripts/test and bench/*: install what is missing, build.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export ROOT

# Packages the build and the suite need (Debian 12 names).
BUILD_PACKAGES=(build-essential cmake pkg-config libuv1-dev libpq-dev libcurl4-openssl-dev
    libjson-c-dev check libinih-dev libmicrohttpd-dev libsystemd-dev libicu-dev postgresql
    postgresql-contrib ca-certificates iptables)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Installs the given Debian packages that are not installed yet; skips the rest.
ensure_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "missing packages: ${missing[*]} (run as root to install them)"
        SUDO=sudo
    fi
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    ${SUDO:-} apt-get update -qq </dev/null || die "apt-get update failed"
    ${SUDO:-} apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null \
        || die "apt-get install ${missing[*]} failed"
}

# as_pg CMD...: run a cluster-side command (initdb, pg_ctl); the server refuses to run as root,
# so as root it runs as `postgres`.
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# The PostgreSQL server binaries (initdb, pg_ctl, pgbench).
pg_bindir() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    return 1
}

# build DIR [cmake options...]: configure if needed and build everything.
build() {
    local dir=$1
    shift
    cmake -S "$ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null \
        || die "cmake configure failed in $dir"
    cmake --build "$dir" -j "$(nproc)" >/dev/null || {
        cmake --build "$dir" -j1 2>&1 | grep -E 'error|Error' | head -40 >&2
        die "build failed in $dir"
    }
}

# build_targets DIR "TARGET..." [cmake options...]: configure if needed, build only those targets.
build_targets() {
    local dir=$1 targets=$2
    shift 2
    # shellcheck disable=SC2086 # the targets are words
    cmake -S "$ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null \
        || die "cmake configure failed in $dir"
    # shellcheck disable=SC2086
    cmake --build "$dir" -j "$(nproc)" --target $targets >/dev/null || {
        # shellcheck disable=SC2086
        cmake --build "$dir" -j1 --target $targets 2>&1 | grep -E 'error|Error' | head -40 >&2
        die "build failed in $dir"
    }
}

# The unit test binaries' target names (tests/unit/test_*.c).
unit_test_targets() {
    local f
    for f in "$ROOT"/tests/unit/test_*.c; do
        basename "$f" .c
    done | tr '\n' ' '
}
