#!/usr/bin/env bash
# intercomd for the Raspberry Pi: cross-build, test under emulation, package.
#   sudo bash tests/arm.sh
#
# On a bare Debian 12 x86_64 machine with rustup's Rust it installs what it
# lacks, then:
#   1. tools:     cross linkers, ARM C libraries, qemu-user (apt);
#   2. toolchain: Debian's Rust with its ARM standard libraries, unpacked (not
#                 installed) under target/arm-toolchain/ and reused next time;
#   3. build:     the release daemon for aarch64 and armv7 with that rustc
#                 (through a RUSTC wrapper; rustup's cargo drives it), into
#                 target/arm/TRIPLE/release/intercomd; prints each stripped
#                 size (aarch64 must stay within 2 MiB: 1 MiB for the daemon,
#                 about 0.9 MiB for HTTPS) and its minimum glibc;
#   4. unit:      systemd-analyze verify, and security (must rate <= 2.0);
#   5. qemu:      starts each binary under qemu-user on loopback and asks it;
#   6. tests:     the loopback integration tests against each ARM binary
#                 (INTERCOMD_BIN=a qemu wrapper; the tests themselves are x86);
#   7. packages:  a .deb per ARM target with cargo-deb from those binaries (and
#                 an amd64 one built the same way), checks their control data,
#                 contents and scripts, then installs, removes and purges the
#                 amd64 one here (where systemd is not PID 1);
#   8. systemd:   the amd64 package under a real systemd in a container
#                 (systemd/check-in-container.sh).
# Everything it makes is under target/: the packages in target/arm/debian/.
# Needs root for apt-get and dpkg. The ARMv6 target (Pi 1, Zero) has no Debian
# standard library, so only `cross` builds it (README.md, "Raspberry Pi").
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD
export DEBIAN_FRONTEND=noninteractive

# Debian's rustc-web with ARM standard libraries that match it exactly
# (bookworm; Rust 1.85 is the tree's rust-version). Another version with the
# same three packages in the archive can be named here.
DEBIAN_RUST=${DEBIAN_RUST:-1.85.0+dfsg3-1~deb12u3}
TOOLCHAIN=$TOP/target/arm-toolchain/rust-$DEBIAN_RUST
ARM_TARGET_DIR=$TOP/target/arm
DEB_DIR=$ARM_TARGET_DIR/debian
LOG_DIR=$ARM_TARGET_DIR/logs
TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
SUITES=(--test http --test websocket --test rooms --test reliability --test hostile --test daemon --test https --test peerjs --test events --test mqtt --test webhooks --test snapshots)
SIZE_LIMIT_AARCH64=$((2 * 1024 * 1024))
SECURITY_LIMIT=2.0

# Per target: Debian architecture, C cross compiler (the linker), qemu, sysroot.
deb_arch() { case $1 in aarch64-*) echo arm64 ;; armv7-*) echo armhf ;; x86_64-*) echo amd64 ;; esac; }
gnu_triple() { case $1 in aarch64-*) echo aarch64-linux-gnu ;; armv7-*) echo arm-linux-gnueabihf ;; esac; }
qemu_for() { case $1 in aarch64-*) echo qemu-aarch64 ;; armv7-*) echo qemu-arm ;; esac; }
elf_machine() { case $1 in aarch64-*) echo AArch64 ;; armv7-*) echo ARM ;; x86_64-*) echo X86-64 ;; esac; }
binary_of() { echo "$ARM_TARGET_DIR/$1/release/intercomd"; }
wrapper_of() { echo "$ARM_TARGET_DIR/$1/intercomd-qemu"; }

# ---------------------------------------------------------------- reporting
now_ms() { date +%s%3N; }
PHASE=
PHASE_START=
TIMINGS=()
SUMMARY=()
FAILURES=()
phase() {
  end_phase
  PHASE=$1
  PHASE_START=$(now_ms)
  echo
  echo "=== arm.sh: $1"
}
end_phase() {
  if [ -n "$PHASE" ]; then
    local ms=$(($(now_ms) - PHASE_START))
    TIMINGS+=("$(printf '%-10s %6d.%01d s' "$PHASE" $((ms / 1000)) $((ms % 1000 / 100)))")
    PHASE=
  fi
}
say() { echo "arm.sh: $*"; }
note() { SUMMARY+=("$*"); say "$*"; }
fail() { FAILURES+=("$*"); echo "arm.sh: FAILED: $*" >&2; }
die() { echo "arm.sh: $*" >&2; exit 1; }
run() {
  echo "+ $*"
  "$@"
}

# Architectures this run added to dpkg, removed again on exit: with them left
# in place every later `apt-get update` on this machine fetches ARM indexes
# (and exits 100 whenever one of them fails, which stops scripts under set -e).
ADDED_ARCHS=()
# Set while the amd64 package is installed by the install check below.
INSTALLED_FOR_TEST=
cleanup() {
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
APT_PACKAGES=(gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross
  qemu-user binutils curl file systemd lintian build-essential systemd-container debootstrap)
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
# Downloading Debian's Rust needs apt to know the ARM architectures: add them
# before the one apt-get update this run makes.
if [ ! -f "$TOOLCHAIN/.complete" ]; then
  need_root "downloading Debian's Rust"
  for arch in arm64 armhf; do
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
  say "reusing Debian's Rust $DEBIAN_RUST in ${TOOLCHAIN#$TOP/}"
else
  # rustc-web needs the host standard library and its runtime library, which
  # needs LLVM: take their names from the archive, so that DEBIAN_RUST alone
  # picks a version.
  depends_of() { apt-cache show "$1" 2>/dev/null | sed -n 's/^Depends: //p' | head -n 1 | tr ',' '\n'; }
  if ! apt-cache show "rustc-web=$DEBIAN_RUST" >/dev/null 2>&1 ||
    ! apt-cache show "libstd-rust-web-dev:arm64=$DEBIAN_RUST" >/dev/null 2>&1 ||
    ! apt-cache show "libstd-rust-web-dev:armhf=$DEBIAN_RUST" >/dev/null 2>&1; then
    echo "arm.sh: Debian's archive has no rustc-web $DEBIAN_RUST with ARM standard libraries." >&2
    echo "arm.sh: versions of rustc-web, libstd-rust-web-dev:arm64, libstd-rust-web-dev:armhf:" >&2
    apt-cache madison rustc-web libstd-rust-web-dev:arm64 libstd-rust-web-dev:armhf >&2 || true
    die "set DEBIAN_RUST to a version all three have"
  fi
  runtime=$(depends_of "libstd-rust-web-dev:arm64=$DEBIAN_RUST" | sed -n 's/^ *\(libstd-rust-web-[0-9.]*\) .*/\1/p' | head -n 1)
  llvm=$(depends_of "$runtime=$DEBIAN_RUST" | sed -n 's/^ *\(libllvm[0-9]*\).*/\1/p' | head -n 1)
  [ -n "$runtime" ] && [ -n "$llvm" ] || die "cannot tell the runtime and LLVM packages of rustc-web $DEBIAN_RUST"
  downloads=$(mktemp -d)
  chmod 755 "$downloads" # apt's download user must be able to write there
  chown _apt "$downloads" 2>/dev/null || true
  (cd "$downloads" && run apt-get download -q "rustc-web=$DEBIAN_RUST" "$runtime=$DEBIAN_RUST" \
    "libstd-rust-web-dev=$DEBIAN_RUST" "libstd-rust-web-dev:arm64=$DEBIAN_RUST" \
    "libstd-rust-web-dev:armhf=$DEBIAN_RUST" "$llvm")
  rm -rf "$TOOLCHAIN.partial"
  mkdir -p "$TOOLCHAIN.partial"
  for deb in "$downloads"/*.deb; do
    say "unpacking $(basename "$deb")"
    dpkg -x "$deb" "$TOOLCHAIN.partial"
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
say "$("$RUSTC_WRAPPER" --version) ($(du -sh "$TOOLCHAIN" | cut -f1) unpacked)"
for target in "${TARGETS[@]}"; do
  [ -d "$TOOLCHAIN/usr/lib/rustlib/$target/lib" ] || die "no standard library for $target in $TOOLCHAIN"
done

# ---------------------------------------------------------------- 3. build
phase build
min_glibc() {
  # The newest GLIBC_ symbol version the binary asks for is the oldest glibc
  # it runs on. readelf reads any architecture's ELF.
  readelf -W -V "$1" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1
}
needed_libs() { readelf -W -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' '; }
declare -A SIZE GLIBC
for target in "${TARGETS[@]}"; do
  linker_var=CARGO_TARGET_$(echo "$target" | tr 'a-z-' 'A-Z_')_LINKER
  target_started=$(now_ms)
  run env RUSTC="$RUSTC_WRAPPER" "$linker_var=$(gnu_triple "$target")-gcc" CARGO_TARGET_DIR="$ARM_TARGET_DIR" \
    cargo build --locked --release --target "$target"
  binary=$(binary_of "$target")
  say "$target built in $((($(now_ms) - target_started) / 1000)) s: $(file -b "$binary" | cut -d, -f1-2)"
  readelf -h "$binary" | grep -q "Machine:.*$(elf_machine "$target")" || fail "$binary is not an $(elf_machine "$target") binary"
  if readelf -W -S "$binary" | grep -q '\.symtab'; then
    fail "$binary still has a symbol table (the release profile strips)"
  fi
  SIZE[$target]=$(stat -c %s "$binary")
  GLIBC[$target]=$(min_glibc "$binary")
  note "$target: stripped size ${SIZE[$target]} bytes ($((SIZE[$target] / 1024)) KiB), needs glibc >= ${GLIBC[$target]}, libraries: $(needed_libs "$binary")"
  say "  the symbols that need GLIBC_${GLIBC[$target]}: $(readelf -W --dyn-syms "$binary" | grep -o "[A-Za-z0-9_]*@GLIBC_${GLIBC[$target]}" | sort -u | tr '\n' ' ')"
done
if [ "${SIZE[aarch64-unknown-linux-gnu]}" -gt "$SIZE_LIMIT_AARCH64" ]; then
  fail "the aarch64 binary is ${SIZE[aarch64-unknown-linux-gnu]} bytes, over the 2 MiB budget"
fi
# The x86_64 release binary, with rustup's Rust: for the amd64 package (the
# one that can be installed here) and for comparison.
run cargo build --locked --release
SIZE[x86_64]=$(stat -c %s target/release/intercomd)
GLIBC[x86_64]=$(min_glibc target/release/intercomd)
note "x86_64 (rustup $(rustc --version | cut -d' ' -f2)): stripped size ${SIZE[x86_64]} bytes ($((SIZE[x86_64] / 1024)) KiB), needs glibc >= ${GLIBC[x86_64]}"

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

# ---------------------------------------------------------------- 5. qemu
phase qemu
for target in "${TARGETS[@]}"; do
  wrapper=$(wrapper_of "$target")
  # The integration tests start INTERCOMD_BIN with the daemon's flags; qemu-user
  # runs the ARM binary in this very process (exec), so signals and /proc
  # reach the daemon as they would on a Pi.
  cat >"$wrapper" <<EOF
#!/bin/sh
exec $(qemu_for "$target") -L /usr/$(gnu_triple "$target") $(binary_of "$target") "\$@"
EOF
  chmod 755 "$wrapper"
  log=$LOG_DIR/$target-smoke.log
  mkdir -p "$LOG_DIR"
  started=$(now_ms)
  echo "+ $wrapper --listen 127.0.0.1:0"
  "$wrapper" --listen 127.0.0.1:0 >"$log" 2>&1 &
  pid=$!
  addr=
  for _ in $(seq 200); do
    addr=$(sed -n 's/.*listening on http:\/\/\([0-9.:]*\).*/\1/p' "$log" | head -n 1)
    [ -n "$addr" ] || ! kill -0 "$pid" 2>/dev/null || { sleep 0.05; continue; }
    break
  done
  if [ -z "$addr" ]; then
    kill "$pid" 2>/dev/null || true
    fail "$target under qemu did not listen within 10 s: $(cat "$log")"
    continue
  fi
  listening_ms=$(($(now_ms) - started))
  health=$(curl -fsS --max-time 5 "http://$addr/healthz" || true)
  ice=$(curl -fsS --max-time 5 "http://$addr/api/ice-servers" || true)
  page=$(curl -fsS --max-time 5 -o /dev/null -w '%{http_code} %{size_download}' "http://$addr/" || true)
  exe=$(readlink "/proc/$pid/exe" || true)
  [ "$health" = ok ] || fail "$target: /healthz answered '$health'"
  case $ice in *iceServers*) ;; *) fail "$target: /api/ice-servers answered '$ice'" ;; esac
  stop_started=$(now_ms)
  kill -TERM "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid"
    fail "$target under qemu did not exit within 5 s of SIGTERM"
  fi
  status=0
  wait "$pid" || status=$?
  stopped_ms=$(($(now_ms) - stop_started))
  [ "$status" = 0 ] || fail "$target under qemu exited with $status after SIGTERM"
  note "$target under $(basename "$exe"): listening on $addr after $listening_ms ms; /healthz '$health'; GET / $page bytes; exit $status $stopped_ms ms after SIGTERM"
done

# ---------------------------------------------------------------- 6. tests
phase tests
# The test programs are x86, built by the usual toolchain; only the daemon
# they start is ARM. Every test must pass on its first try: none is retried,
# so a test that depends on how fast the daemon is fails here, and is fixed
# in the test (await the event, or keep a margin of at least a second).
run cargo test --locked --no-run "${SUITES[@]}"
for target in "${TARGETS[@]}"; do
  log=$LOG_DIR/$target-tests.log
  target_started=$(now_ms)
  echo "+ INTERCOMD_BIN=$(wrapper_of "$target") cargo test --locked --no-fail-fast ${SUITES[*]}"
  status=0
  INTERCOMD_BIN=$(wrapper_of "$target") cargo test --locked --no-fail-fast "${SUITES[@]}" 2>&1 |
    tee "$log" || status=$?
  counts=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
    END { printf "%d passed, %d failed", p, f }' "$log")
  failed_tests=$(sed -n 's/^test \(.*\) \.\.\. FAILED$/\1/p' "$log" | sort -u | tr '\n' ' ')
  note "$target under qemu: integration tests $counts in $((($(now_ms) - target_started) / 1000)) s${failed_tests:+ (failed: $failed_tests)}"
  [ "$status" = 0 ] || fail "integration tests against the $target binary (log: ${log#$TOP/})"
done

# ---------------------------------------------------------------- 7. packages
phase packages
if ! cargo deb --version >/dev/null 2>&1; then
  run cargo install cargo-deb --locked
fi
say "$(cargo deb --version)"
rm -rf "$DEB_DIR"
mkdir -p "$DEB_DIR"
# --no-build: package the binaries built above, not a rebuild by another
# compiler; --no-strip: the release profile has stripped them already.
for target in "${TARGETS[@]}"; do
  run env CARGO_TARGET_DIR="$ARM_TARGET_DIR" cargo deb --no-build --no-strip --target "$target" --output "$DEB_DIR/"
done
run cargo deb --no-build --no-strip --output "$DEB_DIR/"

# check_deb DEB ARCH BINARY MIN_GLIBC: what the package says and holds.
check_deb() {
  local deb=$1 arch=$2 binary=$3 glibc=$4 dir problems=() depends declared
  dir=$(mktemp -d)
  echo "--- $(basename "$deb") ($(stat -c %s "$deb") bytes)"
  dpkg-deb -I "$deb" | sed -n '/Package:/,$p'
  dpkg-deb -c "$deb" | awk '{ print $1, $3, $6, $7, $8 }'
  [ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || problems+=("Architecture is not $arch")
  depends=$(dpkg-deb -f "$deb" Depends)
  declared=$(echo "$depends" | sed -n 's/.*libc6 (>= \([0-9.]*\)).*/\1/p')
  if [ -z "$declared" ] || ! dpkg --compare-versions "$declared" ge "$glibc"; then
    problems+=("Depends '$depends' does not ask for libc6 >= $glibc")
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
version=$(dpkg-deb -f "$(ls "$DEB_DIR"/*_amd64.deb)" Version)
REFERENCE_CONTROL=
for target in "${TARGETS[@]}"; do
  check_deb "$DEB_DIR/intercomd_${version}_$(deb_arch "$target").deb" "$(deb_arch "$target")" "$(binary_of "$target")" "${GLIBC[$target]}"
done
AMD64_DEB=$DEB_DIR/intercomd_${version}_amd64.deb
check_deb "$AMD64_DEB" amd64 target/release/intercomd "${GLIBC[x86_64]}"

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

# ---------------------------------------------------------------- 8. systemd
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
end_phase
echo
echo "=== arm.sh: summary"
printf '%s\n' "${SUMMARY[@]}"
echo "packages: $(cd "$DEB_DIR" && ls ./*.deb | tr '\n' ' ')in ${DEB_DIR#$TOP/}/"
echo "time per phase:"
printf '  %s\n' "${TIMINGS[@]}"
if [ ${#FAILURES[@]} -gt 0 ]; then
  echo "arm.sh: ${#FAILURES[@]} failure(s):" >&2
  printf '  %s\n' "${FAILURES[@]}" >&2
  exit 1
fi
echo "arm.sh: all checks passed"
