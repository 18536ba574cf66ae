#!/usr/bin/env bash
# Schema-driven fuzzing of the whole API with schemathesis (PyPI), from openapi/openapi.json.
#
# Starts the simulator and `erasure serve` (API and workers) on loopback with a fresh database and
# fresh keys, runs schemathesis with an admin key, and prints a verdict: no 5xx, no response
# outside its documented status codes, schema or content type, no hang (a request time-out).
#
#   fuzz/run.sh                       # default: 60 examples per operation, seed 1
#   FUZZ_EXAMPLES=300 FUZZ_SEED=7 fuzz/run.sh
#
# Needs PostgreSQL on 127.0.0.1:5432 (trust auth), python3 and openssl. schemathesis is taken
# from $SCHEMATHESIS, or `st` on the PATH, or installed into fuzz/.venv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

EXAMPLES="${FUZZ_EXAMPLES:-60}"
SEED="${FUZZ_SEED:-1}"
PGURL="${FUZZ_PG:-postgres://postgres@127.0.0.1:5432}"
OUT="${FUZZ_OUT:-$ROOT/fuzz/out}"
mkdir -p "$OUT"

log() { printf 'fuzz: %s\n' "$*" >&2; }

# The binary of this checkout.
if [[ -z ${ERASURE_BIN:-} ]]; then
    cargo build -q
    ERASURE_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/erasure"
fi

# schemathesis.
ST="${SCHEMATHESIS:-}"
if [[ -z $ST ]]; then
    if command -v st >/dev/null && st --version 2>/dev/null | grep -q schemathesis; then
        ST=st
    else
        if [[ ! -x $ROOT/fuzz/.venv/bin/st ]]; then
            log "installing schemathesis into fuzz/.venv"
            python3 -m venv "$ROOT/fuzz/.venv"
            "$ROOT/fuzz/.venv/bin/pip" install -q schemathesis
        fi
        ST="$ROOT/fuzz/.venv/bin/st"
    fi
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

DB="erasure_fuzz_$$"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql -q "$PGURL/postgres" -c "drop database if exists \"$DB\" with (force)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

psql -q "$PGURL/postgres" -c "create database \"$DB\"" >/dev/null
export DATABASE_URL="$PGURL/$DB"
ERASURE_PSEUDONYM_KEY=$(openssl rand -hex 32)
ERASURE_SIGNING_KEY=$(openssl rand -hex 32)
ERASURE_DATA_KEY=$(openssl rand -hex 32)
export ERASURE_PSEUDONYM_KEY ERASURE_SIGNING_KEY ERASURE_DATA_KEY
"$ERASURE_BIN" migrate 2>/dev/null

SIM_PORT=$(free_port)
"$ERASURE_BIN" sim --bind "127.0.0.1:$SIM_PORT" --users 20 >"$OUT/sim.log" 2>&1 &
PIDS+=($!)

export ERASURE_UPSTREAM_API_URL="http://127.0.0.1:$SIM_PORT/v2.1"
export ERASURE_UPSTREAM_AUTH_URL="http://127.0.0.1:$SIM_PORT"
export ERASURE_UPSTREAM_CLIENT_ID=erasure-sim ERASURE_UPSTREAM_CLIENT_SECRET=sim-secret
# The fuzzer is one client sending as fast as it can: no per-key rate, no cap per address.
export ERASURE_API_RATE_PER_KEY=0 ERASURE_HTTP_MAX_CONNECTIONS_PER_IP=0
export ERASURE_RETRY_CAP_SECS=2 ERASURE_MAX_ATTEMPTS=3
# Requests wait for approval, so that the actions have a request to act on.
export ERASURE_APPROVAL=all
API_PORT=$(free_port)
RUST_LOG=warn "$ERASURE_BIN" serve --bind "127.0.0.1:$API_PORT" >"$OUT/serve.out" 2>"$OUT/serve.log" &
PIDS+=($!)
API="http://127.0.0.1:$API_PORT"
for _ in $(seq 1 100); do
    curl -fsS "$API/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "$API/healthz" >/dev/null

KEY=$("$ERASURE_BIN" keys create --role admin --label fuzz)

# A request submitted by another key, for POST /v1/erasure-requests/{id}/{action}: random ids
# would only ever reach the 404.
REQUESTER=$("$ERASURE_BIN" keys create --role requester --label fuzz-requester)
REQUEST_ID=$(curl -fsS -X POST "$API/v1/erasure-requests" -H "Authorization: Bearer $REQUESTER" \
    -H 'Content-Type: application/json' -d '{"scope": "user", "target_id": "999999001"}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
cat >"$OUT/schemathesis.toml" <<TOML
[[operations]]
include-path = "/v1/erasure-requests/{id}/{action}"
parameters = { "path.id" = "$REQUEST_ID" }
TOML

log "schemathesis $("$ST" --version | awk '{print $NF}'): $EXAMPLES examples per operation, seed $SEED, against $API"
# schemathesis keeps a cache in its working directory: keep it out of the repository.
cd "$OUT"
set +e
"$ST" --config-file "$OUT/schemathesis.toml" run "$ROOT/openapi/openapi.json" \
    --url "$API" \
    -H "Authorization: Bearer $KEY" \
    --checks "${FUZZ_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,ignored_auth,unsupported_method,allow_header_conformance,missing_required_header}" \
    --phases examples,coverage,fuzzing \
    --max-examples "$EXAMPLES" \
    --seed "$SEED" \
    --request-timeout 20 \
    --generation-database none \
    --no-color \
    --report junit,ndjson --report-dir "$OUT" \
    2>&1 | tee "$OUT/schemathesis.txt"
status=${PIPESTATUS[0]}
set -e

# The service must still be up, and must never have logged a panic.
alive=yes
curl -fsS "$API/healthz" >/dev/null 2>&1 || alive=no
panics=$(grep -c -i "panicked" "$OUT/serve.log" || true)
if [[ $status -eq 0 && $alive == yes && $panics -eq 0 ]]; then
    echo "VERDICT: PASS (schemathesis exit 0, service alive, no panic; details in $OUT)"
else
    echo "VERDICT: FAIL (schemathesis exit $status, service alive: $alive, panics: $panics; details in $OUT)"
    exit 1
fi
