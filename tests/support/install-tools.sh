#!/bin/sh
# Install the tools the tests use besides the receivers (install-receivers.sh does
# rsyslog and openssl): promtool (Debian `prometheus`) for the metrics tests, buildah to
# build and unpack the scratch image (tests/it/deploy.rs, `make image`), systemd-analyze,
# python3's yaml module for the deployment recipes, util-linux's flock and unshare,
# libfaketime (Debian `faketime`) for the wall-clock jump test (tests/it/hostile.rs).
# Under MSGTRACE_STRICT=1 a test whose tool is missing fails, so `make test` runs this
# first. Idempotent: installs only what is missing; `apt-get update` only when a plain
# install fails (stale package lists). Exits non-zero when something stays missing.
set -eu
need=""
command -v promtool >/dev/null 2>&1 || need="$need prometheus"
command -v buildah >/dev/null 2>&1 || need="$need buildah"
command -v systemd-analyze >/dev/null 2>&1 || need="$need systemd"
python3 -c 'import yaml' >/dev/null 2>&1 || need="$need python3-yaml"
{ command -v flock && command -v unshare; } >/dev/null 2>&1 || need="$need util-linux"
command -v faketime >/dev/null 2>&1 || need="$need faketime"
[ -z "$need" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-tools.sh: missing:$need; no apt-get here, install them by hand" >&2
    exit 1
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# Wait for a concurrent apt/dpkg (another job on the same machine) instead of failing.
APT="$SUDO apt-get -o DPkg::Lock::Timeout=600"
echo "install-tools.sh: installing$need"
# shellcheck disable=SC2086
$APT install -y --no-install-recommends $need || {
    $APT update
    # shellcheck disable=SC2086
    $APT install -y --no-install-recommends $need
}
