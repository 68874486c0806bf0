#!/usr/bin/env bash
# make demo: the whole system on this machine, on an embedded default (SQLite, software TPMs).
#
#   1. a Trust Server (HTTPS, SQLite) with an EK CA bundle;
#   2. two worker nodes, each a software TPM (swtpm) with a measured boot and a Trust Agent:
#      "gold-node" (the gold standard) and "worker-1";
#   3. the agents register (EK certificate, AK bound by credential activation);
#   4. the runbook's probe: curl .../mtwilson/v2/tpm-endorsements answers 200;
#   5. flavors imported from gold-node; worker-1 attested: trusted;
#   6. worker-1 reboots into another boot loader: untrusted, with the reason;
#   7. worker-1's agent stops: unreachable, never untrusted.
# Each step's outcome is checked; the script exits 1 naming every step that did not happen, so
# CI (.ci/run) runs it too. Nothing is left running afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
echo "Building nodetrust, nodetrust-agent and nodetrust-server (release)..."
cargo build --release -q -p nodetrust-cli -p nodetrust-agent -p nodetrust-server
cargo build --release -q -p nodetrust-eventlog --example demo_boot
bin=$root/target/release
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
base=$(( 41000 + (RANDOM % 500) * 10 ))

export NODETRUST_ADMIN_USERNAME=admin NODETRUST_ADMIN_PASSWORD=demo-admin-password
export MTWILSON_API_USERNAME=agent MTWILSON_API_PASSWORD=demo-agent-password
export TRUSTAGENT_ADMIN_USERNAME=tagentadmin TRUSTAGENT_ADMIN_PASSWORD=demo-trustagent-password

say "Manufacturing two software TPMs with EK certificates from one CA"
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
for node in gold-node worker-1; do
  mkdir -p "$work/$node/tpm" "$work/$node/state"
  swtpm_setup --tpm2 --tpmstate "$work/$node/tpm" --config "$work/setup.conf" --createek \
    --create-ek-cert --pcr-banks sha1,sha256 --overwrite >/dev/null
done
cp "$work/ca/issuercert.pem" "$work/ca/swtpm-localca-rootca-cert.pem" "$work/ekca/"
echo "EK CA bundle: $(ls "$work/ekca" | tr '\n' ' ')"

declare -A tpm_port agent_port tpm_pid agent_pid
tpm_port[gold-node]=$base; tpm_port[worker-1]=$((base + 2))
agent_port[gold-node]=$((base + 4)); agent_port[worker-1]=$((base + 5))
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
  "$root/target/release/examples/demo_boot" "$work/$n/eventlog.bin" "$v" > "$work/$n/extends"
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

say "Starting the Trust Server (SQLite, attest every 5 s, verdicts valid 20 s)"
mkdir -p "$work/server"
"$bin/nodetrust-server" --listen "127.0.0.1:$server_port" --db "sqlite://$work/server/server.db" \
  --state-dir "$work/server" --ek-ca-dir "$work/ekca" --attest-interval 5s --report-validity 20s \
  > "$work/server/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/server/server.crt" ] && curl -sk "https://127.0.0.1:$server_port/healthz" >/dev/null && break; sleep 0.1; done
export NODETRUST_SERVER_CA="$work/server/server.crt"
echo "server: https://127.0.0.1:$server_port (certificate $work/server/server.crt)"

say "Booting both nodes and starting their Trust Agents"
for n in gold-node worker-1; do start_tpm "$n"; boot "$n" gold; start_agent "$n"; done
for _ in $(seq 150); do
  [ "$(cli hosts list --format json 2>/dev/null | grep -o '"name"' | wc -l)" -ge 2 ] && break; sleep 0.2
done
grep -h "registered\|WARN" "$work/gold-node/agent.log" | head -3 || true
cli hosts list
[ "$(cli hosts list --format json 2>/dev/null | grep -o '"name"' | wc -l)" -ge 2 ] ||
  fail "both agents register"

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
say "Attesting worker-1"
cli attest worker-1 --require-trusted || fail "worker-1 is trusted after the flavor import"

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

say "worker-1's agent stops: the server cannot reach it"
kill "${agent_pid[worker-1]}"; wait "${agent_pid[worker-1]}" 2>/dev/null || true
cli attest worker-1 || true
cli hosts list
echo "An unreachable node keeps its last verdict until it expires, then becomes unknown: never untrusted for a network error."
say "Waiting for worker-1's last verdict to expire (validity 20 s)"
for _ in $(seq 300); do
  cli hosts list 2>/dev/null | grep -q '^worker-1 *unknown' && break; sleep 0.1
done
cli hosts list
cli hosts list 2>/dev/null | grep -q '^worker-1 *unknown' ||
  fail "worker-1 is unknown once its last verdict expired"
if [ ${#failures[@]} -gt 0 ]; then
  echo >&2
  echo "The demo did not go as described: ${#failures[@]} check(s) failed (logs below)." >&2
  tail -n 20 "$work/server/server.log" "$work/worker-1/agent.log" >&2 || true
  exit 1
fi
say "Done: every step happened as described. Logs were in $work (removed on exit)."
