#!/usr/bin/env bash
# The README's quickstart, runnable: replicate a bucket of a loopback S3 server (SeaweedFS) into
# another with `s3repl run` — objects that existed before replication was configured by
# backfill, a new one by its bucket event — then prove the buckets agree with `s3repl verify`.
# Everything lives in a temporary directory and is stopped at the end; exit 0 when verify agrees.
# scripts/test.sh runs it, so the commands the README shows keep working.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/s3repl/target}"
WEED="$(scripts/install-seaweedfs.sh)"
AWS="$(scripts/install-awscli.sh)"
cargo build -q -p s3repl-tools --bin s3repl --locked
S3REPL="$CARGO_TARGET_DIR/debug/s3repl"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# Free ports on 127.0.0.1 (SeaweedFS also takes each port + 10000 for gRPC).
ports() {
  python3 - "$1" <<'PY'
import socket, sys
out = []
while len(out) < int(sys.argv[1]):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    if p >= 55000 or p in out:
        continue
    try:
        g = socket.socket(); g.bind(("127.0.0.1", p + 10000)); g.close()
    except OSError:
        continue
    out.append(p)
print(" ".join(map(str, out)))
PY
}
picked="$(ports 9)"
read -r s3_port master volume filer admin_ui iceberg lance debug admin_port <<<"$picked"

echo "1. An S3 server on 127.0.0.1:$s3_port with two versioned buckets (SeaweedFS; any S3 server works)."
cat >"$work/s3.json" <<'JSON'
{"identities":[{"name":"me","credentials":[{"accessKey":"quick","secretKey":"quick-secret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
"$WEED" mini -dir="$work" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port="$s3_port" -s3.config="$work/s3.json" \
  -master.port="$master" -volume.port="$volume" -filer.port="$filer" -admin.port="$admin_ui" \
  -s3.port.iceberg="$iceberg" -s3.port.lance="$lance" -debug.port="$debug" -admin.ui=false -webdav=false \
  >"$work/weed.log" 2>&1 &
pids+=($!)
export AWS_ACCESS_KEY_ID=quick AWS_SECRET_ACCESS_KEY=quick-secret AWS_DEFAULT_REGION=us-east-1
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
s3() { "$AWS" --endpoint-url "http://127.0.0.1:$s3_port" s3api "$@"; }
up() { for _ in $(seq 120); do "$@" && return 0; sleep 0.5; done; echo "quickstart: not up: $*" >&2; return 1; }
up s3 list-buckets >/dev/null 2>&1
for b in photos photos-dr; do
  s3 create-bucket --bucket "$b" >/dev/null
  s3 put-bucket-versioning --bucket "$b" --versioning-configuration Status=Enabled
done

echo "2. Three objects that exist before replication is configured."
for i in 1 2 3; do
  echo "picture $i" >"$work/p$i.jpg"
  s3 put-object --bucket photos --key "2026/pic $i.jpg" --body "$work/p$i.jpg" >/dev/null
done

echo "3. The replicator: reads photos, writes photos-dr, takes bucket events at /-/events."
cat >"$work/s3repl.toml" <<TOML
data_dir = "$work/s3repl-data"
[source]
kind = "s3"
buckets = ["photos"]
endpoint = "http://127.0.0.1:$s3_port"
access_key_id = "quick"
secret_access_key = "quick-secret"
allow_http = true
[[destinations]]
arn = "arn:aws:s3:::photos-dr"
kind = "s3"
endpoint = "http://127.0.0.1:$s3_port"
access_key_id = "quick"
secret_access_key = "quick-secret"
allow_http = true
[intake]
webhook = true
webhook_token = "quickstart-token-0123456789"
[admin]
credentials = [{ access_key_id = "admin", secret_access_key = "admin-secret" }]
TOML
"$S3REPL" run --config "$work/s3repl.toml" --admin-listen "127.0.0.1:$admin_port" >"$work/run.out" 2>"$work/run.log" &
pids+=($!)
up grep -q "admin endpoint" "$work/run.out"

echo "4. Replication configured as against S3; ExistingObjectReplication backfills the three objects."
cat >"$work/replication.json" <<'JSON'
{"Role": "arn:aws:iam::123456789012:role/replication",
 "Rules": [{"ID": "pictures", "Priority": 1, "Status": "Enabled", "Filter": {"Prefix": "2026/"},
            "ExistingObjectReplication": {"Status": "Enabled"},
            "DeleteMarkerReplication": {"Status": "Enabled"},
            "Destination": {"Bucket": "arn:aws:s3:::photos-dr"}}]}
JSON
AWS_ACCESS_KEY_ID=admin AWS_SECRET_ACCESS_KEY=admin-secret \
  "$AWS" --endpoint-url "http://127.0.0.1:$admin_port" s3api put-bucket-replication \
  --bucket photos --replication-configuration "file://$work/replication.json"

echo "5. A new object, and the event its server sends (MinIO's webhook target posts exactly this)."
echo "picture 4" >"$work/p4.jpg"
version="$(s3 put-object --bucket photos --key "2026/pic 4.jpg" --body "$work/p4.jpg" --query VersionId --output text)"
curl -sf -H "Authorization: Bearer quickstart-token-0123456789" \
  --data "{\"Records\":[{\"eventName\":\"s3:ObjectCreated:Put\",\"s3\":{\"bucket\":{\"name\":\"photos\"},\"object\":{\"key\":\"2026/pic+4.jpg\",\"versionId\":\"$version\",\"sequencer\":\"01\"}}}]}" \
  "http://127.0.0.1:$admin_port/-/events"
echo

echo "6. Proof that the buckets agree (retried while replication catches up)."
for _ in $(seq 60); do
  if "$S3REPL" verify --config "$work/s3repl.toml" --bucket photos >"$work/verify.out" 2>&1; then
    tail -1 "$work/verify.out"
    echo "quickstart: photos-dr holds every version the rule selects."
    exit 0
  fi
  sleep 1
done
cat "$work/verify.out" "$work/run.log" >&2
exit 1
