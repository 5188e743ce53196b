#!/usr/bin/env bash
# Build the real Solana test validator (agave 3.1.12) and cache it outside the repository,
# in ${GPUFED_CACHE:-$HOME/.cache/gpufed}/solana-3.1.12/bin/solana-test-validator.
# Prints the binary's path on stdout.
#
# The validator is installed as a binary with its own lockfile, never as a library of our
# workspace: the library drags an old tonic/hyper/rustls stack, RocksDB and OpenSSL into our
# lockfile and target (+7 GB).
#
# Idempotent: when the cached binary reports 3.1.12 and was built with this script's
# flavour (below) it does nothing (milliseconds); a binary of another flavour is rebuilt.
# Cold: ~21–33 min on 2 cores (RocksDB, OpenSSL and protobuf compile from C/C++), peak RSS
# 4.5 GB, 7.7 GB of scratch target (deleted afterwards); built without debug info.
#
# Flavour: a debug build (a release build takes far longer), except the signature, hash
# and erasure-code crates, optimized: in a debug build the broadcast stage spent ~70 % of
# a core verifying shred signatures in unoptimized curve25519 code, fell behind, and
# `getBlock` (settlement's finality check) lagged finality ever further once the slots got
# faster (e2e/src/validator/spin.rs). These five crates are small, so optimizing them adds
# little to the build (not timed apart: the whole build took 1954 s on 2026-12-04).
# Needs libclang-dev, libssl-dev, pkg-config (installed with apt-get when missing).
#
# Usage: install-solana.sh [--deps-only | --check]   (--deps-only: install the apt build
# dependencies and stop; .ci/run does that in the foreground before building in the
# background. --check: exit 0 when the cached binary is current, 1 when it must be built.)
# Two runs at once do not build twice: the second waits for the first (a lock in the cache).
#
# Environment:
#   GPUFED_CACHE   cache root (default: $HOME/.cache/gpufed)
#   GPUFED_SOLANA_JOBS   cargo build jobs (default: cargo's default)
set -euo pipefail

VERSION=3.1.12
CACHE_ROOT="${GPUFED_CACHE:-$HOME/.cache/gpufed}"
ROOT="$CACHE_ROOT/solana-$VERSION"
BIN="$ROOT/bin/solana-test-validator"
LOG="$ROOT/build.log"

say() { printf '[install-solana] %s\n' "$*" >&2; }
die() {
    say "ERROR: $*"
    [[ -f "$LOG" ]] && tail -n 30 "$LOG" >&2
    exit 1
}

HOT_CRATES=(curve25519-dalek ed25519-dalek sha2 reed-solomon-erasure blake3)
FLAVOUR="debug, no debug info, opt-level 3: ${HOT_CRATES[*]}"
STAMP="$ROOT/flavour"
cached_ok() {
    [[ -x "$BIN" ]] && "$BIN" --version 2>/dev/null | grep -q "$VERSION" &&
        [[ "$(cat "$STAMP" 2>/dev/null)" == "$FLAVOUR" ]]
}

if cached_ok; then
    echo "$BIN"
    exit 0
fi
[[ "${1:-}" == "--check" ]] && exit 1
DEPS_ONLY=false
[[ "${1:-}" == "--deps-only" ]] && DEPS_ONLY=true

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "need root or sudo to install build dependencies"
    SUDO=sudo
fi
need=()
for pkg in libclang-dev libssl-dev pkg-config clang; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
    say "installing build dependencies: ${need[*]}"
    $SUDO apt-get install -y -q "${need[@]}" >&2 ||
        { $SUDO apt-get update -q >&2 && $SUDO apt-get install -y -q "${need[@]}" >&2; } ||
        die "apt-get install ${need[*]} failed"
fi

$DEPS_ONLY && exit 0

mkdir -p "$ROOT"
exec 9>"$ROOT/.lock"
if ! flock -n 9; then
    say "another build of the validator is running: waiting for it"
    flock 9
    if cached_ok; then
        echo "$BIN"
        exit 0
    fi
fi
SCRATCH="$CACHE_ROOT/tmp/solana-build"
mkdir -p "$SCRATCH"
START=$(date +%s)
say "building solana-test-validator $VERSION ($FLAVOUR; cold: ~21–33 min on 2 cores); log: $LOG"
args=()
[[ -n "${GPUFED_SOLANA_JOBS:-}" ]] && args+=(--jobs "$GPUFED_SOLANA_JOBS")
for crate in "${HOT_CRATES[@]}"; do
    args+=(--config "profile.dev.package.$crate.opt-level=3")
done
rm -f "$STAMP"
# No debug info: the binary is a test fixture, and linking a 1 GB debug binary is slow.
# --force: replaces a cached binary of the same version built with another flavour.
CARGO_PROFILE_DEV_DEBUG=0 CARGO_TARGET_DIR="$SCRATCH" cargo install agave-validator --version "$VERSION" --locked --debug \
    --force --bin solana-test-validator --root "$ROOT" "${args[@]}" >"$LOG" 2>&1 ||
    die "cargo install agave-validator $VERSION failed"
rm -rf "$SCRATCH"
echo "$FLAVOUR" >"$STAMP"
cached_ok || die "$BIN does not report $VERSION"
say "built in $(($(date +%s) - START)) s: $BIN"
echo "$BIN"
