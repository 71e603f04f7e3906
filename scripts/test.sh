#!/usr/bin/env bash
# The test command of the README: installs the missing test peers, then builds and tests.
#
# Idempotent: peers already installed are left alone. Installs with the machine's package
# manager (apt-get; sudo when not root). Runs fine without a terminal (CI=true).
#
#   scripts/test.sh              # everything
#   scripts/test.sh -- --nocapture   # extra arguments go to `cargo test --all-targets`
set -euo pipefail

cd "$(dirname "$0")/.."

if [[ "${CI:-}" == "true" || ! -t 1 ]]; then
    export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
    export CARGO_TERM_PROGRESS_WHEN="${CARGO_TERM_PROGRESS_WHEN:-never}"
    bold="" reset=""
else
    bold=$'\033[1m' reset=$'\033[0m'
fi

step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$reset"; }
die() { printf '\nscripts/test.sh: error: %s\n' "$*" >&2; exit 1; }

# --- test peers ---------------------------------------------------------------------------

# command name -> Debian package
declare -A PEERS=(
    [prometheus]=prometheus   # the real Prometheus server, scraping the library's /metrics
    [tmux]=tmux               # drives the real binary on a terminal
    [docker-compose]=docker-compose   # validates compose/docker-compose.yml (no engine needed)
    [promtool]=prometheus     # checks the Prometheus config and alert rules of compose/
)

SUDO=()
apt_updated=false
policy_rc_created=false

cleanup() {
    if $policy_rc_created; then
        "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d || true
    fi
}
trap cleanup EXIT

apt_install() {
    local pkg=$1
    command -v apt-get >/dev/null 2>&1 ||
        die "package '$pkg' is missing and apt-get is not available; install '$pkg' with your package manager and re-run"
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 ||
            die "package '$pkg' is missing; installing it needs root (no sudo found): run 'apt-get install -y $pkg' as root and re-run"
        SUDO=(sudo)
    fi
    # Debian packages of daemons (prometheus) try to start their service on install; there is
    # no init system here. A policy-rc.d that denies starts makes that a no-op (docker images
    # usually ship one already; we only add ours when there is none, and remove it after).
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null ||
            die "cannot write /usr/sbin/policy-rc.d"
        "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
        policy_rc_created=true
    fi
    if ! $apt_updated; then
        echo "apt-get update"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q ||
            die "apt-get update failed (network? apt sources?); cannot install '$pkg'"
        apt_updated=true
    fi
    echo "apt-get install $pkg"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$pkg" ||
        die "apt-get install $pkg failed; install it by hand ('apt-get install $pkg') and re-run"
}

step "test peers"
for cmd in prometheus promtool tmux docker-compose; do
    pkg=${PEERS[$cmd]}
    if command -v "$cmd" >/dev/null 2>&1; then
        echo "$cmd: $(command -v "$cmd")"
    else
        echo "$cmd: missing, installing Debian package '$pkg'"
        apt_install "$pkg"
        hash -r
        command -v "$cmd" >/dev/null 2>&1 ||
            die "installed package '$pkg' but '$cmd' is still not on PATH ($PATH)"
        echo "$cmd: installed at $(command -v "$cmd")"
    fi
done
prometheus --version 2>&1 | sed -n 1p

# The real ClickHouse engine for the ClickHouse tests: chDB (PyPI chdb-core, ClickHouse 26.x
# inside) in a venv under target/, behind tests/it/support/chdb_front.py. Skipped when a real
# server is given (SERPHONA_OBS_TEST_CLICKHOUSE_URL).
CHDB_VERSION="26.9.0"
CHDB_VENV="${CARGO_TARGET_DIR:-target}/chdb-venv"
if [[ -n "${SERPHONA_OBS_TEST_CLICKHOUSE_URL:-}" ]]; then
    echo "clickhouse: $SERPHONA_OBS_TEST_CLICKHOUSE_URL (SERPHONA_OBS_TEST_CLICKHOUSE_URL)"
elif "$CHDB_VENV/bin/python" -c 'import chdb' >/dev/null 2>&1; then
    echo "chdb: $CHDB_VENV ($("$CHDB_VENV/bin/python" -c 'import chdb; print(chdb.__version__)' 2>/dev/null || echo '?'))"
else
    command -v python3 >/dev/null 2>&1 || die "python3 is needed for the ClickHouse test peer (chDB); install python3 and re-run"
    echo "chdb: missing, installing chdb-core==$CHDB_VERSION into $CHDB_VENV (about 180 MB)"
    python3 -m venv "$CHDB_VENV" || die "python3 -m venv $CHDB_VENV failed (Debian: apt-get install python3-venv)"
    "$CHDB_VENV/bin/pip" install -q --disable-pip-version-check "chdb-core==$CHDB_VERSION" ||
        die "pip install chdb-core==$CHDB_VERSION failed (network? PyPI?)"
    "$CHDB_VENV/bin/python" -c 'import chdb' || die "chdb-core installed but 'import chdb' fails"
fi

# --- Prometheus rules ---------------------------------------------------------------------

# The anomaly rules' unit tests (docs/stack.md, "Anomaly rules"): injected incidents fire, a clean
# week and a low-volume night do not. promtool exits non-zero on a failed test.
step "promtool test rules compose/prometheus/anomaly_rules_test.yml"
promtool test rules compose/prometheus/anomaly_rules_test.yml ||
    die "the anomaly rules' unit tests failed (compose/prometheus/anomaly_rules_test.yml; output above)"

# --- build and test -----------------------------------------------------------------------

step "cargo build --all-targets"
cargo build --all-targets

step "cargo build --no-default-features --lib (the core, as services link it)"
cargo build --no-default-features --lib

# Each sink and middleware is a cargo feature; every one must build alone, and the core must
# not pull in the ClickHouse client, axum or tonic.
step "feature matrix: cargo check --no-default-features --lib --features F"
for features in clickhouse otlp loki axum tonic otlp,tonic clickhouse,loki,otlp,axum,tonic; do
    echo "features: $features"
    cargo check -q --no-default-features --lib --features "$features"
done
if cargo tree --no-default-features -e normal --prefix none | grep -E '^(clickhouse|axum|tonic) '; then
    die "the core (--no-default-features) depends on the crates above; they belong behind their features"
fi
echo "core: no clickhouse, axum or tonic crate in 'cargo tree --no-default-features -e normal'"

step "cargo test --all-targets"
cargo test --all-targets "$@"

step "cargo test --doc"
cargo test --doc

step "all tests passed"
