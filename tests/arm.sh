#!/usr/bin/env bash
# intercomd for the Raspberry Pi: cross-build, test under emulation, package.
#   bash tests/arm.sh          (as root: it installs what it lacks with apt-get)
#
# On a bare Debian 12 x86_64 machine with rustup's Rust it installs what it
# lacks, then:
#   1. tools:     cross compilers (used as linkers), qemu-user, debootstrap,
#                 mosquitto (apt);
#   2. toolchain: Debian's Rust 1.85 and its standard library's sources, musl
#                 for arm64 and armel, LLVM's libunwind for arm64, all
#                 unpacked (not installed) under target/arm-toolchain/ and
#                 reused next time;
#   3. build:     the release daemon for each Pi target, its standard library
#                 built from those sources (-Zbuild-std), linked statically
#                 against musl, into target/arm/TRIPLE/release/intercomd;
#                 checks that each is static, and holds its size budget;
#   4. unit:      systemd-analyze verify, and security (must rate <= 2.0);
#   5. qemu:      each binary started under qemu-user with every CPU model of
#                 the Pis it is for, asked over http and https, stopped;
#   6. tests:     the loopback integration tests against each binary under
#                 each of those CPU models (INTERCOMD_BIN=a qemu wrapper; the
#                 tests themselves are x86): an instruction a Pi lacks fails
#                 here;
#   7. userland:  a Debian 11 (bullseye, glibc 2.31) armhf root made with
#                 debootstrap: both binaries run in it under chroot, serve
#                 HTTPS, find an MQTT broker by a name from its /etc/hosts,
#                 and open no C library and no NSS module (qemu's -strace);
#   8. packages:  a .deb per Pi (cargo-deb, from those binaries) and an amd64
#                 one, checks their control data, contents and scripts, then
#                 installs, removes and purges the amd64 one here (where
#                 systemd is not PID 1);
#   9. systemd:   the amd64 package under a real systemd in a container
#                 (systemd/check-in-container.sh).
# Everything it makes is under target/: the packages in target/arm/debian/.
# ARM_SKIP_TESTS=1 leaves out step 6 (about 4 minutes), for work on the rest.
#
# Why static and musl (README.md, "Raspberry Pi"): Raspberry Pi OS's 32-bit
# userland is ARMv6 and Debian's armhf is ARMv7, so no Debian library can be
# linked into a binary for the Pi 1 and Zero; a static binary takes nothing
# from the Pi. Static glibc costs 580 KiB (aarch64) and loads NSS modules of
# the Pi's own glibc for host names; static musl costs nothing measurable
# (these binaries are smaller than the dynamic glibc ones were) and has no
# NSS. The daemon resolves host names itself (src/resolve.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD
export DEBIAN_FRONTEND=noninteractive

# Debian's rustc-web and the sources of its standard library (bookworm; Rust
# 1.85 is the tree's rust-version). Another version with both packages in the
# archive can be named here.
DEBIAN_RUST=${DEBIAN_RUST:-1.85.0+dfsg3-1~deb12u3}
# LLVM's unwinder for aarch64 musl (what Rust's own musl builds carry); on
# 32-bit ARM, gcc's libgcc_eh does the same job in a static binary.
LLVM_UNWIND=libunwind-14-dev
TOOLCHAIN=$TOP/target/arm-toolchain/rust-$DEBIAN_RUST-musl
ARM_TARGET_DIR=$TOP/target/arm
DEB_DIR=$ARM_TARGET_DIR/debian
LOG_DIR=$ARM_TARGET_DIR/logs
# The Pi binaries: 64-bit, and 32-bit ARMv5TE code with soft float, which
# every ARM Pi runs (the ARM1176 of the Pi 1 and Zero is ARMv6).
TARGETS=(aarch64-unknown-linux-musl armv5te-unknown-linux-musleabi)
SUITES=(--test http --test websocket --test rooms --test reliability --test hostile --test daemon --test https --test peerjs --test events --test mqtt --test webhooks --test snapshots)
# Size budgets of the stripped binaries, in bytes (README.md, "Raspberry Pi").
declare -A BUDGET=([aarch64-unknown-linux-musl]=$((1536 * 1024)) [armv5te-unknown-linux-musleabi]=$((1536 * 1024)))
SECURITY_LIMIT=2.0
BULLSEYE=$ARM_TARGET_DIR/bullseye-armhf

# Per target: Debian package architecture, C cross compiler (gcc drives the
# link), musl's Debian architecture and triple, qemu, CPU models to test.
deb_arch() { case $1 in aarch64-*) echo arm64 ;; armv5te-*) echo armhf ;; x86_64-*) echo amd64 ;; esac; }
gnu_triple() { case $1 in aarch64-*) echo aarch64-linux-gnu ;; armv5te-*) echo arm-linux-gnueabi ;; esac; }
musl_arch() { case $1 in aarch64-*) echo arm64 ;; armv5te-*) echo armel ;; esac; }
musl_triple() { case $1 in aarch64-*) echo aarch64-linux-musl ;; armv5te-*) echo arm-linux-musleabi ;; esac; }
qemu_for() { case $1 in aarch64-*) echo qemu-aarch64 ;; armv5te-*) echo qemu-arm ;; esac; }
# Pi 3 and Zero 2 W, Pi 4, Pi 5 / Pi 1 and Zero, Pi 2 (qemu 7.2 knows them all).
cpus_for() { case $1 in aarch64-*) echo cortex-a53 cortex-a72 cortex-a76 ;; armv5te-*) echo arm1176 cortex-a7 ;; esac; }
elf_machine() { case $1 in aarch64-*) echo AArch64 ;; armv5te-*) echo ARM ;; x86_64-*) echo X86-64 ;; esac; }
binary_of() { echo "$ARM_TARGET_DIR/$1/release/intercomd"; }
wrapper_of() { echo "$ARM_TARGET_DIR/$1/intercomd-qemu-$2"; }

# ---------------------------------------------------------------- reporting
REPORT=arm.sh
# shellcheck source=tests/report.sh
. tests/report.sh

# Architectures this run added to dpkg, removed again on exit: with them left
# in place every later `apt-get update` on this machine fetches ARM indexes
# (and exits 100 whenever one of them fails, which stops scripts under set -e).
ADDED_ARCHS=()
# Set while the amd64 package is installed by the install check below.
INSTALLED_FOR_TEST=
# The broker of the old-userland check, while it runs.
BROKER_PID=
cleanup() {
  if [ -n "$BROKER_PID" ]; then kill "$BROKER_PID" 2>/dev/null || true; fi
  if [ -n "$INSTALLED_FOR_TEST" ]; then
    apt-get purge -y intercomd >/dev/null 2>&1 || true
  fi
  local arch
  for arch in "${ADDED_ARCHS[@]}"; do
    dpkg --remove-architecture "$arch" 2>/dev/null || true
  done
}
trap cleanup EXIT

need_root() {
  [ "$(id -u)" = 0 ] || die "$1 needs root: run it with sudo"
}

# ---------------------------------------------------------------- 1. tools
phase tools
APT_PACKAGES=(gcc-aarch64-linux-gnu gcc-arm-linux-gnueabi qemu-user binutils curl file systemd lintian
  build-essential systemd-container debootstrap mosquitto mosquitto-clients)
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }
missing=()
for package in "${APT_PACKAGES[@]}"; do
  installed "$package" || missing+=("$package")
done
command -v cargo >/dev/null 2>&1 || die "cargo is missing; install Rust from rustup first"

APT_UPDATED=
apt_update() {
  [ -z "$APT_UPDATED" ] || return 0
  # With the ARM architectures added, one of the security mirror's ARM
  # indexes can fail to download and apt-get update exits 100 although
  # everything needed still resolves: go on, and let the install or the
  # download below say whether a package is really missing.
  run apt-get update || say "apt-get update exited $?; going on (the packages are checked next)"
  APT_UPDATED=1
}
# Downloading musl and the unwinder for ARM needs apt to know those
# architectures: add them before the one apt-get update this run makes.
if [ ! -f "$TOOLCHAIN/.complete" ]; then
  need_root "downloading Debian's Rust and musl"
  for arch in arm64 armel; do
    if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
      run dpkg --add-architecture "$arch"
      ADDED_ARCHS+=("$arch")
    fi
  done
  apt_update
fi
if [ ${#missing[@]} -gt 0 ]; then
  need_root "installing ${missing[*]}"
  apt_update
  run apt-get install -y --no-install-recommends "${missing[@]}"
else
  say "all present: ${APT_PACKAGES[*]}"
fi
for package in "${APT_PACKAGES[@]}"; do
  installed "$package" || die "package $package is still not installed"
done

# ---------------------------------------------------------------- 2. toolchain
phase toolchain
if [ -f "$TOOLCHAIN/.complete" ]; then
  say "reusing Debian's Rust $DEBIAN_RUST and musl in ${TOOLCHAIN#$TOP/}"
else
  # rustc-web needs the host standard library and its runtime library, which
  # needs LLVM: take their names from the archive, so that DEBIAN_RUST alone
  # picks a version.
  depends_of() { apt-cache show "$1" 2>/dev/null | sed -n 's/^Depends: //p' | head -n 1 | tr ',' '\n'; }
  if ! apt-cache show "rustc-web=$DEBIAN_RUST" >/dev/null 2>&1 || ! apt-cache show "rust-web-src=$DEBIAN_RUST" >/dev/null 2>&1; then
    echo "arm.sh: Debian's archive has no rustc-web and rust-web-src $DEBIAN_RUST." >&2
    apt-cache madison rustc-web rust-web-src >&2 || true
    die "set DEBIAN_RUST to a version both have"
  fi
  runtime=$(depends_of "libstd-rust-web-dev=$DEBIAN_RUST" | sed -n 's/^ *\(libstd-rust-web-[0-9.]*\) .*/\1/p' | head -n 1)
  llvm=$(depends_of "$runtime=$DEBIAN_RUST" | sed -n 's/^ *\(libllvm[0-9]*\).*/\1/p' | head -n 1)
  [ -n "$runtime" ] && [ -n "$llvm" ] || die "cannot tell the runtime and LLVM packages of rustc-web $DEBIAN_RUST"
  downloads=$(mktemp -d)
  chmod 755 "$downloads" # apt's download user must be able to write there
  chown _apt "$downloads" 2>/dev/null || true
  (cd "$downloads" && run apt-get download -q "rustc-web=$DEBIAN_RUST" "$runtime=$DEBIAN_RUST" \
    "libstd-rust-web-dev=$DEBIAN_RUST" "rust-web-src=$DEBIAN_RUST" "$llvm" \
    musl-dev:arm64 musl:arm64 musl-dev:armel musl:armel "$LLVM_UNWIND:arm64")
  rm -rf "$TOOLCHAIN.partial"
  mkdir -p "$TOOLCHAIN.partial/musl"
  for deb in "$downloads"/*.deb; do
    say "unpacking $(basename "$deb")"
    dpkg-deb -f "$deb" Package Version Architecture | tr '\n' ' ' >>"$TOOLCHAIN.partial/PACKAGES"
    echo >>"$TOOLCHAIN.partial/PACKAGES"
    case $(basename "$deb") in
      musl*_arm64.deb | "$LLVM_UNWIND"_*_arm64.deb) dpkg -x "$deb" "$TOOLCHAIN.partial/musl/arm64" ;;
      musl*_armel.deb) dpkg -x "$deb" "$TOOLCHAIN.partial/musl/armel" ;;
      *) dpkg -x "$deb" "$TOOLCHAIN.partial" ;;
    esac
  done
  rm -rf "$downloads" "$TOOLCHAIN"
  touch "$TOOLCHAIN.partial/.complete"
  mv "$TOOLCHAIN.partial" "$TOOLCHAIN"
  # The ARM package lists are no longer needed: forget the architectures now,
  # not only on exit, so nothing later in this run depends on them.
  for arch in "${ADDED_ARCHS[@]}"; do run dpkg --remove-architecture "$arch"; done
  ADDED_ARCHS=()
fi
RUSTC_WRAPPER=$TOOLCHAIN/rustc
cat >"$RUSTC_WRAPPER" <<EOF
#!/bin/sh
# Debian's rustc, unpacked rather than installed: find its libraries here.
LD_LIBRARY_PATH=$TOOLCHAIN/usr/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH} exec $TOOLCHAIN/usr/bin/rustc "\$@"
EOF
chmod 755 "$RUSTC_WRAPPER"
[ -f "$TOOLCHAIN/usr/lib/rustlib/src/rust/library/Cargo.lock" ] || die "no standard library sources in $TOOLCHAIN"
# A gcc per target that links against musl: musl's own gcc specs (from
# musl-dev), moved to where musl was unpacked, with rcrt1.o should rustc
# ever ask for a static PIE (Rust 1.85 links these targets -static -no-pie);
# and the unwinder, as libunwind.a where Rust's unwind crate looks for it.
for target in "${TARGETS[@]}"; do
  musl=$TOOLCHAIN/musl/$(musl_arch "$target")
  lib=$musl/usr/lib/$(musl_triple "$target")
  [ -f "$lib/libc.a" ] || die "no musl for $target in $musl"
  sed -e "s|/usr/|$musl/usr/|g" \
    -e "s|%{!shared: \([^ }]*\)/Scrt1.o}|%{static-pie:\1/rcrt1.o} %{!static-pie:%{!shared:\1/Scrt1.o}}|" \
    -e "s|-dynamic-linker \([^ ]*\)|%{!static-pie:-dynamic-linker \1} %{static-pie:-static -pie --no-dynamic-linker -z text}|" \
    "$lib/musl-gcc.specs" >"$musl/musl-gcc.specs"
  mkdir -p "$musl/unwind"
  case $target in
    aarch64-*) unwinder=$musl/usr/lib/llvm-14/lib/libunwind.a ;;
    *) unwinder=$("$(gnu_triple "$target")-gcc" -print-file-name=libgcc_eh.a) ;;
  esac
  [ -f "$unwinder" ] || die "no unwinder for $target ($unwinder)"
  ln -sfn "$unwinder" "$musl/unwind/libunwind.a"
  mkdir -p "$TOOLCHAIN/bin"
  cat >"$TOOLCHAIN/bin/$(musl_triple "$target")-gcc" <<EOF
#!/bin/sh
# $(gnu_triple "$target")-gcc, compiling and linking against musl.
exec $(gnu_triple "$target")-gcc -specs=$musl/musl-gcc.specs -L$musl/unwind "\$@"
EOF
  chmod 755 "$TOOLCHAIN/bin/$(musl_triple "$target")-gcc"
done
say "$("$RUSTC_WRAPPER" --version), $(du -sh "$TOOLCHAIN" | cut -f1) unpacked from:"
sed 's/^/  /' "$TOOLCHAIN/PACKAGES"

# ---------------------------------------------------------------- 3. build
phase build
# What a static binary must not have: a program interpreter (the dynamic
# loader), or any library to load.
is_static() { ! readelf -W -l "$1" | grep -q 'INTERP' && ! readelf -W -d "$1" 2>/dev/null | grep -q '(NEEDED)'; }
# The bytes that load (code and data); the file adds alignment padding.
loaded_bytes() { size -A "$1" | awk '$1 ~ /^\./ && $1 != ".bss" && $1 != ".tbss" { s += $2 } END { print s }'; }
declare -A SIZE
for target in "${TARGETS[@]}"; do
  env_name=$(echo "$target" | tr 'a-z-' 'A-Z_')
  cc=$TOOLCHAIN/bin/$(musl_triple "$target")-gcc
  target_started=$(now_ms)
  # RUSTC_BOOTSTRAP: -Zbuild-std is unstable, and only Debian's rustc of the
  # one version of these sources builds them.
  run env RUSTC="$RUSTC_WRAPPER" RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$ARM_TARGET_DIR" \
    "CARGO_TARGET_${env_name}_LINKER=$cc" "CC_${target//-/_}=$cc" "AR_${target//-/_}=$(gnu_triple "$target")-ar" \
    "CARGO_TARGET_${env_name}_RUSTFLAGS=-C target-feature=+crt-static -C link-self-contained=no" \
    cargo build --locked --release -Zbuild-std=std,panic_abort --target "$target"
  binary=$(binary_of "$target")
  say "$target built in $((($(now_ms) - target_started) / 1000)) s: $(file -b "$binary" | cut -d, -f1-2)"
  readelf -h "$binary" | grep -q "Machine:.*$(elf_machine "$target")" || fail "$binary is not an $(elf_machine "$target") binary"
  is_static "$binary" || fail "$binary is not static: $(readelf -W -d "$binary" | grep NEEDED | tr -s ' ')"
  if readelf -W -S "$binary" | grep -q '\.symtab'; then
    fail "$binary still has a symbol table (the release profile strips)"
  fi
  SIZE[$target]=$(stat -c %s "$binary")
  note "$target: static, stripped size ${SIZE[$target]} bytes ($((SIZE[$target] / 1024)) KiB; $(loaded_bytes "$binary") bytes of code and data), budget ${BUDGET[$target]} bytes"
  [ "${SIZE[$target]}" -le "${BUDGET[$target]}" ] ||
    fail "the $target binary is ${SIZE[$target]} bytes, over its budget of ${BUDGET[$target]} (README.md, \"Raspberry Pi\")"
done
# The x86_64 release binary, with rustup's Rust: for the amd64 package (the
# one that can be installed here) and for comparison.
run cargo build --locked --release
SIZE[x86_64]=$(stat -c %s target/release/intercomd)
min_glibc() {
  # The newest GLIBC_ symbol version the binary asks for is the oldest glibc
  # it runs on. readelf reads any architecture's ELF.
  readelf -W -V "$1" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1
}
needed_libs() { readelf -W -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' '; }
AMD64_GLIBC=$(min_glibc target/release/intercomd)
note "x86_64 (rustup $(rustc --version | cut -d' ' -f2), dynamic): stripped size ${SIZE[x86_64]} bytes ($((SIZE[x86_64] / 1024)) KiB), needs glibc >= $AMD64_GLIBC"

# ---------------------------------------------------------------- 4. unit
phase unit
UNIT=systemd/intercomd.service
# verify checks that ExecStart's program exists; until the package is
# installed (step 7 verifies the installed unit as it is) point it at the
# binary just built. Every other line is checked as written.
unit_copy=$(mktemp -d)/intercomd.service
sed "s|^ExecStart=/usr/bin/intercomd |ExecStart=$TOP/target/release/intercomd |" "$UNIT" >"$unit_copy"
verify_unit() {
  local output
  echo "+ systemd-analyze verify $1"
  if ! output=$(systemd-analyze verify "$1" 2>&1) || [ -n "$output" ]; then
    fail "systemd-analyze verify $1 is not clean: $output"
  else
    say "systemd-analyze verify: clean"
  fi
}
verify_unit "$unit_copy"
rm -rf "$(dirname "$unit_copy")"
# --offline=yes (systemd 250 and newer; Debian 12 has 252) reads the unit
# file instead of asking a running systemd; --threshold fails above 10 x the
# score.
echo "+ systemd-analyze security --offline=yes --threshold=20 $UNIT"
security_rc=0
security=$(systemd-analyze security --offline=yes --threshold=20 "$UNIT" 2>&1) || security_rc=$?
echo "$security" | grep -v '^✓' || true
score=$(echo "$security" | sed -n 's/.*Overall exposure level for intercomd.service: \([0-9.]*\).*/\1/p')
if [ -z "$score" ] || [ "$security_rc" != 0 ] || ! awk -v s="$score" -v l="$SECURITY_LIMIT" 'BEGIN { exit !(s <= l) }'; then
  fail "systemd-analyze security rates the unit ${score:-(no score)} (exit $security_rc), the limit is $SECURITY_LIMIT"
fi
note "systemd-analyze security --offline=yes: exposure ${score:-?} (limit $SECURITY_LIMIT); verify: ${#FAILURES[@]} failure(s) so far"
# With the door opener's GPIO drop-in (systemd/door-gpio.conf, shipped in the
# package's examples): the unit with it must still verify and rate <= the limit.
# --offline reads one file, so the drop-in's lines go into a copy of the unit.
gpio_dir=$(mktemp -d)
awk -v dropin=systemd/door-gpio.conf '
  /^\[Install\]/ { while ((getline line < dropin) > 0) if (line !~ /^\[Service\]/) print line; print "" }
  { print }' "$UNIT" | sed "s|^ExecStart=/usr/bin/intercomd |ExecStart=$TOP/target/release/intercomd |" >"$gpio_dir/intercomd.service"
verify_unit "$gpio_dir/intercomd.service"
gpio_rc=0
gpio_security=$(systemd-analyze security --offline=yes --threshold=20 "$gpio_dir/intercomd.service" 2>&1) || gpio_rc=$?
gpio_score=$(echo "$gpio_security" | sed -n 's/.*Overall exposure level for intercomd.service: \([0-9.]*\).*/\1/p')
if [ -z "$gpio_score" ] || [ "$gpio_rc" != 0 ] || ! echo "$gpio_security" | grep -q 'char-gpiochip:rw' ||
   ! awk -v s="$gpio_score" -v l="$SECURITY_LIMIT" 'BEGIN { exit !(s <= l) }'; then
  fail "with door-gpio.conf systemd-analyze security rates the unit ${gpio_score:-(no score)} (exit $gpio_rc), the limit is $SECURITY_LIMIT"
fi
rm -rf "$gpio_dir"
note "with the door opener's GPIO drop-in: exposure ${gpio_score:-?} (limit $SECURITY_LIMIT)"

# ---------------------------------------------------------------- 5. qemu
phase qemu
for target in "${TARGETS[@]}"; do
  for cpu in $(cpus_for "$target"); do
    # The integration tests start INTERCOMD_BIN with the daemon's flags;
    # qemu-user runs the ARM binary in this very process (exec), so signals
    # and /proc reach the daemon as they would on a Pi.
    cat >"$(wrapper_of "$target" "$cpu")" <<EOF
#!/bin/sh
exec $(qemu_for "$target") -cpu $cpu $(binary_of "$target") "\$@"
EOF
    chmod 755 "$(wrapper_of "$target" "$cpu")"
    if smoke=$(bash tests/qemu-smoke.sh "$(qemu_for "$target")" "$cpu" "$(binary_of "$target")" 2>&1); then
      note "$target, $smoke"
    else
      echo "$smoke"
      fail "$target under $(qemu_for "$target") -cpu $cpu: $(echo "$smoke" | grep FAILED | head -n 1)"
    fi
  done
done

# ---------------------------------------------------------------- 6. tests
phase tests
# The test programs are x86, built by the usual toolchain; only the daemon
# they start is ARM, under each CPU model of the Pis it is for. Every test
# must pass on its first try: none is retried, so a test that depends on how
# fast the daemon is fails here, and is fixed in the test (await the event,
# or keep a margin of at least a second).
run cargo test --locked --no-run "${SUITES[@]}"
TESTED=("${TARGETS[@]}")
[ -z "${ARM_SKIP_TESTS:-}" ] || { note "integration tests under qemu: skipped (ARM_SKIP_TESTS)"; TESTED=(); }
for target in "${TESTED[@]}"; do
  for cpu in $(cpus_for "$target"); do
    log=$LOG_DIR/$target-$cpu-tests.log
    mkdir -p "$LOG_DIR"
    target_started=$(now_ms)
    echo "+ INTERCOMD_BIN=$(wrapper_of "$target" "$cpu") cargo test --locked --no-fail-fast ${SUITES[*]}"
    status=0
    INTERCOMD_BIN=$(wrapper_of "$target" "$cpu") cargo test --locked --no-fail-fast "${SUITES[@]}" 2>&1 |
      tee "$log" || status=$?
    counts=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
      END { printf "%d passed, %d failed", p, f }' "$log")
    failed_tests=$(sed -n 's/^test \(.*\) \.\.\. FAILED$/\1/p' "$log" | sort -u | tr '\n' ' ')
    note "$target under $(qemu_for "$target") -cpu $cpu: integration tests $counts in $((($(now_ms) - target_started) / 1000)) s${failed_tests:+ (failed: $failed_tests)}"
    [ "$status" = 0 ] || fail "integration tests against the $target binary on $cpu (log: ${log#$TOP/})"
  done
done

# ---------------------------------------------------------------- 7. userland
phase userland
# An old userland: Debian 11's armhf root (glibc 2.31, what Raspberry Pi OS
# Bullseye is built on, where binaries linked against Debian 12's glibc
# refuse to start). debootstrap's first stage only unpacks packages, so no
# emulation is needed to make it; it is made once and reused.
if [ ! -f "$BULLSEYE/.complete" ]; then
  rm -rf "$BULLSEYE"
  run debootstrap --foreign --variant=minbase --arch=armhf bullseye "$BULLSEYE" http://deb.debian.org/debian
  touch "$BULLSEYE/.complete"
fi
say "the old userland: $(ls "$BULLSEYE"/usr/lib/arm-linux-gnueabihf/libc-*.so 2>/dev/null | xargs -n 1 basename) in ${BULLSEYE#$TOP/}"
# qemu-user-static's emulators run inside a chroot (they need no library);
# unpacked from the package, so nothing registers binfmt handlers here.
QEMU_STATIC=$ARM_TARGET_DIR/qemu-user-static
if [ ! -x "$QEMU_STATIC/usr/bin/qemu-arm-static" ]; then
  downloads=$(mktemp -d)
  chmod 755 "$downloads"
  chown _apt "$downloads" 2>/dev/null || true
  (cd "$downloads" && run apt-get download -q qemu-user-static)
  rm -rf "$QEMU_STATIC"
  dpkg -x "$downloads"/qemu-user-static_*.deb "$QEMU_STATIC"
  rm -rf "$downloads"
fi
# A broker on loopback, under a name only the old root's /etc/hosts knows.
grep -q ' broker.intercom.test$' "$BULLSEYE/etc/hosts" 2>/dev/null ||
  echo '127.0.0.1 broker.intercom.test' >>"$BULLSEYE/etc/hosts"
broker_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$broker_port" >"$LOG_DIR/mosquitto.conf"
mosquitto -c "$LOG_DIR/mosquitto.conf" >"$LOG_DIR/mosquitto.log" 2>&1 &
BROKER_PID=$!
for target in "${TARGETS[@]}"; do
  cpu=$(cpus_for "$target" | cut -d' ' -f1)
  emulator=$(qemu_for "$target")-static
  cp "$QEMU_STATIC/usr/bin/$emulator" "$BULLSEYE/$emulator"
  cp "$(binary_of "$target")" "$BULLSEYE/intercomd-$target"
  state=/var/lib/intercomd-$target
  rm -rf "${BULLSEYE:?}$state"
  log=$LOG_DIR/$target-bullseye.log
  # qemu logs every system call of the daemon (-d strace) to a file in the
  # root (-D is opened inside the chroot).
  trace=$BULLSEYE/strace-$target.log
  rm -f "$trace"
  started=$(now_ms)
  chroot "$BULLSEYE" "/$emulator" -cpu "$cpu" -d strace -D "/strace-$target.log" "/intercomd-$target" \
    --listen 127.0.0.1:0 --https-listen 127.0.0.1:0 --state-dir "$state" \
    --mqtt "mqtt://broker.intercom.test:$broker_port" --mqtt-prefix "intercomd-$cpu" >"$log" 2>&1 &
  pid=$!
  # Its own prefix per binary: the status that the one before left retained
  # ("offline", its last word) is not this one's.
  online=$(timeout 60 mosquitto_sub -h 127.0.0.1 -p "$broker_port" -t "intercomd-$cpu/status" -C 1 -W 60 2>&1 || true)
  https=$(sed -n 's/.*listening on https:\/\/\([0-9.]*:[0-9]*\).*/\1/p' "$log" | head -n 1)
  secure=$(curl -sS -k --max-time 10 "https://$https/healthz" 2>&1 || true)
  kill -TERM "$pid" 2>/dev/null || true
  status=0
  wait "$pid" || status=$?
  problems=()
  [ "$online" = online ] || problems+=("the broker got '$online' on intercomd-$cpu/status, not 'online'")
  [ "$secure" = ok ] || problems+=("https://$https/healthz answered '$secure'")
  [ "$status" = 0 ] || problems+=("exited with $status after SIGTERM")
  # What the daemon opened: its own files, /etc/hosts for the broker's name,
  # and never a shared library, the dynamic loader or an NSS configuration.
  opened=$(grep -a -o 'open[at]*([^)]*"[^"]*"' "$trace" | grep -a -o '"[^"]*"' | tr -d '"' | sort -u || true)
  echo "$opened" | grep -qx /etc/hosts || problems+=("/etc/hosts was never opened")
  forbidden=$(echo "$opened" | grep -E '\.so(\.|$)|nsswitch|ld\.so|libnss' || true)
  [ -z "$forbidden" ] || problems+=("it opened $(echo "$forbidden" | tr '\n' ' ')")
  if [ ${#problems[@]} -eq 0 ]; then
    note "$target in Debian 11's armhf root (chroot, $emulator -cpu $cpu): published 'online' to mqtt://broker.intercom.test (from its /etc/hosts), https 'ok', exit 0, $(($(now_ms) - started)) ms; opened: $(echo "$opened" | grep -v "^$state" | tr '\n' ' ')"
  else
    fail "$target in Debian 11's root: ${problems[*]} (logs: ${log#$TOP/}, ${trace#$TOP/})"
    tail -n 20 "$log"
  fi
done
kill "$BROKER_PID" 2>/dev/null || true
wait "$BROKER_PID" 2>/dev/null || true
BROKER_PID=

# ---------------------------------------------------------------- 8. packages
phase packages
if ! cargo deb --version >/dev/null 2>&1; then
  run cargo install cargo-deb --locked
fi
say "$(cargo deb --version)"
rm -rf "$DEB_DIR"
mkdir -p "$DEB_DIR"
# --no-build: package the binaries built above, not a rebuild by another
# compiler; --no-strip: the release profile has stripped them already.
# --variant pi: no Depends, the binaries being static.
for target in "${TARGETS[@]}"; do
  run env CARGO_TARGET_DIR="$ARM_TARGET_DIR" cargo deb --no-build --no-strip --variant pi --target "$target" --output "$DEB_DIR/"
done
run cargo deb --no-build --no-strip --output "$DEB_DIR/"
version=$(dpkg-deb -f "$(ls "$DEB_DIR"/*_amd64.deb)" Version)
# Two touches cargo-deb cannot make, on the Pi packages, contents unchanged:
# it writes the empty Depends out (Debian wants no field), and it names the
# ARMv5TE soft-float target's architecture armel, which Raspberry Pi OS's dpkg
# (armhf) refuses to install; the binary is static, so the float convention
# of the Pi's libraries does not matter, and the package is labelled armhf.
finish_pi_package() {
  local from=$1 to=$2 dir
  dir=$(mktemp -d)
  dpkg-deb -R "$DEB_DIR/intercomd_${version}_$from.deb" "$dir/pkg"
  sed -i -e "s/^Architecture: $from\$/Architecture: $to/" -e '/^Depends: *$/d' "$dir/pkg/DEBIAN/control"
  rm "$DEB_DIR/intercomd_${version}_$from.deb"
  run dpkg-deb --root-owner-group -Zxz -b "$dir/pkg" "$DEB_DIR/intercomd_${version}_$to.deb" >/dev/null
  rm -rf "$dir"
}
finish_pi_package arm64 arm64
finish_pi_package armel armhf

# check_deb DEB ARCH BINARY MIN_GLIBC: what the package says and holds; an
# empty MIN_GLIBC for a static binary, which must depend on nothing.
check_deb() {
  local deb=$1 arch=$2 binary=$3 glibc=$4 dir problems=() depends declared
  dir=$(mktemp -d)
  echo "--- $(basename "$deb") ($(stat -c %s "$deb") bytes)"
  dpkg-deb -I "$deb" | sed -n '/Package:/,$p'
  dpkg-deb -c "$deb" | awk '{ print $1, $3, $6, $7, $8 }'
  [ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || problems+=("Architecture is not $arch")
  depends=$(dpkg-deb -f "$deb" Depends)
  if [ -z "$glibc" ]; then
    [ -z "$depends" ] || problems+=("a static binary's package has Depends: $depends")
  else
    declared=$(echo "$depends" | sed -n 's/.*libc6 (>= \([0-9.]*\)).*/\1/p')
    if [ -z "$declared" ] || ! dpkg --compare-versions "$declared" ge "$glibc"; then
      problems+=("Depends '$depends' does not ask for libc6 >= $glibc")
    fi
  fi
  local lib
  for lib in $(needed_libs "$binary"); do
    case $lib in
      libc.so.6 | libm.so.6 | libpthread.so.0 | libdl.so.2 | librt.so.1 | ld-linux*) ;;
      libgcc_s.so.1) case $depends in *libgcc-s1*) ;; *) problems+=("Depends lacks libgcc-s1") ;; esac ;;
      *) problems+=("the binary needs $lib, which Depends does not cover") ;;
    esac
  done
  dpkg-deb -x "$deb" "$dir/data"
  dpkg-deb -e "$deb" "$dir/control"
  cmp -s "$dir/data/usr/bin/intercomd" "$binary" || problems+=("usr/bin/intercomd is not $binary")
  cmp -s "$dir/data/etc/default/intercomd" systemd/intercomd.default || problems+=("etc/default/intercomd differs")
  cmp -s "$dir/data/lib/systemd/system/intercomd.service" "$UNIT" ||
    cmp -s "$dir/data/usr/lib/systemd/system/intercomd.service" "$UNIT" || problems+=("the unit is missing or differs")
  [ -f "$dir/data/usr/share/doc/intercomd/README.md" ] || problems+=("README.md is missing")
  [ -f "$dir/data/usr/share/doc/intercomd/copyright" ] || problems+=("copyright is missing")
  [ -f "$dir/data/usr/share/doc/intercomd/changelog.Debian.gz" ] || problems+=("changelog.Debian.gz is missing")
  grep -qx /etc/default/intercomd "$dir/control/conffiles" 2>/dev/null || problems+=("/etc/default/intercomd is not a conffile")
  grep -q 'deb-systemd-helper enable' "$dir/control/postinst" || problems+=("postinst does not enable the unit")
  grep -q 'deb-systemd-invoke.*start\|_dh_action=start' "$dir/control/postinst" || problems+=("postinst does not start the unit")
  grep -q 'deb-systemd-invoke stop' "$dir/control/prerm" || problems+=("prerm does not stop the unit")
  grep -q 'deb-systemd-helper purge' "$dir/control/postrm" || problems+=("postrm does not forget the unit on purge")
  grep -q '/var/lib/private/intercomd' "$dir/control/postrm" || problems+=("postrm does not drop the state on purge")
  ! grep -q '#DEBHELPER#' "$dir"/control/p* || problems+=("a maintainer script still has the #DEBHELPER# marker")
  local script
  for script in preinst postinst prerm postrm; do
    [ ! -f "$dir/control/$script" ] || sh -n "$dir/control/$script" || problems+=("$script is not valid sh")
  done
  # The same scripts in every package (only the binary and Architecture differ).
  for script in postinst prerm postrm conffiles; do
    if [ -n "${REFERENCE_CONTROL:-}" ] && ! cmp -s "$dir/control/$script" "$REFERENCE_CONTROL/$script"; then
      problems+=("$script differs from the first package's")
    fi
  done
  if [ -z "${REFERENCE_CONTROL:-}" ]; then REFERENCE_CONTROL=$dir/control; fi
  if [ ${#problems[@]} -eq 0 ]; then
    note "$(basename "$deb"): Architecture $arch, Depends: $depends; contents, conffiles and maintainer scripts checked"
  else
    fail "$(basename "$deb"): ${problems[*]}"
  fi
  echo "+ lintian $(basename "$deb")"
  local lintian
  lintian=$(lintian --tag-display-limit 0 "$deb" 2>&1 || true)
  echo "${lintian:-(no tags)}"
  note "$(basename "$deb"): lintian: $(echo "$lintian" | grep -c '^E:' || true) errors, $(echo "$lintian" | grep -c '^W:' || true) warnings"
}
REFERENCE_CONTROL=
for target in "${TARGETS[@]}"; do
  check_deb "$DEB_DIR/intercomd_${version}_$(deb_arch "$target").deb" "$(deb_arch "$target")" "$(binary_of "$target")" ""
done
AMD64_DEB=$DEB_DIR/intercomd_${version}_amd64.deb
check_deb "$AMD64_DEB" amd64 target/release/intercomd "$AMD64_GLIBC"

# Install, remove and purge the amd64 package here: the same metadata and
# scripts as the ARM ones (checked above). Where systemd is not PID 1 the
# scripts enable the unit (a symlink) but do not start it.
echo "--- install check"
if installed intercomd; then
  say "intercomd is installed on this machine already: not touching it (no install check)"
  note "install check: skipped, intercomd was installed before"
else
  need_root "the install check"
  problems=()
  state_note=
  if [ -d /run/systemd/system ]; then state_note="systemd is running: the service will really start"; else
    state_note="systemd is not PID 1 here: the scripts must enable but not start"
  fi
  say "$state_note"
  INSTALLED_FOR_TEST=1
  install_log=$LOG_DIR/install-check.log
  : >"$install_log"
  # apt-get STEP ARGS: run it, keep its output, and count any complaint of a
  # maintainer script (they print nothing when all is well).
  apt_step() {
    echo "+ apt-get $*"
    local output status=0
    output=$(apt-get "$@" 2>&1) || status=$?
    echo "$output" | grep -v '^(Reading database' | tail -n 4
    echo "$output" >>"$install_log"
    [ "$status" = 0 ] || problems+=("apt-get $1 exited $status")
    if echo "$output" | grep -q 'dpkg/info/intercomd'; then
      problems+=("a maintainer script complained during $1: $(echo "$output" | grep 'dpkg/info/intercomd' | head -n 3)")
    fi
  }
  apt_step install -y "$AMD64_DEB"
  [ -x /usr/bin/intercomd ] || problems+=("/usr/bin/intercomd missing after install")
  /usr/bin/intercomd --help >/dev/null || problems+=("intercomd --help failed")
  [ -f /etc/default/intercomd ] || problems+=("/etc/default/intercomd missing after install")
  wants=/etc/systemd/system/multi-user.target.wants/intercomd.service
  [ -L "$wants" ] || problems+=("not enabled: no $wants")
  unit_path=$(dpkg -L intercomd | grep '/systemd/system/intercomd.service$' | head -n 1)
  verify_unit "$unit_path"
  if [ -d /run/systemd/system ]; then
    systemctl is-active --quiet intercomd || problems+=("the service is not active")
  fi
  # What systemd would have made for the service, to see purge remove it.
  mkdir -p /var/lib/private/intercomd && ln -sfn private/intercomd /var/lib/intercomd
  echo "# a local edit" >>/etc/default/intercomd
  apt_step remove -y intercomd
  [ ! -e /usr/bin/intercomd ] || problems+=("/usr/bin/intercomd left after remove")
  grep -q '# a local edit' /etc/default/intercomd 2>/dev/null || problems+=("the edited conffile did not survive remove")
  [ -d /var/lib/private/intercomd ] || problems+=("the state directory did not survive remove")
  apt_step purge -y intercomd
  INSTALLED_FOR_TEST=
  [ ! -e /etc/default/intercomd ] || problems+=("/etc/default/intercomd left after purge")
  [ ! -e "$wants" ] && [ ! -L "$wants" ] || problems+=("$wants left after purge")
  [ ! -e /var/lib/private/intercomd ] && [ ! -L /var/lib/intercomd ] || problems+=("state left after purge")
  [ -z "$(find /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked -name 'intercomd*' 2>/dev/null)" ] ||
    problems+=("deb-systemd-helper state left after purge")
  installed intercomd && problems+=("still installed after purge")
  if [ ${#problems[@]} -eq 0 ]; then
    note "install check (amd64, apt-get install/remove/purge): enabled on install, conffile kept on remove, everything gone on purge ($state_note)"
  else
    fail "install check: ${problems[*]}"
  fi
fi

# ---------------------------------------------------------------- 9. systemd
phase systemd
# The amd64 package again, now under a real systemd 252 (Debian 12 booted in
# systemd-nspawn, in its own network namespace): started on install, the
# hardening in force, LAN served and internet refused, flags, watchdog,
# stop, remove and purge.
container_log=$LOG_DIR/container.log
if bash systemd/check-in-container.sh "$AMD64_DEB" 2>&1 | tee "$container_log"; then
  note "under systemd in a container (amd64 package): $(tail -n 1 "$container_log" | sed 's/^container: //')"
else
  fail "the package under systemd in a container: $(tail -n 1 "$container_log") (log: ${container_log#$TOP/})"
fi

# ---------------------------------------------------------------- summary
note "packages: $(cd "$DEB_DIR" && ls ./*.deb | tr '\n' ' ')in ${DEB_DIR#$TOP/}/"
report_summary
