#!/usr/bin/env bash
# Validates the deploy files where no container engine runs: the Kubernetes
# manifests against the Kubernetes 1.37 schemas (kubernetes-validate, which ships
# them), strictly (an unknown field fails), and deploy/compose.yaml against the
# Compose specification's schema (check-jsonschema's copy). Both are pinned and
# installed from PyPI into target/ the first time. The Dockerfile, the example
# env file and the settings in every file are checked by `tests/api/deploy.rs`.
#
#   ./scripts/deploy-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[deploy] %s\n' "$*" >&2; }

venv=$PWD/target/deploy-check
if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/check-jsonschema" ]; then
  log "installing kubernetes-validate and check-jsonschema from PyPI into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "kubernetes-validate==1.37.0" "check-jsonschema==0.39.0"
fi
log "Kubernetes manifests (deploy/k8s) against the Kubernetes 1.37 schemas"
"$venv/bin/kubernetes-validate" --strict --kubernetes-version 1.37 deploy/k8s/*.yaml
log "deploy/compose.yaml against the Compose specification"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml
log "deploy files valid"
