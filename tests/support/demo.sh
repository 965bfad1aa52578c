#!/usr/bin/env bash
# make demo: build msgtrace and the Microsoft 365 emulator, start the emulator on
# 127.0.0.1, pull one day of message trace once (Reporting Web Service tenant "contoso"
# and Graph tenant "fabrikam", with some 429/503 faults) to stdout, and stop everything.
set -euo pipefail
cd "$(dirname "$0")/../.."
echo "== building msgtrace and the emulator (release)"
cargo build --release --locked --quiet --bin msgtrace --example m365emu
demo=$(mktemp -d /tmp/msgtrace-demo.XXXXXX)
emu_pid=""
cleanup() { [ -n "$emu_pid" ] && kill "$emu_pid" 2>/dev/null || true; rm -rf "$demo"; }
trap cleanup EXIT
mkdir -p "$demo/config" "$demo/certs"
target/release/examples/m365emu --port 0 --ca-out "$demo/certs/emulator-ca.pem" \
  --tenants contoso,fabrikam --page-size 200 --records-per-hour 30 \
  --rate-429 0.05 --rate-503 0.05 --exit-after 300 > "$demo/emu.out" 2> "$demo/emu.err" &
emu_pid=$!
for _ in $(seq 1 100); do grep -q '^listening ' "$demo/emu.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening //p' "$demo/emu.out")
[ -n "$url" ] || { echo "emulator did not start:"; cat "$demo/emu.err"; exit 1; }
echo "== emulator listening at $url"
service() { # $1 service key, $2 url key
cat <<YAML
      $1:
        $2: $url
        override_base_auth_url: $url
        ca_file: certs/emulator-ca.pem
        override_time_delay_in_seconds: 3600
        window_in_seconds: 3600
        requests_wait_time_between_retries_in_seconds: 1
YAML
}
{
cat <<YAML
globals:
  debug: false
  id: not_used
  name: o365_emt_collector
  persistence:
    type: filesystem
    config:
      directory_name: state
outputs:
  console:
    type: stdout
inputs:
  office365_exchange_message_contoso:
    id: 1
    enabled: true
    max_historic_date_cutoff_days_back: 1
    credentials:
      tenant_id: contoso
      client_id: client-contoso
      client_secret_file: certs/contoso.secret
    services:
YAML
service office365_exchange_message_service override_base_url
cat <<YAML
  office365_exchange_message_fabrikam:
    id: 2
    enabled: true
    max_historic_date_cutoff_days_back: 1
    credentials:
      tenant_id: fabrikam
      client_id: client-fabrikam
      client_secret: \${FABRIKAM_SECRET}
    services:
YAML
service office365_exchange_message_graph_service override_graph_url
} > "$demo/config/config.yaml"
printf 'secret-contoso\n' > "$demo/certs/contoso.secret"
export FABRIKAM_SECRET=secret-fabrikam
bin=$PWD/target/release/msgtrace
echo "== config ($demo/config/config.yaml):"
sed 's/^/   /' "$demo/config/config.yaml"
echo "== msgtrace check -c config/config.yaml"
(cd "$demo" && "$bin" check -c config/config.yaml) || true
echo "== msgtrace run --once -c config/config.yaml  (events on stdout, logs on stderr)"
(cd "$demo" && "$bin" run --once -c config/config.yaml > events.jsonl 2> run.log) || { cat "$demo/run.log"; exit 1; }
grep -E 'Running a new pipeline|retry|Pull Summary|up to date' "$demo/run.log" | head -8 | sed 's/^/   /'
echo "   ..."
grep -E 'Pull Summary|all inputs' "$demo/run.log" | tail -3 | sed 's/^/   /'
echo "== first 3 of $(wc -l < "$demo/events.jsonl") events:"
head -3 "$demo/events.jsonl"
echo "== msgtrace state show"
(cd "$demo" && "$bin" state -c config/config.yaml show)
echo "== demo done: emulator stopped, $demo removed"
