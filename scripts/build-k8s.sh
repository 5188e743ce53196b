#!/usr/bin/env bash
# Build the real Kubernetes 1.20.2 control plane (kube-apiserver, kube-scheduler,
# kube-controller-manager) from Debian bookworm's `kubernetes` source package and cache
# the binaries outside the repository, in ${GPUFED_CACHE:-$HOME/.cache/gpufed}/k8s-1.20.2/bin.
#
# Idempotent: when the cached binaries already report v1.20.2 it does nothing (seconds).
# Cold: ~10-20 min on 2 cores. Needs root (or sudo) for apt-get when build deps are missing.
#
# Environment:
#   GPUFED_CACHE       cache root (default: $HOME/.cache/gpufed)
#   GPUFED_K8S_KEEP_SRC=1  keep the extracted source/build tree after a successful build
#   GPUFED_K8S_FORCE=1     rebuild even when cached binaries match
set -euo pipefail

K8S_VERSION=1.20.2
CACHE_ROOT="${GPUFED_CACHE:-$HOME/.cache/gpufed}"
BASE="$CACHE_ROOT/k8s-$K8S_VERSION"
BIN="$BASE/bin"
WORK="$BASE/work"
APT_DIR="$BASE/apt"
LOG="$BASE/build.log"
COMPONENTS=(kube-apiserver kube-scheduler kube-controller-manager)
# Source fixes applied before building; a cache built without them is rebuilt.
PATCHES="reflect2-1.0.2 openapi-zero-value"

say() { printf '[build-k8s] %s\n' "$*" >&2; }
die() {
    say "ERROR: $*"
    [[ -f "$LOG" ]] && say "see log: $LOG (last lines below)" && tail -n 30 "$LOG" >&2
    exit 1
}

cached_ok() {
    local c
    for c in "${COMPONENTS[@]}"; do
        [[ -x "$BIN/$c" ]] || return 1
        "$BIN/$c" --version 2>/dev/null | grep "v$K8S_VERSION" >/dev/null || return 1
    done
    [[ "$(cat "$BIN/.patches" 2>/dev/null)" == "$PATCHES" ]]
}

# Installs the Debian packages named that are missing (apt-get, as root or with sudo).
install_pkgs() {
    local need=() pkg sudo=""
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep "install ok installed" >/dev/null || need+=("$pkg")
    done
    ((${#need[@]})) || return 0
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "need root or sudo to install ${need[*]}"
        sudo=sudo
    fi
    mkdir -p "$BASE"
    say "installing ${need[*]}"
    if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${need[@]}" >>"$LOG" 2>&1; then
        $sudo apt-get update >>"$LOG" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${need[@]}" >>"$LOG" 2>&1 ||
            die "apt-get install ${need[*]} failed"
    fi
}

# What the tests run beside the binaries (etcd; jq in scripts/test-lanes.sh): installed
# on a cache hit too, as a cache carried to a fresh machine has the binaries only.
install_pkgs etcd-server jq

if [[ "${GPUFED_K8S_FORCE:-0}" != 1 ]] && cached_ok; then
    say "cached binaries in $BIN report v$K8S_VERSION; nothing to do"
    exit 0
fi

mkdir -p "$BASE" "$BIN"
: >"$LOG"
START=$(date +%s)
say "building Kubernetes v$K8S_VERSION control plane; log: $LOG"

# --- build dependencies -------------------------------------------------------------
install_pkgs golang-go rsync jq dpkg-dev etcd-server golang-github-modern-go-reflect2-dev
REFLECT2_SRC=/usr/share/gocode/src/github.com/modern-go/reflect2
[[ -d "$REFLECT2_SRC" ]] || die "Debian reflect2 sources not found at $REFLECT2_SRC"

# --- source package via a private apt configuration ------------------------------------
SRC_DIR="$WORK/kubernetes-$K8S_VERSION"
if ! ls "$WORK"/kubernetes_*.dsc >/dev/null 2>&1; then
    say "fetching the kubernetes source package (private apt config in $APT_DIR)"
    mkdir -p "$APT_DIR/sources.list.d" "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$WORK"
    SYS_SOURCES=/etc/apt/sources.list.d/debian.sources
    if [[ -f "$SYS_SOURCES" ]]; then
        # Take the stanza that carries the plain `bookworm` suite; keep its URIs and key.
        awk -v RS= -v ORS='\n\n' '/Suites:[^\n]*(^|[ \t])bookworm([ \t]|$)/' "$SYS_SOURCES" |
            awk 'NF==0 {print; next}
                 /^Types:/ {print "Types: deb-src"; next}
                 /^Suites:/ {print "Suites: bookworm"; next}
                 /^Components:/ {print "Components: main"; next}
                 {print}' >"$APT_DIR/sources.list.d/src.sources"
    fi
    if ! grep -q '^URIs:' "$APT_DIR/sources.list.d/src.sources" 2>/dev/null; then
        # Fall back to a one-line entry from /etc/apt/sources.list.
        uri=$(awk '$1=="deb" && $3=="bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
        [[ -n "$uri" ]] || die "no Debian bookworm entry found in $SYS_SOURCES or /etc/apt/sources.list"
        rm -f "$APT_DIR/sources.list.d/src.sources"
        echo "deb-src $uri bookworm main" >"$APT_DIR/sources.list.d/src.list"
    fi
    APT_OPTS=(
        -o "Dir::Etc::SourceList=/dev/null"
        -o "Dir::Etc::SourceParts=$APT_DIR/sources.list.d"
        -o "Dir::State::Lists=$APT_DIR/lists"
        -o "Dir::Cache=$APT_DIR/cache"
        -o "APT::Sandbox::User=root"
    )
    apt-get "${APT_OPTS[@]}" update >>"$LOG" 2>&1 || die "apt-get update (private deb-src config) failed"
    (cd "$WORK" && apt-get "${APT_OPTS[@]}" source --download-only kubernetes >>"$LOG" 2>&1) ||
        die "apt-get source --download-only kubernetes failed"
fi
DSC=$(ls "$WORK"/kubernetes_*.dsc | head -n1)

if [[ "$(cat "$SRC_DIR/.gpufed-prepared" 2>/dev/null)" != "$PATCHES" ]]; then
    rm -rf "$SRC_DIR"
    say "extracting $(basename "$DSC")"
    if ! (cd "$WORK" && dpkg-source -x "$DSC" "$SRC_DIR") >>"$LOG" 2>&1; then
        # A download cut short leaves the .dsc beside a partial tarball: drop them, so the
        # next run fetches the package again instead of failing here for good.
        rm -f "$WORK"/kubernetes_*
        die "dpkg-source -x failed (the downloaded source package was removed; run again)"
    fi
    [[ -f "$SRC_DIR/hack/lib/golang.sh" ]] || die "extracted tree has no hack/lib/golang.sh (stripped source?)"
    # reflect2 1.0.1 (vendored) crashes kube-apiserver under Go >= 1.18: use Debian's 1.0.2.
    V="$SRC_DIR/vendor/github.com/modern-go/reflect2"
    [[ -d "$V" ]] || die "vendored reflect2 not found at $V"
    rm -f "$V"/*.go "$V"/*.s
    for f in "$REFLECT2_SRC"/*.go "$REFLECT2_SRC"/*.s; do
        [[ -e "$f" ]] || continue
        case "$f" in *_test.go) continue ;; esac
        cp "$f" "$V/"
    done
    say "replaced vendored reflect2 with Debian's $(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev)"
    # Built with Go >= 1.16, the vendored OpenAPI validators take "" for null and refuse empty
    # strings in custom resources ("must be of type string: \"null\""): kubernetes#99804,
    # fixed upstream by kube-openapi#230 (check only for nil). Apply the same fix.
    for f in "$SRC_DIR/vendor/github.com/go-openapi/validate/type.go" \
        "$SRC_DIR/vendor/k8s.io/kube-openapi/pkg/validation/validate/type.go"; do
        [[ -f "$f" ]] || continue
        sed -i 's/if data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data)) {/if data == nil {/' "$f"
        if grep -q 'reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data))' "$f"; then
            die "could not apply the zero-value fix to $f"
        fi
    done
    say "applied the OpenAPI zero-value fix (kubernetes#99804)"
    echo "$PATCHES" >"$SRC_DIR/.gpufed-prepared"
fi

# --- build -----------------------------------------------------------------------------
cat >"$WORK/version.env" <<EOF
KUBE_GIT_COMMIT='faecb196815e248d3ecfb03c680a4507229c2a56'
KUBE_GIT_TREE_STATE='clean'
KUBE_GIT_VERSION='v$K8S_VERSION'
KUBE_GIT_MAJOR='1'
KUBE_GIT_MINOR='20'
EOF
say "go build (GOPATH mode, GOPROXY=off, CGO_ENABLED=0): ${COMPONENTS[*]}"
WHAT=""
for c in "${COMPONENTS[@]}"; do WHAT+="cmd/$c "; done
(
    cd "$SRC_DIR"
    export GOPROXY=off GO111MODULE=off CGO_ENABLED=0 GOFLAGS="" GOTOOLCHAIN=local
    export GOCACHE="$WORK/gocache" GOPATH="$WORK/gopath"
    export KUBE_GIT_VERSION_FILE="$WORK/version.env"
    export KUBE_VERBOSE=1 KUBE_BUILD_PLATFORMS=linux/amd64
    make WHAT="${WHAT% }"
) >>"$LOG" 2>&1 || die "make WHAT=... failed"

OUT_BIN="$SRC_DIR/_output/local/go/bin"
[[ -d "$OUT_BIN" ]] || OUT_BIN="$SRC_DIR/_output/bin"
for c in "${COMPONENTS[@]}"; do
    [[ -x "$OUT_BIN/$c" ]] || die "build produced no $c in $OUT_BIN"
    install -m 0755 "$OUT_BIN/$c" "$BIN/$c.tmp"
    mv -f "$BIN/$c.tmp" "$BIN/$c"
done
echo "$PATCHES" >"$BIN/.patches"
cached_ok || die "installed binaries do not report v$K8S_VERSION: $("$BIN/kube-apiserver" --version 2>&1)"

# The tree (~GBs with _output and the Go cache) can be rebuilt from the cached .dsc.
if [[ "${GPUFED_K8S_KEEP_SRC:-0}" != 1 ]]; then
    chmod -R u+w "$WORK/gopath" 2>/dev/null || true
    rm -rf "$SRC_DIR" "$WORK/gocache" "$WORK/gopath"
fi
END=$(date +%s)
say "done in $((END - START)) s: $("$BIN/kube-apiserver" --version) in $BIN"
echo "build wall seconds: $((END - START))" >>"$LOG"
