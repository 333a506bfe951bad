#!/usr/bin/env bash
# Set up cafebench on a fresh Debian machine: system packages (Fashion-MNIST data, Chromium for the report
# tests) and a virtualenv in .venv with the package, its test tools and the Ray extra.
set -euo pipefail
cd "$(dirname "$0")"
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
