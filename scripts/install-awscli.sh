#!/usr/bin/env bash
# Installs the AWS CLI (v1, from PyPI) and boto3 into the tests' virtualenv outside the clone,
# once, and prints the path of its `aws` binary (its `python` is beside it). The admin-endpoint
# tests drive `s3repl run` with both. boto3 is pinned to a botocore whose S3 model has the
# members S3 added in 2026 (exclusion filters, UseSourceMultiRegionKey): the AWS CLI v1 vendors
# an older botocore that lacks them. Bump both pins to test against a newer API model.
set -euo pipefail
venv="${S3REPL_VENV:-$HOME/.cache/s3repl/venv}"
botocore="1.44.18"
if [ ! -x "$venv/bin/aws" ]; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "awscli==1.46.3" >&2
fi
if ! "$venv/bin/python" -c "import boto3, botocore, sys; sys.exit(botocore.__version__ != '$botocore')" 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check "boto3==$botocore" "botocore==$botocore" >&2
fi
echo "$venv/bin/aws"
