#!/usr/bin/env bash
# make demo: the whole system on this machine, on an embedded default (SQLite, software TPMs).
#
#   1. a Kubernetes cluster: $KUBECONFIG's, or (when unset) the testkit's API server stand-in
#      with four nodes: gold-node, worker-1 and worker-2 (tpm-enabled) and no-tpm (without);
#   2. a Trust Server (HTTPS, SQLite) with an EK CA bundle and its labeller on;
#   3. three nodes, each a software TPM (swtpm) with a measured boot and a Trust Agent:
#      "gold-node" (the gold standard), "worker-1" and "worker-2";
#   4. the agents register (EK certificate, AK bound by credential activation);
#   5. the runbook's probe: curl .../mtwilson/v2/tpm-endorsements answers 200;
#   6. flavors imported from gold-node: both workers trusted, labelled "true";
#   7. worker-1 reboots into another boot loader: untrusted with the reason, labelled "false";
#   8. worker-1's agent stops: unreachable, never untrusted; unknown keeps the label "false";
#   9. `nodetrust doctor --node worker-1` names the cause.
# Each step prints NODE VERDICT LABEL REASON; the node without a TPM is never touched.
# Each step's outcome is checked; the script exits 1 naming every step that did not happen, so
# CI (.ci/run) runs it too. Nothing is left running afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
echo "Building nodetrust, nodetrust-agent and nodetrust-server (release)..."
cargo build --release -q -p nodetrust-cli -p nodetrust-agent -p nodetrust-server
cargo build --release -q -p nodetrust-eventlog --example demo_boot
cargo build --release -q -p nodetrust-testkit --example kubeapi
started=$SECONDS
target=${CARGO_TARGET_DIR:-$root/target}
bin=$target/release
work=$(mktemp -d /tmp/nodetrust-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
failures=()
fail() { echo "DEMO CHECK FAILED: $*" >&2; failures+=("$*"); }
ports_free() { # base: true when base .. base+9 can all be bound on 127.0.0.1
  python3 - "$1" <<'PY'
import socket, sys
base = int(sys.argv[1])
held = []
try:
    for p in range(base, base + 10):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", p))
        held.append(s)
except OSError:
    sys.exit(1)
PY
}
# Ten ports below the kernel's ephemeral range (32768 and up), so no outgoing connection of
# this machine can take one between the check and the bind.
for _ in $(seq 200); do
  base=$(( 20000 + (RANDOM % 1200) * 10 ))
  ports_free "$base" && break
done

export NODETRUST_ADMIN_USERNAME=admin NODETRUST_ADMIN_PASSWORD=demo-admin-password
export MTWILSON_API_USERNAME=agent MTWILSON_API_PASSWORD=demo-agent-password
export TRUSTAGENT_ADMIN_USERNAME=tagentadmin TRUSTAGENT_ADMIN_PASSWORD=demo-trustagent-password

say "Manufacturing three software TPMs with EK certificates from one CA"
mkdir -p "$work/ca" "$work/ekca"
cat > "$work/localca.conf" <<CONF
statedir = $work/ca
signingkey = $work/ca/signkey.pem
issuercert = $work/ca/issuercert.pem
certserial = $work/ca/certserial
CONF
printf -- '--platform-manufacturer nodetrust\n--platform-version 2.1\n--platform-model demo\n' > "$work/localca.options"
cat > "$work/setup.conf" <<CONF
create_certs_tool = /usr/bin/swtpm_localca
create_certs_tool_config = $work/localca.conf
create_certs_tool_options = $work/localca.options
CONF
for node in gold-node worker-1 worker-2; do
  mkdir -p "$work/$node/tpm" "$work/$node/state"
  swtpm_setup --tpm2 --tpmstate "$work/$node/tpm" --config "$work/setup.conf" --createek \
    --create-ek-cert --pcr-banks sha1,sha256 --overwrite >/dev/null
done
cp "$work/ca/issuercert.pem" "$work/ca/swtpm-localca-rootca-cert.pem" "$work/ekca/"
echo "EK CA bundle: $(ls "$work/ekca" | tr '\n' ' ')"

declare -A tpm_port agent_port tpm_pid agent_pid
tpm_port[gold-node]=$base; tpm_port[worker-1]=$((base + 2)); tpm_port[worker-2]=$((base + 7))
agent_port[gold-node]=$((base + 4)); agent_port[worker-1]=$((base + 5)); agent_port[worker-2]=$((base + 9))
server_port=$((base + 6))

start_tpm() { # node
  local n=$1 p=${tpm_port[$1]}
  swtpm socket --tpm2 --tpmstate dir="$work/$n/tpm" --server type=tcp,port=$p,bindaddr=127.0.0.1 \
    --ctrl type=tcp,port=$((p + 1)),bindaddr=127.0.0.1 --flags not-need-init,startup-clear &
  tpm_pid[$n]=$!; pids+=($!)
  for _ in $(seq 100); do
    TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=$p" tpm2_getcap properties-fixed >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "swtpm for $n did not start" >&2; return 1
}
boot() { # node variant: writes the node's event log and extends the same digests into its TPM
  local n=$1 v=$2
  "$target/release/examples/demo_boot" "$work/$n/eventlog.bin" "$v" > "$work/$n/extends"
  while read -r e; do
    TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=${tpm_port[$n]}" tpm2_pcrextend "$e"
  done < "$work/$n/extends"
  echo "$n booted ($v): $(wc -l < "$work/$n/extends") measurements extended"
}
node_uuid() { # a stable UUID per node name (several demo nodes share this machine's DMI UUID)
  local h; h=$(printf '%s' "$1" | sha256sum | cut -c1-32)
  echo "${h:0:8}-${h:8:4}-4${h:13:3}-8${h:17:3}-${h:20:12}"
}
start_agent() { # node
  local n=$1
  "$bin/nodetrust-agent" --tcti "swtpm:host=127.0.0.1,port=${tpm_port[$n]}" \
    --listen "127.0.0.1:${agent_port[$n]}" --state-dir "$work/$n/state" --eventlog "$work/$n/eventlog.bin" \
    --ima-log "$work/$n/no-ima" --host-name "$n" --hardware-uuid "$(node_uuid "$n")" \
    --advertise-url "https://127.0.0.1:${agent_port[$n]}" --server-url "https://127.0.0.1:$server_port" \
    --server-ca "$work/server/server.crt" > "$work/$n/agent.log" 2>&1 &
  agent_pid[$n]=$!; pids+=($!)
}
cli() { "$bin/nodetrust" "$@" --server "https://127.0.0.1:$server_port"; }
label_of() { # node: its is-trusted label, or "-"
  kubectl get node "$1" -o jsonpath='{.metadata.labels.ibm-cloud\.kubernetes\.io/is-trusted}' 2>/dev/null | grep . || echo -
}
table() { # NODE VERDICT LABEL REASON: the server's verdict beside the node's label
  cli hosts list --format json > "$work/hosts.json" 2>/dev/null || echo '{"hosts":[]}' > "$work/hosts.json"
  kubectl get nodes -o json > "$work/nodes.json"
  python3 - "$work/hosts.json" "$work/nodes.json" <<'PY'
import json, sys
hosts = {h["name"]: h for h in json.load(open(sys.argv[1]))["hosts"]}
nodes = json.load(open(sys.argv[2]))["items"]
print(f"{'NODE':<10} {'VERDICT':<10} {'LABEL':<6} REASON")
for n in sorted(nodes, key=lambda n: n["metadata"]["name"]):
    name = n["metadata"]["name"]
    label = n["metadata"].get("labels", {}).get("ibm-cloud.kubernetes.io/is-trusted", "-")
    h = hosts.get(name)
    verdict = h["trust"]["verdict"] if h else "-"
    reasons = h["trust"]["reasons"] if h else ["no TPM host (not tpm-enabled)"]
    # The most telling reason: for an untrusted node, the first that names a PCR.
    telling = [r for r in reasons if "PCR" in r] if verdict == "untrusted" else []
    reason = ((telling or reasons or [""])[0])[:110]
    print(f"{name:<10} {verdict:<10} {label:<6} {reason}")
PY
}
wait_label() { # node value: waits up to 10 s for the node's label
  for _ in $(seq 100); do [ "$(label_of "$1")" = "$2" ] && return 0; sleep 0.1; done
  return 1
}

if [ -z "${KUBECONFIG:-}" ]; then
  say "Starting a Kubernetes API server stand-in: gold-node, worker-1, worker-2 (tpm-enabled), no-tpm"
  export KUBECONFIG=$work/kubeconfig
  # The runbook's layout, as the deploy/ manifests and their controllers would leave it: the
  # namespace, the agents' DaemonSet and one agent pod per TPM node.
  python3 - "$work/objects.json" <<'PY'
import json, sys
ns = "kubx-cit"
sel = {"app.kubernetes.io/name": "cit-trust-agent"}
img = "nodetrust/nodetrust-agent:0.1.0"
objs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "cit-trust-agent", "namespace": ns},
         "spec": {"selector": {"matchLabels": sel}, "template": {"metadata": {"labels": sel}, "spec": {
             "nodeSelector": {"ibm-cloud.kubernetes.io/tpm-enabled": "true"},
             "initContainers": [{"name": "init-tcsd", "image": img}],
             "containers": [{"name": "run-trust-agent", "image": img}]}}},
         "status": {"currentNumberScheduled": 3, "desiredNumberScheduled": 3, "numberMisscheduled": 0, "numberReady": 3}}]
for node in ["gold-node", "worker-1", "worker-2"]:
    objs.append({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"cit-trust-agent-{node}", "namespace": ns, "labels": sel},
        "spec": {"nodeName": node, "initContainers": [{"name": "init-tcsd", "image": img}],
                 "containers": [{"name": "run-trust-agent", "image": img}]},
        "status": {"phase": "Running",
            "initContainerStatuses": [{"name": "init-tcsd", "image": img, "imageID": "", "ready": True, "restartCount": 0,
                                       "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
            "containerStatuses": [{"name": "run-trust-agent", "image": img, "imageID": "", "ready": True, "restartCount": 0,
                                   "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}})
json.dump(objs, open(sys.argv[1], "w"))
PY
  "$target/release/examples/kubeapi" --kubeconfig "$KUBECONFIG" --objects "$work/objects.json" \
    --node "gold-node=$(node_uuid gold-node),tpm" --node "worker-1=$(node_uuid worker-1),tpm" \
    --node "worker-2=$(node_uuid worker-2),tpm" --node "no-tpm=$(node_uuid no-tpm)" > "$work/kubeapi.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do [ -s "$KUBECONFIG" ] && kubectl get nodes >/dev/null 2>&1 && break; sleep 0.1; done
  kubectl get nodes >/dev/null 2>&1 || {
    echo "DEMO CHECK FAILED: the Kubernetes API stand-in did not start:" >&2
    cat "$work/kubeapi.log" >&2
    exit 1
  }
else
  say "Using the cluster of KUBECONFIG=$KUBECONFIG"
fi
kubectl get nodes -L ibm-cloud.kubernetes.io/tpm-enabled
kubectl get node no-tpm -o json > "$work/no-tpm.before.json" 2>/dev/null || true

say "Starting the Trust Server (SQLite, attest every 3 s, verdicts valid 12 s, labeller on)"
mkdir -p "$work/server"
"$bin/nodetrust-server" --listen "127.0.0.1:$server_port" --db "sqlite://$work/server/server.db" \
  --state-dir "$work/server" --ek-ca-dir "$work/ekca" --attest-interval 3s --report-validity 12s \
  --kubeconfig "$KUBECONFIG" --labeller-namespace kubx-cit \
  > "$work/server/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/server/server.crt" ] && curl -sk "https://127.0.0.1:$server_port/healthz" >/dev/null && break; sleep 0.1; done
export NODETRUST_SERVER_CA="$work/server/server.crt"
echo "server: https://127.0.0.1:$server_port (certificate $work/server/server.crt)"
if [ -s "$work/objects.json" ]; then
  # The runbook's ConfigMap and Secret cit-server-info, pointing at this server.
  pin=$(openssl x509 -in "$work/server/server.crt" -noout -fingerprint -sha256 | cut -d= -f2 | tr -d : | tr 'A-F' 'a-f')
  b64() { printf '%s' "$1" | base64 -w0; }
  cat > "$work/cit-server-info.json" <<JSON
{"apiVersion": "v1", "kind": "List", "items": [
 {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cit-server-info", "namespace": "kubx-cit"},
  "data": {"MTWILSON_API_USERNAME": "$MTWILSON_API_USERNAME", "MTWILSON_SERVER": "127.0.0.1",
           "MTWILSON_SERVER_PORT": "$server_port", "TRUSTAGENT_ADMIN_USERNAME": "$TRUSTAGENT_ADMIN_USERNAME",
           "server_url": "https://127.0.0.1:$server_port", "TRUSTAGENT_SERVER_PIN": "$pin"}},
 {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": "cit-server-info", "namespace": "kubx-cit"},
  "data": {"MTWILSON_API_PASSWORD": "$(b64 "$MTWILSON_API_PASSWORD")",
           "TRUSTAGENT_ADMIN_PASSWORD": "$(b64 "$TRUSTAGENT_ADMIN_PASSWORD")", "TPM_OWNER_SECRET": ""}}]}
JSON
  kubectl apply --validate=false -f "$work/cit-server-info.json"
fi

say "Booting the three nodes and starting their Trust Agents"
for n in gold-node worker-1 worker-2; do start_tpm "$n"; boot "$n" gold; start_agent "$n"; done
for _ in $(seq 150); do
  [ "$(cli hosts list --format json 2>/dev/null | grep -o '"name"' | wc -l)" -ge 3 ] && break; sleep 0.2
done
grep -h "registered\|WARN" "$work/gold-node/agent.log" | head -3 || true
table
[ "$(cli hosts list --format json 2>/dev/null | grep -o '"name"' | wc -l)" -ge 3 ] ||
  fail "the three agents register"

say "The runbook's probe: curl -u \$MTWILSON_API_USERNAME:\$MTWILSON_API_PASSWORD .../mtwilson/v2/tpm-endorsements"
code=$(curl -o /dev/null -s -k -w "%{http_code}" -u "$MTWILSON_API_USERNAME:$MTWILSON_API_PASSWORD" \
  "https://127.0.0.1:$server_port/mtwilson/v2/tpm-endorsements")
echo "HTTP $code with the agent account"
[ "$code" = 200 ] || fail "the runbook's probe answers 200 (got $code)"
code=$(curl -o /dev/null -s -k -w "%{http_code}" -u "$MTWILSON_API_USERNAME:wrong" \
  "https://127.0.0.1:$server_port/mtwilson/v2/tpm-endorsements")
echo "HTTP $code with a wrong password"
[ "$code" = 401 ] || fail "a wrong password gets 401 (got $code)"

say "Importing the gold standard (PLATFORM and OS flavors) from gold-node"
cli flavor import --from-host gold-node
say "Attesting the workers"
cli attest worker-1 --require-trusted || fail "worker-1 is trusted after the flavor import"
cli attest worker-2 --require-trusted || fail "worker-2 is trusted after the flavor import"
wait_label worker-1 true && wait_label worker-2 true || true
table
[ "$(label_of worker-1)" = true ] && [ "$(label_of worker-2)" = true ] ||
  fail "both workers are labelled is-trusted=true"

say "worker-1 reboots into another boot loader (grub 2.12, not in any flavor)"
kill "${agent_pid[worker-1]}"; wait "${agent_pid[worker-1]}" 2>/dev/null || true
kill "${tpm_pid[worker-1]}"; wait "${tpm_pid[worker-1]}" 2>/dev/null || true
start_tpm worker-1; boot worker-1 new-grub; start_agent worker-1
for _ in $(seq 100); do
  cli report show worker-1 --format json 2>/dev/null | grep -q '"untrusted"' && break; sleep 0.1
done
echo "(the agent reported its restart; the server attested it at once)"
report=$(cli report show worker-1 2>&1) || true
echo "$report"
grep -q "untrusted" <<<"$report" && grep -q "PCR 4" <<<"$report" ||
  fail "worker-1 is untrusted after the reboot, with a PCR 4 reason"
wait_label worker-1 false || true
table
[ "$(label_of worker-1)" = false ] || fail "worker-1 is labelled is-trusted=false"
[ "$(label_of worker-2)" = true ] || fail "worker-2 keeps is-trusted=true"

say "worker-1's agent stops: the server cannot reach it"
kill "${agent_pid[worker-1]}"; wait "${agent_pid[worker-1]}" 2>/dev/null || true
if [ -s "$work/objects.json" ]; then # as the kubelet would report it
  kubectl patch pod cit-trust-agent-worker-1 -n kubx-cit --subresource=status --type=merge -p \
    '{"status":{"phase":"Running","containerStatuses":[{"name":"run-trust-agent","image":"nodetrust/nodetrust-agent:0.1.0","imageID":"","ready":false,"restartCount":3,"state":{"waiting":{"reason":"CrashLoopBackOff"}},"lastState":{"terminated":{"exitCode":1,"reason":"Error"}}}]}}' >/dev/null
fi
cli attest worker-1 || true
cli hosts list
echo "An unreachable node keeps its last verdict until it expires, then becomes unknown: never untrusted for a network error."
say "Waiting for worker-1's last verdict to expire (validity 12 s)"
for _ in $(seq 300); do
  cli hosts list 2>/dev/null | grep -q '^worker-1 *unknown' && break; sleep 0.1
done
table
cli hosts list 2>/dev/null | grep -q '^worker-1 *unknown' ||
  fail "worker-1 is unknown once its last verdict expired"
[ "$(label_of worker-1)" = false ] || fail "worker-1's label stays false while its verdict is unknown"
echo "An unknown verdict leaves the label as it was (the runbook's rule)."
if [ -s "$work/no-tpm.before.json" ]; then
  kubectl get node no-tpm -o json > "$work/no-tpm.after.json"
  cmp -s "$work/no-tpm.before.json" "$work/no-tpm.after.json" && echo "no-tpm: never touched" ||
    fail "the node without a TPM is never touched"
fi

say "nodetrust doctor --node worker-1"
MTWILSON_SERVER=127.0.0.1 MTWILSON_SERVER_PORT=$server_port \
  "$bin/nodetrust" doctor --node worker-1 --server "https://127.0.0.1:$server_port" > "$work/doctor.txt" 2>&1 || true
cat "$work/doctor.txt"
grep -q "FAIL" "$work/doctor.txt" && grep -qi "worker-1" "$work/doctor.txt" ||
  fail "nodetrust doctor names worker-1's problem"
if [ ${#failures[@]} -gt 0 ]; then
  echo >&2
  echo "The demo did not go as described: ${#failures[@]} check(s) failed (logs below)." >&2
  tail -n 20 "$work/server/server.log" "$work/worker-1/agent.log" "$work/kubeapi.log" >&2 || true
  exit 1
fi
say "Done in $((SECONDS - started)) s after the build: every step happened as described. Logs were in $work (removed on exit)."
