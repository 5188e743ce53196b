#!/usr/bin/env bash
# Builds, here, what a session with a GPU machine runs there (docs/gpu-session.md), into
# gpu-bundle/ (ignored by git): release builds of the CUDA executor's and the device
# plugin's unit tests, the benches device_plugin (NVML discovery and polling cost) and
# challenge_gpu (the challenge on every GPU, checked against the CPU, and a band), and
# gpu-bundle/run.sh. Building there would spend the lease's minutes on compiling.
#
# Then, with the device tool: run(command="gpu-bundle/run.sh", carry=["gpu-bundle"]).
#
# Environment: GPUFED_BUNDLE_PROFILE (default release; `dev` for a quick local dry run),
# CARGO_TARGET_DIR as for any cargo build.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE="${GPUFED_BUNDLE_PROFILE:-release}"
OUT=gpu-bundle
rm -rf "$OUT"
mkdir -p "$OUT"

# Prints "<target name> <kind> <executable>" for every executable cargo builds.
executables() {
    cargo "$@" --profile "$PROFILE" --message-format=json-render-diagnostics | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["target"]["kind"][0], m["executable"])
'
}

copy() { # name source
    cp "$2" "$OUT/$1"
    strip "$OUT/$1" 2>/dev/null || true
}

while read -r name kind exe; do
    case "$name/$kind" in
        gpufed_cuda/lib) copy cuda-lib-tests "$exe" ;;
        gpufed_device_plugin/lib) copy device-plugin-lib-tests "$exe" ;;
    esac
done < <(executables test -p gpufed-cuda -p gpufed-device-plugin --lib --no-run)

while read -r name kind exe; do
    case "$name" in
        device_plugin) copy bench-device-plugin "$exe" ;;
        challenge_gpu) copy bench-challenge-gpu "$exe" ;;
    esac
done < <(executables test -p gpufed-device-plugin --bench device_plugin --bench challenge_gpu --no-run)

cp scripts/gpu-run.sh "$OUT/run.sh"
for f in cuda-lib-tests device-plugin-lib-tests bench-device-plugin bench-challenge-gpu run.sh; do
    [[ -x "$OUT/$f" ]] || { echo "gpu-bundle: $f missing" >&2; exit 1; }
done
du -sh "$OUT"
