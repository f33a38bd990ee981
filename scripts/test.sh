#!/usr/bin/env bash
# Set up a fresh machine and run every test: the README's test command, and what CI runs.
#
# Builds the wheel (compiled tcpcore), installs it into a new virtual environment without Cython,
# and runs the suite against the installed package twice: compiled (a missing extension is a
# failure, not a fallback) and with TCPCORE_NO_EXTENSIONS=1 (the pure-Python twins).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=${PYTCP_TEST_VENV:-$root/.venv-test}
python=${PYTHON:-python3}

need_apt=()
command -v ip >/dev/null || need_apt+=(iproute2)
command -v tcpdump >/dev/null || need_apt+=(tcpdump)
command -v sysctl >/dev/null || need_apt+=(procps)
command -v curl >/dev/null || need_apt+=(curl)
command -v ping >/dev/null || need_apt+=(iputils-ping)
command -v setpriv >/dev/null || need_apt+=(util-linux)
command -v iptables >/dev/null || need_apt+=(iptables)
command -v iperf3 >/dev/null || need_apt+=(iperf3)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v ethtool >/dev/null || need_apt+=(ethtool)
if ((${#need_apt[@]})); then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
        echo "missing tools (${need_apt[*]}) and not root to install them" >&2
    fi
fi

rm -rf "$venv" "$root/dist"
"$python" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip build
# sdist first, then the wheel from the sdist: proves the sdist carries what the build needs.
"$venv/bin/python" -m build -q --outdir "$root/dist" "$root" >/dev/null
wheel=$(ls "$root"/dist/pytcp_stack-*.whl)
"$venv/bin/pip" install -q "$wheel[test,bench]" ruff
if "$venv/bin/python" -c "import Cython" 2>/dev/null; then
    echo "Cython leaked into the test environment: the wheel must work without it" >&2
    exit 1
fi

"$venv/bin/ruff" check tcpcore pytcp tests bench
"$venv/bin/ruff" format --check tcpcore pytcp tests bench

# PYTHONSAFEPATH keeps the checkout off sys.path (in subprocesses too), so the installed wheel is
# what gets tested.
export PYTHONSAFEPATH=1
run_pytest() { "$venv/bin/python" -m pytest -p no:cacheprovider --import-mode=importlib "$@"; }
TCPCORE_REQUIRE_EXTENSIONS=1 run_pytest tests -q
TCPCORE_NO_EXTENSIONS=1 run_pytest tests -q
