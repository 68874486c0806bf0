"""Keylime's IMA code as an oracle for nodetrust's tests.

Reads one JSON request on stdin, writes one JSON answer on stdout.

  {"mode": "check", "log": ASCII_LOG, "policy": KEYLIME_RUNTIME_POLICY or null,
   "pcrs": {"sha1": {"0": HEX, ...}, "sha256": {...}}, "keyring": KEYRING_JSON or null}
    -> {"entries": [{"path", "alg", "digest", "sig", "pcr_hash": {"sha1", "sha256"},
                     "failed": bool}],
        "running": {"sha1": HEX, "sha256": HEX}, "boot_aggregates": {...},
        "ok": {"sha1": bool, "sha256": bool}}

  {"mode": "bench", "log": ..., "policy": ..., "bank": "sha256", "seconds": S}
    -> {"entries": N, "passes": P, "seconds": T, "entries_per_second": R, "ok": bool}

Only Keylime's own functions decide: ast.Entry (parse, template hash, PCR extend value),
ima.process_measurement_list (replay and appraisal, the verifier's entry point), and the
measured-boot parser's boot-aggregate computation.
"""

import functools
import json
import sys
import time
import types

# keylime.signing imports gpg (GPGME's bindings, not on PyPI); the IMA code never calls it.
sys.modules.setdefault("gpg", types.ModuleType("gpg"))

import logging  # noqa: E402

from keylime.common.algorithms import Hash  # noqa: E402
from keylime.failure import Component, Failure  # noqa: E402
from keylime.ima import ast, file_signatures, ima  # noqa: E402
from keylime.mba.elparsing import tpm2_tools_elparser  # noqa: E402

logging.disable(logging.CRITICAL)


def boot_aggregates(pcrs):
    # Keylime keeps PCR values as integers, as tpm2_eventlog prints them.
    log = {"pcrs": {bank: {k: int(v, 16) for k, v in vals.items()} for bank, vals in pcrs.items()}}
    getattr(tpm2_tools_elparser, "__add_boot_aggregate")(log)
    return log.get("boot_aggregates", {})


def keyrings_of(keyring):
    if not keyring:
        return None
    rings = file_signatures.ImaKeyrings()
    ring = file_signatures.ImaKeyring.from_string(json.dumps(keyring))
    rings.set_tenant_keyring(ring)
    return rings


def validator(policy, keyrings):
    # The validator _process_measurement_list builds, entry by entry.
    excludes = policy.get("excludes") if policy else None
    regex, err = ima.validators.valid_exclude_list(excludes)
    if err:
        raise SystemExit(err)
    return ast.Validator(
        {
            ast.ImaSig: functools.partial(ima._validate_ima_sig, regex, keyrings, policy),
            ast.ImaNg: functools.partial(ima._validate_ima_ng, regex, policy),
            ast.Ima: functools.partial(ima._validate_ima_ng, regex, policy),
        }
    )


def check(req):
    lines = [l for l in req["log"].split("\n") if l]
    policy = req.get("policy")
    keyrings = keyrings_of(req.get("keyring"))
    aggs = boot_aggregates(req.get("pcrs") or {})
    if policy is not None:
        # As the verifier does: the boot aggregates computed from the quote are allowed.
        policy = json.loads(json.dumps(policy))
        for vals in aggs.values():
            policy["digests"].setdefault("boot_aggregate", []).extend(vals)
    v = validator(policy, keyrings)
    entries = []
    for line in lines:
        e1 = ast.Entry(line, v, ima_hash_alg=Hash.SHA1, pcr_hash_alg=Hash.SHA1)
        e256 = ast.Entry(line, v, ima_hash_alg=Hash.SHA1, pcr_hash_alg=Hash.SHA256)
        mode = e1.mode
        sig = getattr(mode, "signature", None)
        entries.append(
            {
                "path": mode.path.name,
                "alg": mode.digest.algorithm,
                "digest": mode.digest.hash.hex(),
                "sig": sig.data.hex() if sig is not None else None,
                "pcr_hash": {"sha1": e1.pcr_template_hash.hex(), "sha256": e256.pcr_template_hash.hex()},
                "failed": bool(e1.invalid()) if policy is not None else None,
            }
        )
    running, ok = {}, {}
    for bank, alg in (("sha1", Hash.SHA1), ("sha256", Hash.SHA256)):
        pcr = (req.get("pcr10") or {}).get(bank)
        h, failure = ima.process_measurement_list(
            None, lines, policy, pcrval=pcr, ima_keyrings=keyrings, hash_alg=alg
        )
        running[bank] = h
        ok[bank] = not failure
    return {"entries": entries, "running": running, "boot_aggregates": aggs, "ok": ok}


def bench(req):
    lines = req["log"].split("\n")
    policy = req["policy"]
    bank = Hash(req.get("bank", "sha256"))
    pcr = req.get("pcr10")
    n = len([l for l in lines if l])
    seconds = float(req.get("seconds", 5))
    _, failure = ima.process_measurement_list(None, lines, policy, pcrval=pcr, hash_alg=bank)
    ok = not failure
    passes = 0
    start = time.perf_counter()
    while True:
        ima.process_measurement_list(None, lines, policy, pcrval=pcr, hash_alg=bank)
        passes += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    return {
        "entries": n,
        "passes": passes,
        "seconds": elapsed,
        "entries_per_second": n * passes / elapsed,
        "ok": ok,
    }


def main():
    req = json.load(sys.stdin)
    out = check(req) if req["mode"] == "check" else bench(req)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
