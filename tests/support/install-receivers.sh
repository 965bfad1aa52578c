#!/bin/sh
# Install the real receivers the output tests talk to: rsyslog with its OpenSSL
# network stream driver, and openssl. Idempotent; `apt-get update` only when a plain
# install fails (stale package lists).
set -eu
need=""
command -v rsyslogd >/dev/null 2>&1 || [ -x /usr/sbin/rsyslogd ] || need="$need rsyslog"
ls /usr/lib/*/rsyslog/lmnsd_ossl.so >/dev/null 2>&1 || need="$need rsyslog-openssl"
command -v openssl >/dev/null 2>&1 || need="$need openssl"
[ -z "$need" ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086
$SUDO apt-get install -y --no-install-recommends $need || {
    $SUDO apt-get update
    # shellcheck disable=SC2086
    $SUDO apt-get install -y --no-install-recommends $need
}
