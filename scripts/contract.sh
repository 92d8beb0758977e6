#!/usr/bin/env bash
# The contract test: schemathesis (from PyPI, pinned) against the live service,
# built in debug, on the shipped tenants.toml in a scratch directory. Tenant
# operations run with an API key of the demo tenant, admin operations with the
# admin token. Passes only with 0 server errors and 0 answers that break the spec
# (status codes, content types, headers, bodies). Then Debian's Chromium (installed
# when missing) renders /docs headless, and the page must show the operations.
#
#   ./scripts/contract.sh                 after `cargo build`
#   SCHEMATHESIS_SEED=random ./scripts/contract.sh   a new seed (printed)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/pg.sh
log() { printf '[contract] %s\n' "$*" >&2; }

version=4.32.5
venv=$PWD/target/schemathesis-$version
if [ ! -x "$venv/bin/st" ]; then
  log "installing schemathesis $version from PyPI into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==$version"
fi

bin="$PWD/target/debug/tenant-router"
[ -x "$bin" ] || cargo build --locked
work=$(mktemp -d /tmp/tenant-router-contract.XXXXXX)
cp tenants.toml "$work/"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
admin=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
jwt=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
(cd "$work" && PORT=$port ADMIN_TOKEN=$admin AUTH_MODE=jwt JWT_SECRET=$jwt LOG_LEVEL=warn \
  exec "$bin" >"$work/log" 2>&1) &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 100); do curl -fs "$base/health" >/dev/null && break; sleep 0.1; done

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
token=$(curl -fs -H 'X-Tenant-ID: demo' -H 'Content-Type: application/json' \
  -d '{"username":"demo","password":"demo123"}' "$base/api/auth/login" | json '["access_token"]')
key=$(curl -fs -H 'X-Tenant-ID: demo' -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -d '{"name":"contract","role":"admin"}' "$base/api/api-keys" | json '["key"]')

seed=${SCHEMATHESIS_SEED:-20261201}
seed_arg=(--seed "$seed")
[ "$seed" = random ] && seed_arg=()
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance
# From the scratch directory: schemathesis keeps a cache where it runs.
run() {
  (cd "$work" && "$venv/bin/st" run "$base/openapi.json" --checks "$checks" --max-examples "${SCHEMATHESIS_EXAMPLES:-25}" \
    --workers 2 --no-color "${seed_arg[@]}" "$@")
}
log "schemathesis: tenant operations (API key of the demo tenant)"
run -H "X-API-Key: $key" -H 'X-Tenant-ID: demo' --exclude-tag tenants
log "schemathesis: admin operations (admin token)"
run -H "Authorization: Bearer $admin" --include-tag tenants
log "rendering /docs in headless Chromium"
command -v chromium >/dev/null || { log "Chromium not found: installing it from Debian's packages"; apt_install chromium; }
headless() {
  timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$(mktemp -d "$work/chromium.XXXXXX")" --virtual-time-budget=15000 "$@" 2>/dev/null
}
mkdir -p target/contract
headless --window-size=1280,1800 --screenshot="$PWD/target/contract/docs.png" "$base/docs/" >/dev/null
dom=$(headless --dump-dom "$base/docs/")
# Swagger UI draws these from the contract in the browser: the title, the version
# of OpenAPI, a section per tag and a row per operation.
for expected in '>tenant-router' 'OAS 3.1' 'data-tag="manufacturing"' \
  'data-path="/api/products/{id}"' 'data-path="/api/admin/tenants/{id}/usage"'; do
  if ! grep -q -- "$expected" <<<"$dom"; then
    log "/docs did not render ($expected is missing from the page)"
    exit 1
  fi
done
if grep -q 'ERROR' "$work/log"; then
  log "the service logged errors during the contract test:"
  grep 'ERROR' "$work/log" | head -20
  exit 1
fi
log "contract test passed (a screenshot of /docs is in target/contract/docs.png)"
