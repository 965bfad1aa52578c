#!/bin/sh
# Install the real receivers the output tests talk to: rsyslog with its OpenSSL
# network stream driver and RELP input (imrelp), openssl, and syslog-ng.
# Idempotent; `apt-get update` only when a plain install fails (stale package lists).
#
# syslog-ng: Debian's syslog-ng-core conflicts with the rsyslog package, so it is never
# installed. Its .deb (and the libraries it needs that are not installed) is fetched
# with `apt-get download` and unpacked with `dpkg-deb -x` into a private directory —
# $MSGTRACE_SYSLOG_NG_DIR, else /opt/msgtrace-test/syslog-ng when writable, else
# ~/.cache/msgtrace-test/syslog-ng. The tests run it from there with their own config,
# persist file, pid file and control socket; the system's syslog daemon is untouched.
set -eu
need=""
command -v rsyslogd >/dev/null 2>&1 || [ -x /usr/sbin/rsyslogd ] || need="$need rsyslog"
ls /usr/lib/*/rsyslog/lmnsd_ossl.so >/dev/null 2>&1 || need="$need rsyslog-openssl"
ls /usr/lib/*/rsyslog/imrelp.so >/dev/null 2>&1 || need="$need rsyslog-relp"
command -v openssl >/dev/null 2>&1 || need="$need openssl"
SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
if [ -n "$need" ]; then
    # shellcheck disable=SC2086
    $SUDO apt-get install -y --no-install-recommends $need || {
        $SUDO apt-get update
        # shellcheck disable=SC2086
        $SUDO apt-get install -y --no-install-recommends $need
    }
fi

# ---- syslog-ng, private copy
ng_dir="${MSGTRACE_SYSLOG_NG_DIR:-}"
if [ -z "$ng_dir" ]; then
    if mkdir -p /opt/msgtrace-test 2>/dev/null && [ -w /opt/msgtrace-test ]; then
        ng_dir=/opt/msgtrace-test/syslog-ng
    else
        ng_dir="${XDG_CACHE_HOME:-$HOME/.cache}/msgtrace-test/syslog-ng"
    fi
fi
[ -x "$ng_dir/usr/sbin/syslog-ng" ] && exit 0
command -v apt-get >/dev/null 2>&1 || { echo "no apt-get: syslog-ng not installed" >&2; exit 0; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The packages syslog-ng-core depends on that this system lacks (libc, glib, openssl
# are normally there); a virtual or alternative dependency is left to the loader.
pkgs="syslog-ng-core"
for dep in $(apt-cache depends --important syslog-ng-core 2>/dev/null |
    sed -n 's/^ *|\{0,1\}Depends: \([a-z0-9][a-z0-9.+-]*\)$/\1/p' | sort -u); do
    case "$dep" in lsb-base | sysvinit-utils) continue ;; esac
    dpkg -s "$dep" >/dev/null 2>&1 || pkgs="$pkgs $dep"
done
# shellcheck disable=SC2086
(cd "$work" && { apt-get download $pkgs || { $SUDO apt-get update && apt-get download $pkgs; }; })
mkdir -p "$ng_dir.tmp"
for deb in "$work"/*.deb; do
    dpkg-deb -x "$deb" "$ng_dir.tmp"
done
rm -rf "$ng_dir"
mv "$ng_dir.tmp" "$ng_dir"
echo "syslog-ng unpacked into $ng_dir"
