#!/usr/bin/env bash
# make demo: the whole system on an embedded default, on this machine, with software TPMs.
# Every step prints what it shows. Nothing is left running afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p nodetrust-cli
bin=target/release
work=$(mktemp -d /tmp/nodetrust-demo.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
say() { printf '\n== %s\n' "$*"; }

say "Manufacturing a software TPM (swtpm) with an EK certificate"
mkdir -p "$work/tpm" "$work/ca"
cat > "$work/localca.conf" <<CONF
statedir = $work/ca
signingkey = $work/ca/signkey.pem
issuercert = $work/ca/issuercert.pem
certserial = $work/ca/certserial
CONF
cat > "$work/setup.conf" <<CONF
create_certs_tool = /usr/bin/swtpm_localca
create_certs_tool_config = $work/localca.conf
create_certs_tool_options = /etc/swtpm-localca.options
CONF
swtpm_setup --tpm2 --tpmstate "$work/tpm" --config "$work/setup.conf" --createek --create-ek-cert \
  --pcr-banks sha1,sha256 --overwrite >/dev/null
port=$(( 40000 + RANDOM % 2000 * 2 ))
swtpm socket --tpm2 --tpmstate dir="$work/tpm" --server type=tcp,port=$port,bindaddr=127.0.0.1 \
  --ctrl type=tcp,port=$((port + 1)),bindaddr=127.0.0.1 --flags not-need-init,startup-clear &
pids+=($!)
export TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=$port"
for _ in $(seq 50); do tpm2_getcap properties-fixed >/dev/null 2>&1 && break; sleep 0.1; done
cd "$work"

say "Measured boot: extending boot components into PCR 0, 4 and 7"
tpm2_pcrextend "0:sha256=$(printf firmware | sha256sum | cut -c1-64)" \
  "4:sha256=$(printf 'grubx64.efi v2.06' | sha256sum | cut -c1-64)" \
  "7:sha256=$(printf 'SecureBoot=1' | sha256sum | cut -c1-64)"

say "Creating an attestation key under the endorsement key"
tpm2_createek -c ek.ctx -G rsa -u ek.pub >/dev/null
tpm2_createak -C ek.ctx -c ak.ctx -G rsa -g sha256 -s rsassa -u ak.pub -n ak.name >/dev/null
tpm2_flushcontext -t

nonce=$(head -c 16 /dev/urandom | xxd -p 2>/dev/null || od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
say "Quoting PCRs 0,4,7 with the verifier's fresh nonce $nonce"
tpm2_quote -c ak.ctx -l sha256:0,4,7 -q "$nonce" -m quote.msg -s quote.sig -g sha256 >/dev/null
tpm2_flushcontext -t
tpm2_pcrread sha256:0,4,7 > pcrs.yaml

say "nodetrust quote verify: a genuine quote"
"$OLDPWD/$bin/nodetrust" quote verify --ak ak.pub --message quote.msg --signature quote.sig --pcrs pcrs.yaml --nonce "$nonce"

say "nodetrust quote verify: the same quote replayed against a new nonce (exit 1)"
"$OLDPWD/$bin/nodetrust" quote verify --ak ak.pub --message quote.msg --signature quote.sig --pcrs pcrs.yaml \
  --nonce "00$nonce" || echo "exit status $?"

say "nodetrust quote verify: PCR 4 claimed to hold another boot loader (exit 1)"
sed 's/^\(\s*4 : 0x\)../\100/' pcrs.yaml > forged.yaml
"$OLDPWD/$bin/nodetrust" quote verify --ak ak.pub --message quote.msg --signature quote.sig --pcrs forged.yaml \
  --nonce "$nonce" || echo "exit status $?"
say "Done."
