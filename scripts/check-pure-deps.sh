#!/usr/bin/env bash
# The pure crates (wire parsing, event logs, appraisal, API types) must not depend on an async
# runtime, a web framework, a database, Kubernetes, the TPM library or an HTTP client.
set -euo pipefail
cd "$(dirname "$0")/.."
forbidden='^(tokio|axum|hyper|sqlx|kube|kube-client|tss-esapi|tss-esapi-sys|reqwest|ureq|tonic) '
status=0
for crate in nodetrust-tpm-wire nodetrust-extend nodetrust-eventlog nodetrust-appraise nodetrust-proto; do
  if ! cargo metadata --format-version 1 --no-deps | grep -q "\"name\":\"$crate\""; then
    continue
  fi
  bad=$(cargo tree -p "$crate" -e normal,build --prefix none --locked | sort -u | grep -E "$forbidden" || true)
  if [ -n "$bad" ]; then
    echo "check-deps: $crate must stay pure but depends on:"; echo "$bad"
    status=1
  else
    echo "check-deps: $crate is pure"
  fi
done
exit $status
