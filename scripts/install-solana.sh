#!/usr/bin/env bash
# Build the real Solana test validator (agave 3.1.12) and cache it outside the repository,
# in ${GPUFED_CACHE:-$HOME/.cache/gpufed}/solana-3.1.12/bin/solana-test-validator.
# Prints the binary's path on stdout.
#
# The validator is built as a binary with its own lockfile, never as a library of our
# workspace: the library drags an old tonic/hyper/rustls stack, RocksDB and OpenSSL into our
# lockfile and target (+7 GB).
#
# Idempotent: when the cached binary reports 3.1.12 and was built with this script's
# flavour (below) it does nothing (milliseconds); a binary of another flavour is rebuilt.
# Cold: the longest build of an empty cache: 1218 s alone on 2 cores (37 CPU-min; 1954 s
# with `cargo install` and everything from source), RocksDB's C++ 850 s of it; peak RSS
# ~4.5 GB, a scratch target deleted afterwards; built without debug info. Its cargo timings
# report is kept next to the binary (cargo-timing.html).
#
# Flavour: a debug build (a release build takes far longer), except the signature, hash
# and erasure-code crates, optimized: in a debug build the broadcast stage spent ~70 % of
# a core verifying shred signatures in unoptimized curve25519 code, fell behind, and
# `getBlock` (settlement's finality check) lagged finality ever further once the slots got
# faster (e2e/src/validator/spin.rs). These five crates are small, so optimizing them adds
# little to the build. The flavour names only what changes the binary's behaviour.
#
# How (build cost only, not the binary's behaviour): the published package's source and
# lockfile are built with `cargo build --locked`, not `cargo install`, so that
#   - its two build-time `protoc` users get Debian's protoc (protobuf-compiler 3.21) through
#     a six-line stand-in for the `protobuf-src` crate (patched in), instead of compiling
#     protobuf 21.5 from C++ with autotools;
#   - OpenSSL is Debian's libssl (OPENSSL_NO_VENDOR=1) instead of a vendored build from C;
#   - clang++ compiles RocksDB's ~330 C++ files (at -O0, a debug build's level), in ~0.78 of
#     g++'s time (three of its files timed with both, 2026-12-04), the largest non-Rust part;
# every other crate stays at the version the package locked.
# Needs libclang-dev, libssl-dev, pkg-config, clang, protobuf-compiler (installed with
# apt-get when missing).
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
    [[ -x "$BIN" ]] && "$BIN" --version 2>/dev/null | grep "$VERSION" >/dev/null &&
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
for pkg in libclang-dev libssl-dev pkg-config clang protobuf-compiler; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep "install ok installed" >/dev/null || need+=("$pkg")
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
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH"
START=$(date +%s)
say "building solana-test-validator $VERSION ($FLAVOUR); log: $LOG"

# The package's source: `cargo install` with a bin name it lacks downloads and unpacks the
# package and the crates it locks, then stops (its expected error is checked).
if cargo install agave-validator --version "$VERSION" --locked --bin gpufed-fetch-only \
    --root "$SCRATCH/none" >"$LOG" 2>&1; then
    die "fetching agave-validator $VERSION: cargo install did not stop"
fi
grep -q "no bin target named" "$LOG" || die "fetching agave-validator $VERSION failed"
SRC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"agave-validator-$VERSION" 2>/dev/null | head -n 1)
[[ -f "$SRC/Cargo.lock" ]] || die "agave-validator $VERSION source (with Cargo.lock) not found"
cp -r "$SRC" "$SCRATCH/src"
chmod -R u+w "$SCRATCH/src"

# The stand-in for protobuf-src: the same API (protoc(), include()), Debian's files.
PROTOC_BIN=$(command -v protoc) || die "protoc not found (apt-get install protobuf-compiler)"
mkdir -p "$SCRATCH/protoc-shim/src"
cat >"$SCRATCH/protoc-shim/Cargo.toml" <<'TOML'
[package]
name = "protobuf-src"
version = "1.1.0"
edition = "2021"
description = "gpufed's stand-in: Debian's protoc instead of protobuf built from source"
license = "Apache-2.0"

[workspace]
TOML
cat >"$SCRATCH/protoc-shim/src/lib.rs" <<RUST
use std::path::PathBuf;
pub fn protoc() -> PathBuf {
    PathBuf::from("$PROTOC_BIN")
}
pub fn include() -> PathBuf {
    PathBuf::from("/usr/include")
}
RUST
printf '\n[patch.crates-io]\nprotobuf-src = { path = "../protoc-shim" }\n' >>"$SCRATCH/src/Cargo.toml"
(cd "$SCRATCH/src" && cargo update -p protobuf-src --offline) >>"$LOG" 2>&1 ||
    die "applying the protobuf-src stand-in to the lockfile failed"
# Nothing but protobuf-src (and autotools, which only built protobuf) may move in the lock.
others() { awk 'BEGIN { RS = ""; ORS = "\n\n" } !/name = "(protobuf-src|autotools)"/' "$1"; }
[[ "$(others "$SRC/Cargo.lock")" == "$(others "$SCRATCH/src/Cargo.lock")" ]] ||
    die "the lockfile changed beyond protobuf-src: $(diff <(others "$SRC/Cargo.lock") <(others "$SCRATCH/src/Cargo.lock") | head -n 20)"

args=(--locked --bin solana-test-validator --timings)
[[ -n "${GPUFED_SOLANA_JOBS:-}" ]] && args+=(--jobs "$GPUFED_SOLANA_JOBS")
for crate in "${HOT_CRATES[@]}"; do
    args+=(--config "profile.dev.package.$crate.opt-level=3")
done
rm -f "$STAMP"
# No debug info: the binary is a test fixture, and linking a 1 GB debug binary is slow.
(cd "$SCRATCH/src" && CARGO_PROFILE_DEV_DEBUG=0 CARGO_INCREMENTAL=0 OPENSSL_NO_VENDOR=1 \
    CXX=clang++ PROTOC="$PROTOC_BIN" CARGO_TARGET_DIR="$SCRATCH/target" cargo build "${args[@]}") >>"$LOG" 2>&1 ||
    die "building agave-validator $VERSION failed"
mkdir -p "$ROOT/bin"
cp "$SCRATCH/target/debug/solana-test-validator" "$BIN.new"
mv -f "$BIN.new" "$BIN"
cp "$SCRATCH"/target/cargo-timings/cargo-timing.html "$ROOT/" 2>/dev/null || true
rm -rf "$SCRATCH"
echo "$FLAVOUR" >"$STAMP"
cached_ok || die "$BIN does not report $VERSION"
say "built in $(($(date +%s) - START)) s: $BIN"
echo "$BIN"
