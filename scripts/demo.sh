#!/usr/bin/env bash
# The local federation demo (`make demo`): real Kubernetes 1.20.2 control planes — a hub
# and three providers with SIMULATED GPU nodes — the gpufed CRDs, the operator, and the
# jobs of examples/demo, shown until they finish, their usage settled on a real local Solana
# test validator (built by `make deps`). DEMO_KEEP=1 leaves everything running.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
RUN_DIR="${GPUFED_RUN:-/tmp/gpufed-e2e}/demo"
TIMEOUT="${DEMO_TIMEOUT:-240}"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# A wait that ran out fails the demo (exit 1) with the logs that say why: the README's main
# command must not look fine when the federation did not work.
fail() {
  printf '\n\033[1mDEMO FAILED: %s\033[0m\n' "$*" >&2
  for f in "$RUN_DIR"/operator.log "$RUN_DIR"/agent.log; do
    [[ -f "$f" ]] && { echo "--- last lines of $f" >&2; tail -n 40 "$f" >&2; }
  done
  exit 1
}

say "building gpufed (operator, agent, kubectl plugin, e2e harness, crdgen)"
cargo build -q -p gpufed-operator -p gpufed-agent -p kubectl-gpufed -p gpufed-e2e -p gpufed-api --bins
E2E="$TARGET_DIR/debug/gpufed-e2e"
OPERATOR="$TARGET_DIR/debug/gpufed-operator"
AGENT="$TARGET_DIR/debug/gpufed-agent"
PLUGIN="$TARGET_DIR/debug/kubectl-gpufed"
HELM="${HELM:-${GPUFED_CACHE:-$HOME/.cache/gpufed}/bin/helm}"

cleanup() {
  [[ -n "${OP_PID:-}" ]] && kill "$OP_PID" 2>/dev/null && wait "$OP_PID" 2>/dev/null || true
  [[ -n "${AGENT_PID:-}" ]] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null || true
  [[ -n "${CHAIN_PID:-}" ]] && kill "$CHAIN_PID" 2>/dev/null && wait "$CHAIN_PID" 2>/dev/null || true
  if [[ "${DEMO_KEEP:-0}" != 1 ]]; then "$E2E" --run-dir "$RUN_DIR" down >/dev/null || true; fi
}
trap cleanup EXIT

say "starting the federation: hub + provider-a (H100 NVLink), provider-b (A100), provider-c (RTX 4090)"
mkdir -p "$(dirname "$RUN_DIR")"
"$E2E" --run-dir "$RUN_DIR" up | tee "$RUN_DIR.up.txt"
kc() { grep -E "^ +$1 " "$RUN_DIR.up.txt" | sed -E 's/.*KUBECONFIG=//'; }
HUB=$(kc hub)
[[ -f "$HUB" ]] || { echo "no hub kubeconfig in the harness output" >&2; exit 1; }
k() { kubectl --kubeconfig "$HUB" "$@"; }


say "installing the CRDs (CEL rules stripped: the 1.20 API server does not know them)"
CRD_DIR=$(mktemp -d)
"$TARGET_DIR/debug/crdgen" --no-cel "$CRD_DIR"
k apply -f "$CRD_DIR" >/dev/null
k wait --for condition=established --timeout=60s crd/computejobs.gpufed.io crd/gpuproviders.gpufed.io crd/stakes.gpufed.io crd/computeservices.gpufed.io crd/computequotas.gpufed.io >/dev/null
k create namespace gpufed-system --dry-run=client -o yaml | k apply -f - >/dev/null

say "starting a local Solana test validator: settlement token, tenants' escrows, payout accounts"
rm -f "$RUN_DIR/chain/chain.env"
wallets=$(grep -oE 'payoutWallet: [1-9A-HJ-NP-Za-km-z]+' examples/demo/providers.yaml | awk '{print "--payout-wallet " $2}')
# shellcheck disable=SC2086
"$E2E" --run-dir "$RUN_DIR" chain --tenant team-llm --tenant team-media $wallets \
  >"$RUN_DIR.chain.log" 2>&1 &
CHAIN_PID=$!
for _ in $(seq 120); do [[ -f "$RUN_DIR/chain/chain.env" ]] && break; kill -0 "$CHAIN_PID" 2>/dev/null || break; sleep 1; done
[[ -f "$RUN_DIR/chain/chain.env" ]] || { echo "the validator did not come up; see $RUN_DIR.chain.log" >&2; tail -5 "$RUN_DIR.chain.log" >&2; exit 1; }
# shellcheck disable=SC1091
source "$RUN_DIR/chain/chain.env"
echo "RPC $SOLANA_RPC, mint $SETTLEMENT_MINT"
for t in team-llm team-media; do
  var="ESCROW_${t//-/_}"
  k create namespace "$t" --dry-run=client -o yaml | k apply -f - >/dev/null
  k annotate --overwrite namespace "$t" "gpufed.io/escrow-account=${!var}" >/dev/null
  echo "tenant $t pays from escrow ${!var}"
done

say "registering the providers (kubeconfig Secrets for the push-mode ones + GpuProviders)"
"$HELM" template gpufed charts/gpufed --show-only templates/agent-rbac.yaml | k apply -f - >/dev/null
for p in provider-a provider-b; do
  k -n gpufed-system create secret generic "$p-kubeconfig" --from-file=kubeconfig="$(kc "$p")" \
    --dry-run=client -o yaml | k apply -f - >/dev/null
done
k apply -f examples/demo/providers.yaml

say "starting gpufed-operator (log: $RUN_DIR/operator.log)"
KUBECONFIG="$HUB" RUST_LOG="${RUST_LOG:-info,kube=warn}" "$OPERATOR" --admin-addr 127.0.0.1:0 \
  --namespace gpufed-system --solana-rpc "$SOLANA_RPC" --settlement-keypair "$SETTLEMENT_KEYPAIR" \
  --settlement-mint "$SETTLEMENT_MINT" --settlement-interval 1s --meter-slice 10s --meter-lag 20s \
  >"$RUN_DIR/operator.log" 2>&1 &
OP_PID=$!

say "provider-c is behind NAT: a bootstrap token, and its gpufed-agent connects out (log: $RUN_DIR/agent.log)"
for _ in $(seq 30); do k -n gpufed-agent-provider-c get configmap gpufed-agent-config >/dev/null 2>&1 && break; sleep 1; done
"$PLUGIN" --kubeconfig "$HUB" provider token provider-c --ttl 1h -o json | tee "$RUN_DIR/provider-c.json"
sed -nE 's/.*"token": *"([a-z0-9.]+)".*/\1/p' "$RUN_DIR/provider-c.json" >"$RUN_DIR/provider-c.token"
k config view --raw --minify --flatten -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' \
  | base64 -d >"$RUN_DIR/hub-ca.pem"
KUBECONFIG="$(kc provider-c)" RUST_LOG="${RUST_LOG:-info,kube=warn}" "$AGENT" --provider provider-c \
  --hub-server "$(k config view --minify -o jsonpath='{.clusters[0].cluster.server}')" \
  --hub-ca-file "$RUN_DIR/hub-ca.pem" --bootstrap-token-file "$RUN_DIR/provider-c.token" \
  >"$RUN_DIR/agent.log" 2>&1 &
AGENT_PID=$!
for _ in $(seq 60); do
  ready=$(k get gpup -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{" "}{end}')
  [[ "$ready" == "True True True " ]] && break
  sleep 1
done
k get gpup
[[ "$ready" == "True True True " ]] || fail "the three providers did not all become Ready (Ready: $ready)"

say "submitting the demo jobs (examples/demo/jobs.yaml)"
k apply -f examples/demo/jobs.yaml
say "starting a model server: 2 replicas (examples/demo/service.yaml)"
k apply -f examples/demo/service.yaml

say "watching the jobs (up to ${TIMEOUT}s)"
# The jobs of examples/demo/jobs.yaml that must succeed (cheap-h100 stays queued on purpose).
DEMO_JOBS=(team-llm/llama-finetune team-llm/bert-sweep team-media/sdxl-render)
job_phase() { k -n "${1%/*}" get cjob "${1#*/}" -o jsonpath='{.status.phase}' 2>/dev/null || true; }
deadline=$((SECONDS + TIMEOUT))
done_jobs=0
while ((SECONDS < deadline)); do
  k get cjob -A -o wide
  k get cquota -A
  done_jobs=0
  for j in "${DEMO_JOBS[@]}"; do
    case "$(job_phase "$j")" in Succeeded | Failed) done_jobs=$((done_jobs + 1)) ;; esac
  done
  ((done_jobs >= ${#DEMO_JOBS[@]})) && break
  sleep 3
  echo
done
((done_jobs >= ${#DEMO_JOBS[@]})) || fail "only $done_jobs of the ${#DEMO_JOBS[@]} demo jobs ended within ${TIMEOUT}s"
# Ended is not enough: a demo whose jobs all failed must not pass.
failed_jobs=()
for j in "${DEMO_JOBS[@]}"; do
  phase=$(job_phase "$j")
  [[ "$phase" == Succeeded ]] && continue
  failed_jobs+=("$j")
  echo "--- $j ended $phase; its conditions:" >&2
  k -n "${j%/*}" get cjob "${j#*/}" \
    -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}' >&2 || true
done
((${#failed_jobs[@]} == 0)) || fail "demo jobs did not succeed: ${failed_jobs[*]}"

say "the model server: replicas, their endpoints, and the hub Service's endpoints"
for _ in $(seq 30); do
  ready_replicas=$(k -n team-media get csvc chat -o jsonpath='{.status.readyReplicas}')
  [[ "$ready_replicas" == 2 ]] && break
  sleep 2
done
[[ "$ready_replicas" == 2 ]] || fail "the model server has ${ready_replicas:-0} of 2 ready replicas"
k -n team-media get csvc chat -o wide
k -n team-media get csvc chat -o jsonpath='{range .status.replicaStatus[*]}{.name}{"\t"}{.provider}{"\t"}{.address}{"\tready="}{.ready}{"\n"}{end}'
k -n team-media get endpoints chat

say "why cheap-h100 is still queued"
k -n team-media get cjob cheap-h100 -o jsonpath='{.status.conditions[?(@.type=="Placed")].message}{"\n"}'
say "usage of llama-finetune"
k -n team-llm get cjob llama-finetune -o jsonpath='{.status.usage}{"\n"}'
say "settlement on the local validator (records journaled → settled, finalized)"
billing='{range .items[*]}{.metadata.namespace}/{.metadata.name}{"\t"}{.status.phase}{"\t"}{.status.usage.cost}{"\t"}{.status.billing.records}{"\t"}{.status.billing.settledRecords}{"\t"}{.status.billing.settledAmount}{"\t"}{.status.billing.signatures[0]}{"\n"}{end}'
for _ in $(seq 60); do
  pending=$(k get cjob -A -o jsonpath="$billing" | awk -F'\t' '($2=="Succeeded"||$2=="Failed") && $4!="" && $4!=$5' | wc -l)
  unbilled=$(k get cjob -A -o jsonpath="$billing" | awk -F'\t' '$2=="Succeeded" && $4==""' | wc -l)
  [[ "$pending" -eq 0 && "$unbilled" -eq 0 ]] && break
  sleep 2
done
# `column` is optional on Debian (bsdextrautils): tab-separated without it.
table() { if command -v column >/dev/null; then column -t -s $'\t'; else cat; fi; }
{ printf 'JOB\tPHASE\tCOST\tRECORDS\tSETTLED\tAMOUNT\tSIGNATURE\n'; k get cjob -A -o jsonpath="$billing"; } | table
[[ "$pending" -eq 0 && "$unbilled" -eq 0 ]] ||
  fail "usage not settled on chain: $pending ended jobs with unsettled records, $unbilled succeeded jobs never billed"

say "providers after the run"
k get gpup
if [[ "${DEMO_KEEP:-0}" == 1 ]]; then
  echo "left running (DEMO_KEEP=1): KUBECONFIG=$HUB, Solana RPC $SOLANA_RPC;"
  echo "stop with 'make e2e-down' and kill $OP_PID $CHAIN_PID"
  trap - EXIT
fi
