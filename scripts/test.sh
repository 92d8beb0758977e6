#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and the black-box suite against real SQLite
# files and a real PostgreSQL server.
#
# PostgreSQL: if TEST_DATABASE_URL is set, that server is used (it must allow
# CREATE DATABASE, and have ssl on for the TLS test). Otherwise this script installs
# PostgreSQL from Debian's packages when it is missing, starts a throwaway cluster on
# 127.0.0.1 under a temporary directory, runs the tests, and removes the cluster.
# Either way the suite works as a login role of its own (made by the URL's user, with
# its attributes) and at the end drops every database that role owns, then the role:
# a developer's server keeps nothing of the run.
#
# The admin console's tests drive Debian's headless Chromium through chromedriver:
# both are installed when missing.
#
# Then the contract test (scripts/contract.sh): schemathesis against the live
# service, and /docs rendered in headless Chromium.
#
# Then the deploy files (scripts/deploy-check.sh): the Kubernetes manifests and the
# compose file against their schemas.
#
# Extra arguments go to `cargo test` (for example a test name filter); with any,
# the contract test is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/pg.sh

if [ -z "${TEST_DATABASE_URL:-}" ]; then
  trap 'drop_suite_role || true; stop_cluster' EXIT
  start_cluster
  # The same path as on a developer's server (below), so that CI proves it.
  make_suite_role "$PG_URL" || { log "could not create the suite's role on its own cluster"; exit 1; }
  export TEST_DATABASE_URL="$SUITE_URL"
else
  log "using the PostgreSQL server in TEST_DATABASE_URL"
  # Some tests start small clusters of their own: they need the server's programs.
  ensure_pg_bin
  # The suite works as a role of its own there, and drops that role's databases
  # (every one the suite made) when it ends.
  trap 'drop_suite_role || true' EXIT
  if make_suite_role "$TEST_DATABASE_URL"; then
    export TEST_DATABASE_URL="$SUITE_URL"
  else
    log "could not create a role for the suite on that server (it needs CREATEROLE, and pg_hba.conf must let the role in): the suite's databases will be left there"
  fi
fi

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  log "Chromium or chromedriver not found: installing them from Debian's packages (for the console tests)"
  apt_install chromium chromium-driver
fi

# The suite's output is also kept in a file, so that when tests fail, the reason each
# gave is printed again at the very end: a log cut down to its head and its tail (as
# CI keeps it) otherwise shows the names of the failures and the last backtrace, but
# not their messages.
out=$(mktemp)
set +e
cargo test --workspace --locked "$@" 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
  echo
  echo "== why each failing test failed (repeated from above; backtraces left out) =="
  awk '
    /^---- .* stdout ----$/ { name = $2; next }
    /panicked at/ { keep = 1; lines = 0; print "* " name ": " $0; next }
    keep && (/^stack backtrace:/ || /^note: / || ++lines > 15) { keep = 0; print ""; next }
    keep { print "    " $0 }
  ' "$out" | head -n 200
  rm -f "$out"
  exit "$status"
fi
rm -f "$out"
# Here rather than on exit, so that a run that would leave databases behind fails.
drop_suite_role
# The OpenAPI contract against the live service, and the deploy files against the
# Kubernetes and Compose schemas (both skipped when a test filter is given).
if [ $# -eq 0 ]; then
  ./scripts/contract.sh
  ./scripts/deploy-check.sh
fi
