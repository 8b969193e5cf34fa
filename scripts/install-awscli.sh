#!/usr/bin/env bash
# Installs the AWS CLI (v1, from PyPI) into the tests' virtualenv outside the clone, once, and
# prints the path of its `aws` binary. The admin-endpoint tests drive `s3repl run` with it.
set -euo pipefail
venv="${S3REPL_VENV:-$HOME/.cache/s3repl/venv}"
if [ ! -x "$venv/bin/aws" ]; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "awscli==1.46.3" >&2
fi
echo "$venv/bin/aws"
