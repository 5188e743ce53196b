#!/usr/bin/env bash
# Runs on the GPU machine from the bundle scripts/gpu-bundle.sh builds (copied there as
# gpu-bundle/run.sh). Each check writes its output to $OUT (what the device tool brings
# back); the summary at the end is the part to record (docs/gpu-session.md).
#
# About 6 to 8 minutes on an H100/H200 (estimate): unit tests (on a GPU machine their
# driver branches run: NVML discovers a real inventory, CUDA lists devices by UUID), the
# challenge on every GPU (30 runs of 4096x1024x4096 in u32, then in f64, each idle and
# then beside a load kernel in another context, the first run of each checked row by row
# against the CPU on all cores; then 10 runs of the tall f64 shape 1048576x65536x64); the
# device-plugin bench (Allocate, health latency, NVML discovery, 60 s of the NVML loop, and
# the plugin on the NVML inventory against the fake kubelet: register, ListAndWatch,
# Allocate, a refused second container, 5 s of NVML health) runs before the challenge.
# Exits non-zero when any check fails or the GPU was not actually used.
#
# The loan is short (docs/gpu-session.md): the checks run in the order of what they prove
# for the issues (the device plugin's NVML path first, the long tall pass last), and each
# stops at a deadline (GPUFED_GPU_DEADLINE_S, default 500 s after the start, inside the
# tool's timeout_s=540), so a slow pass costs the checks after it, never the summary.
set -uo pipefail
B="$(cd "$(dirname "$0")" && pwd)"
OUT="${OUT:-/tmp/gpufed-gpu-out}"
DEADLINE="${GPUFED_GPU_DEADLINE_S:-500}"
mkdir -p "$OUT"
status=0

check() { # name command...
    local name=$1
    shift
    local t0=$SECONDS left=$((DEADLINE - SECONDS))
    if ((left < 15)); then
        status=1
        printf '%-22s SKIPPED: %ds left before the %ds deadline\n' "$name" "$left" "$DEADLINE" | tee -a "$OUT/summary.txt"
        return
    fi
    timeout -k 5 "$left" "$@" >"$OUT/$name.txt" 2>&1
    local rc=$?
    [[ $rc -eq 0 ]] || status=1
    local note=""
    ((rc == 124 || rc == 137)) && note=" (stopped at the deadline)"
    printf '%-22s rc=%d %3ds%s\n' "$name" "$rc" "$((SECONDS - t0))" "$note" | tee -a "$OUT/summary.txt"
}

# The driver's libraries may sit outside the loader's default path (seen: a read-only
# /usr/local/nvidia mount); NVML (libnvidia-ml.so.1) and CUDA (libcuda.so.1) load at run time.
for d in /usr/local/nvidia/lib /usr/local/nvidia/lib64; do
    [[ -d $d ]] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
{ nvidia-smi; nvidia-smi topo -m; echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"; ldconfig -p | grep -E "libcuda\.so|libnvidia-ml\.so"; } >"$OUT/nvidia-smi.txt" 2>&1 || true
grep -m1 -E "Driver Version" "$OUT/nvidia-smi.txt" | tee -a "$OUT/summary.txt"

check cuda-tests "$B/cuda-lib-tests" --test-threads 1
check device-plugin-tests "$B/device-plugin-lib-tests"
check device-plugin-bench "$B/bench-device-plugin" --bench
check challenge-gpu env GPUFED_CHALLENGE_RUNS="${GPUFED_CHALLENGE_RUNS:-30}" "$B/bench-challenge-gpu" --bench
check challenge-gpu-f64 env GPUFED_CHALLENGE_ARITH=f64 GPUFED_CHALLENGE_RUNS="${GPUFED_CHALLENGE_RUNS:-30}" "$B/bench-challenge-gpu" --bench
# A tall f64 shape (rows in blocks, docs/trust.md "What the hub's clock proves"): long
# enough that the hub's own clock, not the node's report, tells an H100 from slower
# hardware. 10 runs; too long to check every row on the CPU (the self-check rows are).
check challenge-gpu-tall env GPUFED_CHALLENGE_ARITH=f64 GPUFED_CHALLENGE_SHAPE=1048576x65536x64 GPUFED_CHALLENGE_RUNS="${GPUFED_CHALLENGE_TALL_RUNS:-10}" "$B/bench-challenge-gpu" --bench

expect() { # file pattern what
    grep -qE "$2" "$OUT/$1" 2>/dev/null || { echo "NOT SEEN: $3" | tee -a "$OUT/summary.txt"; status=1; }
}
expect challenge-gpu.txt "rows equal the CPU reference" "the GPU's challenge result checked against the CPU"
expect challenge-gpu-f64.txt "rows equal the CPU reference" "the GPU's f64 challenge result checked against the CPU"
expect challenge-gpu-tall.txt "suggested band" "the tall f64 challenge measured"
expect device-plugin-bench.txt "^NVML: [1-9]" "NVML discovering at least one GPU"
expect device-plugin-bench.txt "^NVML poll cost: [0-9]" "the NVML loop's CPU cost"
expect device-plugin-bench.txt "^NVML kubelet path: ok" "registration, ListAndWatch, Allocate and health on the NVML inventory"

{
    echo "--- NVML"
    grep -E "^NVML|^Allocate|ListAndWatch" "$OUT/device-plugin-bench.txt"
    echo "--- challenge"
    grep -hE "challenge_gpu:|rows equal|device time|floor|suggested band|model:|params:|KernelMicros|hub's clock" "$OUT/challenge-gpu.txt" "$OUT/challenge-gpu-f64.txt" "$OUT/challenge-gpu-tall.txt"
    echo "--- test results"
    grep -hE "test result|FAILED|panicked" "$OUT/cuda-tests.txt" "$OUT/device-plugin-tests.txt"
} 2>/dev/null | tee -a "$OUT/summary.txt"
exit $status
