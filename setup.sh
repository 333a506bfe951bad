#!/usr/bin/env bash
# Set up cafebench on a fresh Debian machine: system packages (Fashion-MNIST data, Chromium for the report
# tests) and a virtualenv in .venv with the package, its test tools and the Ray extra.
set -euo pipefail
cd "$(dirname "$0")"
# The virtualenv takes about 6.5 GB (pip's PyTorch here is a CUDA build); check the disk before filling it halfway.
NEED_GB="${CAFEBENCH_SETUP_NEED_GB:-8}"
if [ ! -x .venv/bin/python ]; then
  FREE_GB=$(( $(df -Pk . | awk 'NR==2 {print $4}') / 1048576 ))
  if [ "$FREE_GB" -lt "$NEED_GB" ]; then
    echo "setup.sh: only ${FREE_GB} GB free under $PWD; the virtualenv needs about ${NEED_GB} GB." >&2
    echo "Free some space (old clones' .venv folders are 6.5 GB each) and run it again." >&2
    exit 1
  fi
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if ! dpkg -s dataset-fashion-mnist chromium >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    dataset-fashion-mnist chromium >/dev/null
fi
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test,ray]'
