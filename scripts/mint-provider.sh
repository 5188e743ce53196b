#!/usr/bin/env bash
# Mint the hub's access to a member (provider) cluster and print, on stdout, the two
# manifests the HUB needs: the kubeconfig Secret and the GpuProvider that references it.
#
# Run it against the MEMBER cluster after `helm install gpufed-provider charts/gpufed-provider`
# (which creates the ServiceAccount and its ClusterRole), then apply the output to the hub:
#
#   scripts/mint-provider.sh --name frankfurt-dc1 --region eu-west \
#       --wallet <payout wallet> --price NVIDIA-H100-80GB-HBM3=2.10 \
#       --context member-admin > frankfurt-dc1.yaml
#   kubectl --context hub apply -f frankfurt-dc1.yaml
#
# The token comes from the TokenRequest API (`kubectl create token`, bounded by
# --duration; re-run before it expires: rotating the Secret does not interrupt running
# jobs). --legacy-token instead creates a non-expiring kubernetes.io/service-account-token
# Secret in the member cluster (needs the token controller) for clusters that refuse long
# TokenRequests.
#
# Flags:
#   --name NAME                GpuProvider name (required)
#   --region REGION            spec.region (default: unknown)
#   --wallet ADDRESS           spec.payoutWallet (required)
#   --price MODEL=PRICE        spec.prices entry, repeatable (at least one)
#   --namespace NS             member namespace of the ServiceAccount (default: gpufed-system)
#   --service-account SA       member ServiceAccount (default: gpufed-hub)
#   --hub-namespace NS         hub namespace of the Secret (default: gpufed-system)
#   --server URL               member API server URL as the hub reaches it
#                              (default: the current context's server)
#   --duration D               token lifetime for kubectl create token (default: 8760h)
#   --legacy-token             use a service-account-token Secret instead
#   --context CTX / --kubeconfig FILE   passed to kubectl for the member cluster
set -euo pipefail

name="" region="unknown" wallet="" prices=() ns="gpufed-system" sa="gpufed-hub"
hub_ns="gpufed-system" server="" duration="8760h" legacy=0 kargs=()
die() { printf 'mint-provider: %s\n' "$*" >&2; exit 1; }
while [[ $# -gt 0 ]]; do
    if [[ "$1" == --*=* ]]; then
        set -- "${1%%=*}" "${1#*=}" "${@:2}"
    fi
    case "$1" in
        --name) name="$2"; shift 2 ;;
        --region) region="$2"; shift 2 ;;
        --wallet) wallet="$2"; shift 2 ;;
        --price) prices+=("$2"); shift 2 ;;
        --namespace) ns="$2"; shift 2 ;;
        --service-account) sa="$2"; shift 2 ;;
        --hub-namespace) hub_ns="$2"; shift 2 ;;
        --server) server="$2"; shift 2 ;;
        --duration) duration="$2"; shift 2 ;;
        --legacy-token) legacy=1; shift ;;
        --context | --kubeconfig) kargs+=("$1=$2"); shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown flag $1 (see --help)" ;;
    esac
done
[[ -n "$name" ]] || die "--name is required"
[[ -n "$wallet" ]] || die "--wallet is required"
[[ ${#prices[@]} -gt 0 ]] || die "at least one --price MODEL=PRICE is required"
k() { kubectl "${kargs[@]}" "$@"; }

k -n "$ns" get serviceaccount "$sa" >/dev/null ||
    die "ServiceAccount $ns/$sa not found: install charts/gpufed-provider first"

if [[ -z "$server" ]]; then
    server=$(k config view --minify -o jsonpath='{.clusters[0].cluster.server}')
fi
ca=$(k config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
if [[ -z "$ca" ]]; then
    ca_file=$(k config view --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')
    [[ -n "$ca_file" ]] && ca=$(base64 -w0 <"$ca_file")
fi

if [[ $legacy == 1 ]]; then
    secret="$sa-token"
    k -n "$ns" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: $secret
  annotations:
    kubernetes.io/service-account.name: $sa
type: kubernetes.io/service-account-token
YAML
    token=""
    for _ in $(seq 30); do
        token=$(k -n "$ns" get secret "$secret" -o jsonpath='{.data.token}' | base64 -d)
        [[ -n "$token" ]] && break
        sleep 1
    done
    [[ -n "$token" ]] || die "the token controller did not fill Secret $ns/$secret"
else
    token=$(k -n "$ns" create token "$sa" --duration "$duration")
fi

ind() { sed 's/^/    /'; }
cat <<YAML
# Apply to the HUB cluster. Minted $(date -u +%Y-%m-%dT%H:%M:%SZ) for ServiceAccount $ns/$sa.
apiVersion: v1
kind: Secret
metadata:
  name: provider-$name-kubeconfig
  namespace: $hub_ns
  labels:
    gpufed.io/provider: $name
type: Opaque
stringData:
  kubeconfig: |
$(ind <<KC
apiVersion: v1
kind: Config
clusters:
  - name: $name
    cluster:
      server: $server
$( [[ -n "$ca" ]] && echo "      certificate-authority-data: $ca" )
users:
  - name: $sa
    user:
      token: $token
contexts:
  - name: $name
    context: {cluster: $name, user: $sa, namespace: $ns}
current-context: $name
KC
)
---
apiVersion: gpufed.io/v1alpha1
kind: GpuProvider
metadata:
  name: $name
spec:
  mode: Push
  kubeconfigSecretRef:
    namespace: $hub_ns
    name: provider-$name-kubeconfig
    key: kubeconfig
  payoutWallet: $wallet
  region: $region
  prices:
$(for p in "${prices[@]}"; do
    printf '    - model: %s\n      pricePerGpuHour: "%s"\n' "${p%%=*}" "${p#*=}"
done)
YAML
