#!/usr/bin/env bash
# `make cross`: static release binaries for ARM edge appliances and routers.
#
#   aarch64  aarch64-unknown-linux-musl                     -> target/msgtrace-static-aarch64
#   armv7    armv7-unknown-linux-musleabihf                 -> target/msgtrace-static-armv7
#            (fallback: armv7-unknown-linux-gnueabihf with +crt-static, a static glibc
#             binary, when the Rust dist server has no musleabihf std for this toolchain)
#
# What it needs, and installs when missing and allowed (root + apt-get, and
# MSGTRACE_CROSS_NO_INSTALL unset): the Rust std of the target (`rustup target add`),
# a C cross compiler for ring's C/assembly and as the linker (Debian
# gcc-aarch64-linux-gnu / gcc-arm-linux-gnueabihf), and qemu-user-static to run
# `--version` of each binary as a smoke test.
#
# Idempotent; not part of `make test`. Always exits 0 and ends with a summary naming the
# targets built and those not built, with the reason. Set MSGTRACE_CROSS_STRICT=1 to exit
# 1 when any target was not built. MSGTRACE_CROSS_ROOT=DIR builds the crate in DIR instead
# of this repository (to prove the toolchain on a stand-in crate while this one is broken).
set -u
cd "${MSGTRACE_CROSS_ROOT:-$(dirname "$0")/../..}" || exit 0

TARGET_DIR=${CARGO_TARGET_DIR:-target}
NO_INSTALL=${MSGTRACE_CROSS_NO_INSTALL:-}
BUILT=()
SKIPPED=()

say() { printf 'cross: %s\n' "$*"; }

can_install() {
  [ -z "$NO_INSTALL" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1
}

apt_install() {
  can_install || return 1
  say "installing Debian packages: $*"
  DEBIAN_FRONTEND=noninteractive nice -n 10 apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 &&
         DEBIAN_FRONTEND=noninteractive nice -n 10 apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1; }
}

have_target() { rustup target list --installed 2>/dev/null | grep -qx "$1"; }

ensure_target() {
  have_target "$1" && return 0
  [ -n "$NO_INSTALL" ] && return 1
  say "rustup target add $1"
  rustup target add "$1" >/dev/null 2>&1
}

ensure_cc() { # $1 compiler, rest: Debian packages providing it
  local cc=$1
  shift
  command -v "$cc" >/dev/null 2>&1 && return 0
  apt_install "$@" && command -v "$cc" >/dev/null 2>&1
}

# build ARCH CC QEMU APT_PACKAGES -- TARGET[:crt-static] ...
# Tries each target in turn; the first whose std is available and that builds wins.
build() {
  local arch=$1 cc=$2 qemu=$3 pkgs=$4
  shift 5
  if ! ensure_cc "$cc" $pkgs; then
    SKIPPED+=("$arch: no C cross compiler $cc (apt-get install $pkgs)")
    return
  fi
  local why="" spec target flavour upper out
  for spec in "$@"; do
    target=${spec%%:*}
    flavour=musl
    [ "$spec" != "$target" ] && flavour=${spec#*:}
    if ! ensure_target "$target"; then
      why="${why}${why:+; }rust std for $target not available (rustup target add $target failed)"
      continue
    fi
    upper=$(printf '%s' "$target" | tr 'a-z-' 'A-Z_')
    local rustflags=""
    [ "$flavour" = crt-static ] && rustflags="-C target-feature=+crt-static"
    say "building $target ($flavour) with $cc"
    if env "CC_${target//-/_}=$cc" "CARGO_TARGET_${upper}_LINKER=$cc" \
      "CARGO_TARGET_${upper}_RUSTFLAGS=$rustflags" \
      nice -n 10 cargo build --release --locked --target "$target" --bin msgtrace; then
      out="$TARGET_DIR/msgtrace-static-$arch"
      cp "$TARGET_DIR/$target/release/msgtrace" "$out"
      say "$out: $(stat -c %s "$out") bytes"
      file -b "$out" 2>/dev/null | sed 's/^/cross:   file: /'
      if ! file -b "$out" 2>/dev/null | grep -Eq 'statically linked|static-pie'; then
        why="${why}${why:+; }$target built but not static"
        continue
      fi
      local ran="not run (no $qemu)"
      if command -v "$qemu" >/dev/null 2>&1 || { apt_install qemu-user-static && command -v "$qemu" >/dev/null 2>&1; }; then
        if v=$(timeout 20 "$qemu" "$out" --version 2>&1); then
          ran="ran under $qemu: $v"
        else
          ran="FAILED under $qemu: $v"
        fi
      fi
      say "$ran"
      BUILT+=("$arch: $target ($flavour), $(stat -c %s "$out") bytes, $out; $ran${why:+; first choice not used: $why}")
      return
    fi
    why="${why}${why:+; }cargo build --target $target failed (see above)"
  done
  SKIPPED+=("$arch: $why")
}

if ! command -v cargo >/dev/null 2>&1 || ! command -v rustup >/dev/null 2>&1; then
  say "cargo and rustup are needed; nothing built"
  exit 0
fi

build aarch64 aarch64-linux-gnu-gcc qemu-aarch64-static \
  "gcc-aarch64-linux-gnu libc6-dev-arm64-cross" -- \
  aarch64-unknown-linux-musl
build armv7 arm-linux-gnueabihf-gcc qemu-arm-static \
  "gcc-arm-linux-gnueabihf libc6-dev-armhf-cross" -- \
  armv7-unknown-linux-musleabihf armv7-unknown-linux-gnueabihf:crt-static

echo
say "summary"
for b in ${BUILT[@]+"${BUILT[@]}"}; do say "  built:     $b"; done
for s in ${SKIPPED[@]+"${SKIPPED[@]}"}; do say "  not built: $s"; done
if [ -n "${MSGTRACE_CROSS_STRICT:-}" ] && [ ${#SKIPPED[@]} -gt 0 ]; then
  exit 1
fi
exit 0
