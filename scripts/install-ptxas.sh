#!/usr/bin/env bash
# Install NVIDIA's PTX assembler `ptxas` (CUDA 12.9) into
# ${GPUFED_CACHE:-$HOME/.cache/gpufed}/bin/ptxas and print its path.
#
# cuda/tests/ptxas.rs assembles the compute challenge's hand-written PTX with it for
# several GPU generations, so a PTX mistake fails CI on machines without a GPU. ptxas
# ships in the Python wheel nvidia-cuda-nvcc-cu12, fetched with pip's own client (no
# install into any Python environment); only the one binary is kept. It needs no driver.
#
# Idempotent: when the cached ptxas already reports release 12.9 it does nothing.
# Cold: one ~40 MB download, a few seconds. Needs python3 with pip.
#
# Environment:
#   GPUFED_CACHE           cache root (default: $HOME/.cache/gpufed)
#   GPUFED_PTXAS_PACKAGE   pip requirement (default: nvidia-cuda-nvcc-cu12==12.9.86)
set -euo pipefail

RELEASE="release 12.9"
PACKAGE="${GPUFED_PTXAS_PACKAGE:-nvidia-cuda-nvcc-cu12==12.9.86}"
CACHE_ROOT="${GPUFED_CACHE:-$HOME/.cache/gpufed}"
BIN="$CACHE_ROOT/bin"
PTXAS="$BIN/ptxas"

say() { printf '[install-ptxas] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# `grep >/dev/null`, not `grep -q`: under pipefail, -q's early exit can SIGPIPE ptxas and
# fail the check on a good binary (scripts/lint-scripts.sh refuses the pattern).
cached_ok() {
    [[ -x "$PTXAS" ]] && "$PTXAS" --version 2>/dev/null | grep "$RELEASE" >/dev/null
}

if cached_ok; then
    echo "$PTXAS"
    exit 0
fi

command -v python3 >/dev/null || die "python3 (with pip) is required to fetch $PACKAGE"
mkdir -p "$CACHE_ROOT/tmp" "$BIN"
TMP=$(mktemp -d "$CACHE_ROOT/tmp/ptxas.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

say "fetching $PACKAGE"
python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$TMP" "$PACKAGE" >&2 \
    || die "pip could not fetch $PACKAGE"
WHEEL=$(ls "$TMP"/*.whl 2>/dev/null | head -n1)
[[ -n "$WHEEL" ]] || die "no wheel downloaded for $PACKAGE"
python3 - "$WHEEL" "$TMP/ptxas" <<'PY'
import shutil, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.endswith("/bin/ptxas")]
    if not names:
        sys.exit("the wheel holds no bin/ptxas")
    with z.open(names[0]) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
chmod 0755 "$TMP/ptxas"
mv -f "$TMP/ptxas" "$PTXAS"
cached_ok || die "$PTXAS does not report $RELEASE"
say "installed $("$PTXAS" --version | tail -n1)"
echo "$PTXAS"
