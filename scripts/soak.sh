#!/usr/bin/env bash
# Soak (issue 25): steady load against `s3repl run` for MINUTES (default 10), sampling the
# replicator's resident memory, open descriptors and threads every 10 s. Prints the samples
# and the growth from the first sample after warm-up (one minute, or a tenth of the run) to the
# last; exits 1 if RSS grew by more than 25% (and 16 MiB), or descriptors or threads by more
# than 8. Usage: scripts/soak.sh [MINUTES] [RATE]
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-10}"; rate="${2:-2000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/s3repl/target}"
cargo build --release -p s3repl-tools --locked >&2
bin="$CARGO_TARGET_DIR/release/s3repl"
data="$(mktemp -d /tmp/s3repl-soak.XXXXXX)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$data"' EXIT
export S3REPL_ADMIN_ACCESS_KEY_ID=soak S3REPL_ADMIN_SECRET_ACCESS_KEY=soak-secret
mkdir -p "$data/replication"
cat > "$data/replication/soak-src.xml" <<'XML'
<ReplicationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Role>arn:aws:iam::123456789012:role/r</Role><Rule><ID>all</ID><Priority>1</Priority><Status>Enabled</Status><Filter><Prefix></Prefix></Filter><DeleteMarkerReplication><Status>Disabled</Status></DeleteMarkerReplication><Destination><Bucket>arn:aws:s3:::soak-dst</Bucket></Destination></Rule></ReplicationConfiguration>
XML
"$bin" run --data-dir "$data" --admin-listen 127.0.0.1:0 > "$data/endpoint" 2> "$data/run.log" &
pid=$!
for _ in $(seq 100); do grep -q "admin endpoint" "$data/endpoint" 2>/dev/null && break; sleep 0.1; done
endpoint="$(sed -n 's/^admin endpoint: //p' "$data/endpoint")"
seconds=$((minutes * 60))
"$bin" loadtest --target-dir "$data" --admin "$endpoint" --bucket soak-src --rate "$rate" \
  --duration "$seconds" --size 1KiB --drain-timeout 120 --json "$data/loadtest.json" > "$data/loadtest.out" 2>&1 &
load=$!
sample() {
  local rss fds threads
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
  fds=$(ls "/proc/$pid/fd" | wc -l)
  threads=$(awk '/^Threads:/ {print $2}' "/proc/$pid/status")
  echo "$1 $rss $fds $threads"
}
echo "seconds rss_kib fds threads"
warm=$(( seconds / 10 < 60 ? seconds / 10 : 60 ))
t=0; first=""; last=""
while kill -0 "$load" 2>/dev/null; do
  line="$(sample "$t")"; echo "$line"
  [ "$t" -ge "$warm" ] && [ -z "$first" ] && first="$line"
  last="$line"
  sleep 10; t=$((t + 10))
done
wait "$load" || { cat "$data/loadtest.out"; exit 1; }
last="$(sample "$t")"; echo "$last"
tail -n 4 "$data/loadtest.out"
read -r _ rss0 fd0 th0 <<< "$first"; read -r _ rss1 fd1 th1 <<< "$last"
echo "after warm-up: RSS ${rss0} -> ${rss1} KiB, descriptors ${fd0} -> ${fd1}, threads ${th0} -> ${th1}"
grown=$(( rss1 - rss0 ))
if [ "$grown" -gt $(( rss0 / 4 )) ] && [ "$grown" -gt 16384 ]; then echo "RSS grew"; exit 1; fi
if [ $(( fd1 - fd0 )) -gt 8 ] || [ $(( th1 - th0 )) -gt 8 ]; then echo "descriptors or threads grew"; exit 1; fi
echo "flat"
