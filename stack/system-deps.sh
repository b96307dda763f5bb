#!/usr/bin/env bash
# The Debian packages the stack and its tests run: installed when we are root, otherwise named in
# the one apt-get line to run. Used by `make up`, `make test` and CI, so all three agree.
set -euo pipefail

packages=(
    python3-venv          # the private uv, when uv is not on PATH
    postgresql redis-server nginx
    prometheus prometheus-alertmanager
    prometheus-node-exporter prometheus-nginx-exporter prometheus-redis-exporter
    prometheus-postgres-exporter
    prometheus-blackbox-exporter  # edge probes through nginx for the availability SLI
    prometheus-pushgateway  # Locust's live numbers during make loadtest
    apache2-utils         # htpasswd: the bcrypt hash in the monitoring plane's web config
)
# A target's own extras, named on the command line (make bench: wrk).
packages+=("$@")

if ! command -v dpkg-query >/dev/null; then
    echo "system-deps: not a Debian system; install the equivalents of: ${packages[*]}" >&2
    exit 0
fi

missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
((${#missing[@]})) || exit 0

if [[ $(id -u) -ne 0 ]]; then
    echo "Missing Debian packages. Run:" >&2
    echo "  sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
