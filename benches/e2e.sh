#!/usr/bin/env bash
# End-to-end benchmark through a Kafka-protocol broker (see benches/e2e.rs for what is measured
# and the E2E_* settings). Builds the release binary, then prints one table per broker.
#   benches/e2e.sh                          # 1M leads, 3M backlog events, 20k events/s for 30 s,
#                                           # on the mock, then on Apache Kafka (kafka-local)
#   E2E_LEADS=100000 E2E_EVENTS=300000 benches/e2e.sh   # a quick run
#   E2E_BROKER=mock benches/e2e.sh          # one broker: mock, kafka (started here, needs Java
#                                           # and Maven) or external (E2E_BROKERS=host:9092)
#   E2E_RUNS=3 benches/e2e.sh               # each broker 3 times, then the run-to-run spread
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin leadflow
runs=${E2E_RUNS:-1}
tables=$(mktemp -d)
trap 'rm -rf "$tables"' EXIT

# bench NAME: runs the e2e bench E2E_RUNS times, then prints each table row that varies as
# "min .. max (every run)", so one lucky or unlucky run is not quoted alone.
bench() {
  local name=$1
  for i in $(seq 1 "$runs"); do
    [ "$runs" -eq 1 ] || echo "-- $name, run $i of $runs"
    cargo bench --locked --bench e2e | tee "$tables/$name.$i"
  done
  [ "$runs" -gt 1 ] || return 0
  echo
  echo "== $name: run-to-run spread over $runs runs"
  for row in "sustained throughput" "time to fold the backlog" "latency p50" "latency p99" "latency max"; do
    grep -h "$row" "$tables/$name".* | awk -F'|' -v row="$row" '
      { v = $3; gsub(/[^0-9.]/, "", v); vals = vals (NR > 1 ? ", " : "") v
        if (NR == 1 || v + 0 < min) min = v + 0; if (NR == 1 || v + 0 > max) max = v + 0 }
      END { if (NR) printf "| %s | %s .. %s (%s) |\n", row, min, max, vals }'
  done
}
which=${E2E_BROKER:-both}
[ -n "${E2E_BROKERS:-}" ] && which=${E2E_BROKER:-external}

if [ "$which" = mock ] || [ "$which" = both ]; then
  echo "== librdkafka's mock cluster"
  E2E_BROKERS= bench mock
fi
if [ "$which" = external ]; then
  echo "== $E2E_BROKERS"
  bench external
fi
if [ "$which" = kafka ] || [ "$which" = both ]; then
  kafka=deploy/kafka-local/kafka-local
  if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
    echo "e2e: Java and Maven are needed for Apache Kafka (deploy/kafka-local); skipped" >&2
    exit 0
  fi
  export KAFKA_LOCAL_PORT=${KAFKA_LOCAL_PORT:-19192}
  if "$kafka" status >/dev/null 2>&1; then
    echo "e2e: a broker already runs on port $KAFKA_LOCAL_PORT; stop it, set KAFKA_LOCAL_PORT, or use E2E_BROKERS" >&2
    exit 1
  fi
  trap '"$kafka" stop >/dev/null 2>&1 || true; rm -rf "$tables"' EXIT
  brokers=$("$kafka" start)
  echo "== Apache Kafka at $brokers (deploy/kafka-local)"
  E2E_BROKERS=$brokers bench kafka
fi
