#!/usr/bin/env bash
# Set up a fresh machine and run the main job: build and install the stack into a virtual
# environment, then `pytcp demo` (as root: a private network namespace and TUN device, a kernel
# client talking to the stack, the exchange drawn segment by segment from handshake to TIME-WAIT),
# then a seeded simulated transfer over a lossy link with its report.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=${PYTCP_VENV:-$root/.venv}
python=${PYTHON:-python3}

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q "$root"
cd /  # run the installed package, not the checkout
"$venv/bin/pytcp" demo
"$venv/bin/pytcp" sim --seed 7 --loss 0.05 --dup 0.01 --reorder 0.05 --corrupt 0.01 --bytes 2000000
