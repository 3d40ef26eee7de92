#!/usr/bin/env bash
# intercomd's static musl binaries for the Raspberry Pi, built by `cross`
# itself (https://github.com/cross-rs/cross) with Podman and local images.
#   bash tests/cross.sh                 (as root; there is no sudo on a bare machine)
#   CROSS_COMPARE=1 bash tests/cross.sh (also builds each target without cross,
#                                        cargo in the same image, and fails
#                                        unless the binaries are byte-identical)
#
# The two targets tests/arm.sh ships (README.md, "Raspberry Pi"):
# aarch64-unknown-linux-musl (arm64 package) and armv5te-unknown-linux-musleabi
# (armhf package, every 32-bit Pi), static against musl: static glibc costs
# about 580 KiB and loads the Pi's NSS modules, static musl costs nothing
# measurable and has no NSS (the daemon resolves names itself). Built here
# the way arm.sh builds them, only inside cross's containers: Debian's Rust
# 1.85 with std built from its sources (-Zbuild-std=std,panic_abort,
# RUSTC_BOOTSTRAP=1: Debian has no Rust std for musl), +crt-static and
# link-self-contained=no (the C runtime is Debian's musl, not one shipped
# with std), linked by gcc with musl's specs and an unwinder (LLVM's
# libunwind for aarch64, as gcc 12's aarch64 libgcc_eh needs glibc; gcc's
# libgcc_eh for ARMv5TE).
#
# On a bare Debian 12 x86_64 machine with rustup's Rust it installs what it
# lacks and then:
#   1. tools:     podman, runc, debootstrap, qemu-user (apt);
#   2. cross:     cross 0.2.5 (cargo install --locked) in target/cross/tool;
#   3. toolchain: Debian's Rust (rustc-web, its x86_64 std, rust-web-src)
#                 unpacked under target/cross/toolchain/ and registered as a
#                 rustup toolchain in a private RUSTUP_HOME;
#   4. images:    a Debian 12 minbase root (debootstrap) imported into Podman,
#                 and on it one image per target with that target's gcc
#                 cross compiler and Debian's musl (and libunwind) installed
#                 at their usual paths, musl's gcc specs (as arm.sh edits
#                 them) and a linker <musl-triple>-gcc;
#   5. build:     `cross build --locked --release -Zbuild-std=std,panic_abort
#                 --target T` for each target; checks that the binary is
#                 static, and whether it is byte-identical to arm.sh's
#                 target/arm/T/release/intercomd if there is one (it cannot
#                 be: the sources are at other paths, which panic messages
#                 carry: /cargo/... and /rust/... in cross's container,
#                 ~/.cargo/... and target/arm-toolchain/... for arm.sh);
#   6. qemu:      tests/qemu-smoke.sh for each binary and each CPU it is for.
# Everything it makes is under target/cross/ (the Podman store too, through
# CONTAINERS_STORAGE_CONF); a re-run reuses the tool, toolchain and images
# (an image is named after the hash of its recipe). Nothing here changes
# dpkg's architectures or the system's apt lists: downloads use apt lists of
# their own (target/cross/apt), ARM packages are installed only in images.
#
# Why not cross's usual way. cross mounts the host's rustup toolchain into its
# container at /rust and runs `rustup toolchain add` / `target add` for it;
# here the compiler is Debian's, rustup is not to download anything (nor
# change ~/.rustup: plain `cross --version` on this machine once updated
# rustup's stable toolchain), and cross's images are on ghcr.io, which cannot
# be pulled. So:
#   - The toolchain is Debian's Rust 1.85 (the crate's rust-version; the same
#     compiler as tests/arm.sh), laid out like a rustup toolchain (bin/, lib/,
#     lib/rustlib/src/rust for -Zbuild-std) and added with `rustup toolchain
#     link`. CROSS_CUSTOM_TOOLCHAIN=1 tells cross not to run `rustup target
#     add` / `component add` for it. cross mounts it at /rust as it does any
#     toolchain, so the images carry no Rust, like cross's own. bin/rustc is
#     a two-line wrapper (Debian's rustc wants its libraries in
#     ../lib/x86_64-linux-gnu) and bin/cargo is a copy of rustup's default
#     cargo, the cargo tests/arm.sh uses with the same rustc.
#   - cross names the toolchain after the directory `rustc --print sysroot`
#     gives, and runs `rustup toolchain add` (a download!) when that name is
#     not in `rustup toolchain list`. It strips " (default)" from that list
#     but not the " (active)" today's rustup adds, so a toolchain picked with
#     RUSTUP_TOOLCHAIN or `rustup default` is never found. Hence: the link is
#     in a private RUSTUP_HOME (target/cross/rustup), where it is listed bare,
#     and the toolchain's bin/ comes first in PATH, so `rustc` and `cargo` are
#     ours without rustup choosing anything. ~/.rustup is never touched.
#   - cross's `build-std = true` only adds a bare `-Zbuild-std` (no
#     panic_abort), so -Zbuild-std=std,panic_abort is on the command line and
#     RUSTC_BOOTSTRAP=1 is passed into the container
#     (CROSS_BUILD_ENV_PASSTHROUGH). std's dependencies are fetched from
#     crates.io into the shared ~/.cargo (mounted at /cargo).
#   - The rustflags come through CARGO_TARGET_<T>_RUSTFLAGS (cross passes
#     CARGO_* into the container), not .cargo/config.toml: with cross's own
#     images rustup's musl std brings its own C runtime, which
#     link-self-contained=no would turn away.
#   - The images are picked with CROSS_TARGET_<TRIPLE>_IMAGE, set by this
#     script only: the committed cross.toml keeps cross's default images for
#     everyone with Docker (cross.toml says so).
# Podman here: crun 1.8.1 refuses this machine's hybrid cgroups ("cgroups in
# hybrid mode not supported"), so runc runs the containers; the machine gives
# root no CAP_SYS_RESOURCE, so the containers get the current hard limits for
# open files and at most 32768 processes instead of Podman's 1048576 (which
# fail with "setrlimit: Operation not permitted"); containers use the host's
# network (Podman's CNI bridge is not needed: only apt and crates.io are
# reached, nothing listens).
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD
export DEBIAN_FRONTEND=noninteractive

CROSS_VERSION=0.2.5
DEBIAN_RUST=${DEBIAN_RUST:-1.85.0+dfsg3-1~deb12u3}
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
SECURITY_MIRROR=http://deb.debian.org/debian-security
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
WORK=$TOP/target/cross
TOOLCHAIN_NAME=debian-rust-$(echo "$DEBIAN_RUST" | tr '+~' '--')
TOOLCHAIN=$WORK/toolchain/$TOOLCHAIN_NAME
BUILD_DIR=$WORK/build
DIRECT_DIR=$WORK/direct
LOG_DIR=$WORK/logs
TARGETS=(aarch64-unknown-linux-musl armv5te-unknown-linux-musleabi)
# tests/arm.sh's: static, and the C runtime is Debian's musl (through the
# linker's specs), not a copy shipped with std.
RUSTFLAGS_MUSL="-C target-feature=+crt-static -C link-self-contained=no"

# Per target: the gcc cross compiler's prefix, the Debian architecture and
# triple of musl, the unwinder's package (none: gcc's own libgcc_eh), qemu,
# and the CPUs of the Pis it is for (Pi 3 and Zero 2 W, Pi 4, Pi 5 / Pi 1
# and Zero, Pi 2).
gnu_triple() { case $1 in aarch64-*) echo aarch64-linux-gnu ;; armv5te-*) echo arm-linux-gnueabi ;; esac; }
musl_arch() { case $1 in aarch64-*) echo arm64 ;; armv5te-*) echo armel ;; esac; }
musl_triple() { case $1 in aarch64-*) echo aarch64-linux-musl ;; armv5te-*) echo arm-linux-musleabi ;; esac; }
unwind_package() { case $1 in aarch64-*) echo libunwind-14-dev ;; esac; }
qemu_for() { case $1 in aarch64-*) echo qemu-aarch64 ;; armv5te-*) echo qemu-arm ;; esac; }
cpus_for() { case $1 in aarch64-*) echo cortex-a53 cortex-a72 cortex-a76 ;; armv5te-*) echo arm1176 cortex-a7 ;; esac; }
upper() { echo "$1" | tr 'a-z-' 'A-Z_'; }
lower() { echo "$1" | tr '-' '_'; }
seconds_since() { local ms=$(($(date +%s%3N) - $1)); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }

REPORT=cross.sh
# shellcheck source=tests/report.sh
. tests/report.sh
SCRIPT_START=$(now_ms)
[ "$(id -u)" = 0 ] || die "run it as root (apt-get, debootstrap and rootful Podman need root)"
mkdir -p "$WORK" "$LOG_DIR"

# A debootstrap root being built is removed again if the run stops half-way.
# Podman 4.3 keeps a small blob cache in /var/lib/containers/cache whatever
# its store is, and runc its containers' state in /run/runc (there is no
# setting for either): removed again if this run made them.
PODMAN_CACHE=/var/lib/containers/cache
PODMAN_CACHE_EXISTED=
[ ! -e "$PODMAN_CACHE" ] || PODMAN_CACHE_EXISTED=1
RUNC_STATE_EXISTED=
[ ! -e /run/runc ] || RUNC_STATE_EXISTED=1
cleanup() {
  rm -rf "$WORK/rootfs.partial"
  if [ -z "$PODMAN_CACHE_EXISTED" ] && [ -d "$PODMAN_CACHE" ]; then
    rm -f "$PODMAN_CACHE/blob-info-cache-v1.boltdb"
    rmdir "$PODMAN_CACHE" /var/lib/containers 2>/dev/null || true
  fi
  # (Empty once the containers are gone; rmdir leaves it otherwise.)
  [ -n "$RUNC_STATE_EXISTED" ] || rmdir /run/runc 2>/dev/null || true
}
trap cleanup EXIT

# ---------------------------------------------------------------- 1. tools
phase tools
APT_PACKAGES=(podman runc debootstrap qemu-user file binutils curl ca-certificates)
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }
missing=()
for package in "${APT_PACKAGES[@]}"; do
  installed "$package" || missing+=("$package")
done
command -v cargo >/dev/null 2>&1 && command -v rustup >/dev/null 2>&1 || die "cargo or rustup is missing; install Rust with rustup first"
if [ ${#missing[@]} -gt 0 ]; then
  run apt-get update || say "apt-get update exited $?; going on (the install says whether a package is really missing)"
  run apt-get install -y --no-install-recommends "${missing[@]}"
else
  say "all present: ${APT_PACKAGES[*]}"
fi
for package in "${APT_PACKAGES[@]}"; do
  installed "$package" || die "package $package is still not installed"
done

# ---------------------------------------------------------------- 2. cross
phase cross
CROSS=$WORK/tool/bin/cross
# (Not `cross --version`: that starts a container with cargo in it.)
cross_installed() { cargo install --list --root "$WORK/tool" 2>/dev/null | grep -qx "cross v$CROSS_VERSION:"; }
if [ -x "$CROSS" ] && cross_installed; then
  say "reusing cross $CROSS_VERSION in ${CROSS#$TOP/}"
else
  # With rustup's own toolchain (before RUSTUP_HOME changes below).
  run cargo install cross --version "=$CROSS_VERSION" --locked --force --root "$WORK/tool"
  cross_installed || die "cargo install did not leave cross $CROSS_VERSION in ${WORK#$TOP/}/tool"
fi

# ---------------------------------------------------------------- 3. toolchain
phase toolchain
# apt with lists, sources and architectures of its own, for downloads only:
# dpkg's architectures and /var/lib/apt stay as they are. private_apt ARCH...
# (amd64 and these) sets it up and updates its lists.
APT_DIR=$WORK/apt
APT_OPTS=()
private_apt() {
  local arch
  APT_OPTS=(-o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::Cache=$APT_DIR/cache"
    -o "Dir::Etc::SourceList=$APT_DIR/sources.list" -o "Dir::Etc::SourceParts=$APT_DIR/sources.list.d"
    -o APT::Architectures::=amd64 -o APT::Sandbox::User=root -q)
  for arch in "$@"; do APT_OPTS+=(-o "APT::Architectures::=$arch"); done
  mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/sources.list.d"
  cat >"$APT_DIR/sources.list" <<SOURCES
deb [signed-by=$KEYRING] $MIRROR $SUITE main
deb [signed-by=$KEYRING] $MIRROR $SUITE-updates main
deb [signed-by=$KEYRING] $SECURITY_MIRROR $SUITE-security main
SOURCES
  run apt-get "${APT_OPTS[@]}" update
}
depends_of() { apt-cache "${APT_OPTS[@]}" show "$1" 2>/dev/null | sed -n 's/^Depends: //p' | head -n 1 | tr ',' '\n'; }
if [ -f "$TOOLCHAIN/.complete" ]; then
  say "reusing Debian's Rust $DEBIAN_RUST in ${TOOLCHAIN#$TOP/}"
else
  private_apt
  for package in rustc-web rust-web-src; do
    apt-cache "${APT_OPTS[@]}" show "$package=$DEBIAN_RUST" >/dev/null 2>&1 || {
      apt-cache "${APT_OPTS[@]}" madison rustc-web rust-web-src >&2 || true
      die "Debian's archive has no $package $DEBIAN_RUST: set DEBIAN_RUST to a version listed above"
    }
  done
  runtime=$(depends_of "libstd-rust-web-dev=$DEBIAN_RUST" | sed -n 's/^ *\(libstd-rust-web-[0-9.]*\) .*/\1/p' | head -n 1)
  llvm=$(depends_of "$runtime=$DEBIAN_RUST" | sed -n 's/^ *\(libllvm[0-9]*\).*/\1/p' | head -n 1)
  [ -n "$runtime" ] && [ -n "$llvm" ] || die "cannot tell the runtime and LLVM packages of rustc-web $DEBIAN_RUST"
  # What rustc needs at run time besides what is unpacked here (libedit2,
  # libffi8, libxml2, libz3-4, ... for LLVM): the images install these, as
  # rustc runs inside them. The first of any alternatives, without versions.
  image_packages=$( (depends_of "rustc-web=$DEBIAN_RUST"; depends_of "$runtime=$DEBIAN_RUST"; depends_of "$llvm") |
    sed 's/|.*//; s/(.*//; s/:any//; s/ //g' | grep -v -x -e '' -e "$runtime" -e "$llvm" -e 'libstd-rust-web-dev' -e gcc -e libc-dev -e binutils | sort -u | tr '\n' ' ')
  downloads=$APT_DIR/debs
  rm -rf "$downloads" "$TOOLCHAIN.partial"
  mkdir -p "$downloads" "$TOOLCHAIN.partial"
  # The x86_64 std is for build scripts and proc macros; the targets' std is
  # built from rust-web-src.
  (cd "$downloads" && run apt-get "${APT_OPTS[@]}" download "rustc-web=$DEBIAN_RUST" "$runtime=$DEBIAN_RUST" \
    "libstd-rust-web-dev=$DEBIAN_RUST" "rust-web-src=$DEBIAN_RUST" "$llvm")
  for deb in "$downloads"/*.deb; do
    say "unpacking $(basename "$deb")"
    dpkg -x "$deb" "$TOOLCHAIN.partial/root"
  done
  # A rustup toolchain is bin/ and lib/ (and lib/rustlib/src/rust for
  # build-std): Debian's /usr is exactly that. rustc finds its sysroot from
  # where its libraries are, so the tree may move (cross mounts it at /rust).
  mv "$TOOLCHAIN.partial/root/usr" "$TOOLCHAIN.partial/tree"
  tree=$TOOLCHAIN.partial/tree
  mv "$tree/bin/rustc" "$tree/bin/rustc.debian"
  cat >"$tree/bin/rustc" <<'RUSTC'
#!/bin/sh
# Debian's rustc, unpacked rather than installed: its libraries are in
# ../lib/x86_64-linux-gnu, here and inside cross's /rust mount alike.
here=$(dirname "$0")
LD_LIBRARY_PATH=$here/../lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} exec "$here/rustc.debian" "$@"
RUSTC
  chmod 755 "$tree/bin/rustc"
  [ -f "$tree/lib/rustlib/src/rust/library/Cargo.lock" ] || die "rust-web-src has no library/Cargo.lock"
  rm -rf "$downloads" "$TOOLCHAIN"
  mkdir -p "$(dirname "$TOOLCHAIN")"
  mv "$tree" "$TOOLCHAIN"
  rm -rf "$TOOLCHAIN.partial"
  echo "$image_packages" >"$TOOLCHAIN/.image-packages"
  touch "$TOOLCHAIN/.complete"
fi
# cross runs /rust/bin/cargo in the container: the cargo tests/arm.sh drives
# Debian's rustc with (rustup's default), copied in, again whenever it changed.
default_cargo=$(rustup which cargo)
cmp -s "$default_cargo" "$TOOLCHAIN/bin/cargo" || run cp "$default_cargo" "$TOOLCHAIN/bin/cargo"
CARGO_HOME_DIR=${CARGO_HOME:-$HOME/.cargo}
export RUSTUP_HOME=$WORK/rustup
unset RUSTUP_TOOLCHAIN
mkdir -p "$RUSTUP_HOME"
if ! rustup toolchain list | grep -qx "$TOOLCHAIN_NAME"; then
  run rustup toolchain link "$TOOLCHAIN_NAME" "$TOOLCHAIN"
fi
rustup toolchain list | grep -qx "$TOOLCHAIN_NAME" ||
  die "rustup lists the toolchain as '$(rustup toolchain list | grep "$TOOLCHAIN_NAME")', cross would not find it"
export PATH=$TOOLCHAIN/bin:$PATH
[ "$(rustc --print sysroot)" = "$TOOLCHAIN" ] || die "rustc's sysroot is $(rustc --print sysroot), not $TOOLCHAIN"
[ -f "$TOOLCHAIN/lib/rustlib/src/rust/library/Cargo.lock" ] || die "no standard library sources in $TOOLCHAIN"
note "toolchain $TOOLCHAIN_NAME: $(rustc --version) with $(cargo --version) ($(du -sh "$TOOLCHAIN" | cut -f1) unpacked)"

# ---------------------------------------------------------------- 4. images
phase images
PODMAN_DIR=$WORK/podman
mkdir -p "$PODMAN_DIR/tmp"
cat >"$PODMAN_DIR/storage.conf" <<EOF
# Podman's image store for tests/cross.sh, under target/ (gitignored).
[storage]
driver = "overlay"
graphroot = "$PODMAN_DIR/storage"
runroot = "$PODMAN_DIR/run"
EOF
nofile=$(ulimit -Hn)
nproc=$(ulimit -Hu)
if [ "$nofile" = unlimited ] || [ "$nofile" -gt 1048576 ]; then nofile=1048576; fi
if [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; then nproc=32768; fi
cat >"$PODMAN_DIR/containers.conf" <<EOF
# Podman settings for tests/cross.sh (see the comments at its top).
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
netns = "host"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
tmp_dir = "$PODMAN_DIR/tmp"
EOF
export CONTAINERS_STORAGE_CONF=$PODMAN_DIR/storage.conf CONTAINERS_CONF=$PODMAN_DIR/containers.conf
say "$(podman --version), $(runc --version | head -n 1), store in ${PODMAN_DIR#$TOP/}"

# The root: Debian 12 minbase with the same apt sources as this machine.
ROOT_RECIPE="debootstrap --variant=minbase $SUITE $MIRROR; sources: $SUITE $SUITE-updates $SUITE-security"
ROOT_IMAGE=localhost/intercomd-cross-root:$SUITE-$(echo "$ROOT_RECIPE" | sha256sum | cut -c1-12)
if podman image exists "$ROOT_IMAGE"; then
  say "reusing $ROOT_IMAGE"
else
  rootfs=$WORK/rootfs.partial
  rm -rf "$rootfs"
  run debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$LOG_DIR/debootstrap.log" 2>&1 ||
    die "debootstrap failed: $(tail -n 5 "$LOG_DIR/debootstrap.log")"
  rm -f "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: $KEYRING

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: $KEYRING
EOF
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/dev/*
  echo "+ tar -C ${rootfs#$TOP/} -c . | podman import - $ROOT_IMAGE"
  tar --numeric-owner -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$ROOT_IMAGE" >/dev/null
  rm -rf "$rootfs"
fi

# The linker for a musl target, as tests/arm.sh makes it (in each image).
MUSL_SETUP=$(
  cat <<'SETUP'
#!/bin/sh
# musl-gcc-setup.sh GNU-TRIPLE MUSL-TRIPLE   (from tests/cross.sh)
# Makes /usr/local/bin/MUSL-TRIPLE-gcc: GNU-TRIPLE-gcc compiling and linking
# against Debian's musl (musl-dev, and for aarch64 libunwind-14-dev), then
# links a static C program with it.
set -eu
gnu=$1 musl=$2
dir=/usr/local/lib/$musl
mkdir -p "$dir/unwind"
# musl-dev's specs, edited as tests/arm.sh does (which also moves their
# paths, as it unpacks musl): rcrt1.o should rustc ever link a static PIE,
# and then no dynamic loader (Rust 1.85 links these targets -static -no-pie).
sed -e "s|%{!shared: \([^ }]*\)/Scrt1.o}|%{static-pie:\1/rcrt1.o} %{!static-pie:%{!shared:\1/Scrt1.o}}|" \
  -e "s|-dynamic-linker \([^ ]*\)|%{!static-pie:-dynamic-linker \1} %{static-pie:-static -pie --no-dynamic-linker -z text}|" \
  "/usr/lib/$musl/musl-gcc.specs" >"$dir/musl-gcc.specs"
grep -q 'static-pie:[^ ]*/rcrt1.o' "$dir/musl-gcc.specs" && grep -q '!static-pie:-dynamic-linker' "$dir/musl-gcc.specs" ||
  { echo "musl-gcc-setup.sh: musl's gcc specs are not as expected" >&2; exit 1; }
# Rust's unwind crate links -lunwind: LLVM's libunwind for aarch64 (gcc 12's
# aarch64 libgcc_eh needs glibc's _dl_find_object), gcc's libgcc_eh on ARM.
case $gnu in
  aarch64-*) unwinder=/usr/lib/llvm-14/lib/libunwind.a ;;
  *) unwinder=$("$gnu-gcc" -print-file-name=libgcc_eh.a) ;;
esac
[ -f "$unwinder" ] || { echo "musl-gcc-setup.sh: no unwinder at $unwinder" >&2; exit 1; }
ln -sfn "$unwinder" "$dir/unwind/libunwind.a"
cc=/usr/local/bin/$musl-gcc
printf '#!/bin/sh\n# %s-gcc, compiling and linking against musl (musl-gcc-setup.sh).\nexec %s-gcc -specs=%s -L%s "$@"\n' \
  "$gnu" "$gnu" "$dir/musl-gcc.specs" "$dir/unwind" >"$cc"
chmod 755 "$cc"
test=$(mktemp -d)
printf '#include <stdio.h>\nint main(void) { puts("ok"); return 0; }\n' >"$test/hello.c"
"$cc" -static -Os -o "$test/hello" "$test/hello.c"
rm -rf "$test"
SETUP
)
# One image per target. First, in a layer both share, the host's C compiler
# (for build scripts) and the libraries Debian's rustc needs (it runs in the
# container from cross's /rust mount). Then the target's gcc cross compiler,
# Debian's musl for the target's architecture (at /usr/lib/<musl-triple> and
# /usr/include/<musl-triple>) and for aarch64 LLVM's libunwind; the linker
# /usr/local/bin/<musl-triple>-gcc (musl-gcc-setup.sh); and the environment
# cross's own images set: the linker, and CC and AR for the cc crate (which
# builds ring's C and assembly).
declare -A IMAGE
for target in "${TARGETS[@]}"; do
  gnu=$(gnu_triple "$target")
  arch=$(musl_arch "$target")
  musl=$(musl_triple "$target")
  unwind=
  [ -z "$(unwind_package "$target")" ] || unwind=" $(unwind_package "$target"):$arch"
  dir=$WORK/images/$target
  rm -rf "$dir"
  mkdir -p "$dir"
  echo "$MUSL_SETUP" >"$dir/musl-gcc-setup.sh"
  cat >"$dir/Containerfile" <<EOF
FROM $ROOT_IMAGE
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev $(cat "$TOOLCHAIN/.image-packages") && apt-get clean && rm -rf /var/lib/apt/lists/*
RUN dpkg --add-architecture $arch && apt-get update && apt-get install -y --no-install-recommends gcc-$gnu musl-dev:$arch$unwind && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY musl-gcc-setup.sh /usr/local/share/intercomd-cross/
RUN sh /usr/local/share/intercomd-cross/musl-gcc-setup.sh $gnu $musl
ENV CARGO_TARGET_$(upper "$target")_LINKER=$musl-gcc \\
    CC_$(lower "$target")=$musl-gcc \\
    AR_$(lower "$target")=$gnu-ar
LABEL org.opencontainers.image.description="intercomd: cross build image for $target (tests/cross.sh)"
EOF
  IMAGE[$target]=localhost/intercomd-cross/$target:$(cat "$dir/Containerfile" "$dir/musl-gcc-setup.sh" | sha256sum | cut -c1-12)
  if podman image exists "${IMAGE[$target]}"; then
    say "reusing ${IMAGE[$target]}"
  else
    started=$(now_ms)
    run podman build --network=host --layers -t "${IMAGE[$target]}" "$dir" >"$LOG_DIR/image-$target.log" 2>&1 ||
      die "podman build for $target failed: $(tail -n 5 "$LOG_DIR/image-$target.log")"
    say "built in $(seconds_since "$started") s (log: ${LOG_DIR#$TOP/}/image-$target.log)"
  fi
  # shellcheck disable=SC2086 # $unwind: no word or one
  versions=$(podman run --rm "${IMAGE[$target]}" dpkg-query -W -f='${Package} ${Version}, ' "gcc-$gnu" "musl-dev:$arch" $unwind)
  note "image ${IMAGE[$target]}: $(podman image inspect --format '{{.Size}}' "${IMAGE[$target]}" | awk '{ printf "%.0f MB", $1 / 1e6 }'); ${versions%, }"
done
# Images of earlier recipes, and of targets no longer built, are not needed.
for old in $(podman images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/intercomd-cross/'); do
  keep=
  for target in "${TARGETS[@]}"; do [ "$old" != "${IMAGE[$target]}" ] || keep=1; done
  [ -n "$keep" ] || run podman rmi "$old" >/dev/null || true
done
podman image prune -f >/dev/null || true
note "Podman store ${PODMAN_DIR#$TOP/}: $(du -sh "$PODMAN_DIR" | cut -f1)"

# ---------------------------------------------------------------- 5. build
phase build
# What a static binary must not have: a program interpreter (the dynamic
# loader), or any library to load.
is_static() { ! readelf -W -l "$1" | grep -q INTERP && ! readelf -W -d "$1" 2>/dev/null | grep -q '(NEEDED)'; }
text_bytes() { size -A "$1" | awk '$1 == ".text" { print $2 }'; }
declare -A SIZE
for target in "${TARGETS[@]}"; do
  T=$(upper "$target")
  log=$LOG_DIR/build-$target.log
  # (CROSS_BUILD_, not CROSS_TARGET_..._ENV_PASSTHROUGH: cross 0.2.5 drops a
  # target's passthrough list unless a build one is set too. This command
  # builds one target, so the build one is that target's.)
  command=(env CROSS_CONTAINER_ENGINE=podman CROSS_CUSTOM_TOOLCHAIN=1 "CROSS_CONFIG=$TOP/cross.toml"
    "CROSS_TARGET_${T}_IMAGE=${IMAGE[$target]}" "CARGO_TARGET_DIR=$BUILD_DIR"
    RUSTC_BOOTSTRAP=1 CROSS_BUILD_ENV_PASSTHROUGH=RUSTC_BOOTSTRAP "CARGO_TARGET_${T}_RUSTFLAGS=$RUSTFLAGS_MUSL"
    "$CROSS" build --locked --release -Zbuild-std=std,panic_abort --target "$target")
  started=$(now_ms)
  echo "+ $(printf '%q ' "${command[@]}")"
  status=0
  "${command[@]}" 2>&1 | tee "$log" || status=$?
  binary=$BUILD_DIR/$target/release/intercomd
  if [ "$status" != 0 ] || [ ! -x "$binary" ]; then
    fail "cross build for $target exited $status (log: ${log#$TOP/})"
    continue
  fi
  SIZE[$target]=$(stat -c %s "$binary")
  is_static "$binary" || fail "$binary is not static: $(readelf -W -l -d "$binary" | grep -e INTERP -e NEEDED | tr -s ' ' | tr '\n' ' ')"
  note "$target: built in $(seconds_since "$started") s, ${SIZE[$target]} bytes ($((SIZE[$target] / 1024)) KiB), $(is_static "$binary" && echo static || echo 'NOT static'): $(file -b "$binary" | cut -d, -f1-2,4)"
  # Against tests/arm.sh's binary, if it built one: the same compiler,
  # flags, C library and sources, but at other paths (see the top).
  arm_binary=$TOP/target/arm/$target/release/intercomd
  if [ -f "$arm_binary" ]; then
    if cmp -s "$binary" "$arm_binary"; then
      note "$target: byte-identical to tests/arm.sh's ${arm_binary#$TOP/}"
    else
      note "$target: not byte-identical to tests/arm.sh's ${arm_binary#$TOP/} ($(stat -c %s "$arm_binary") bytes there; .text $(text_bytes "$binary") bytes here, $(text_bytes "$arm_binary") there): source paths, $(strings -a "$binary" | grep -c -e /cargo/registry/ -e /rust/lib/rustlib/src/) strings here with /cargo/registry/ or /rust/lib/rustlib/src/, $(strings -a "$arm_binary" | grep -c -e "$CARGO_HOME_DIR/registry/" -e target/arm-toolchain/) there with $CARGO_HOME_DIR/registry/ or target/arm-toolchain/"
    fi
  fi
done

# ---------------------------------------------------------------- compare
if [ -n "${CROSS_COMPARE:-}" ]; then
  phase compare
  # Each target built again without cross: cargo run by plain `podman run`
  # in the same image, with cross's mounts (/project, /cargo, /rust, and
  # target/cross/direct as /target), working directory and flags. cross must
  # add nothing of its own: the binaries must be byte-identical.
  mkdir -p "$DIRECT_DIR"
  for target in "${TARGETS[@]}"; do
    T=$(upper "$target")
    cross_binary=$BUILD_DIR/$target/release/intercomd
    direct_binary=$DIRECT_DIR/$target/release/intercomd
    [ -x "$cross_binary" ] || continue
    started=$(now_ms)
    run podman run --rm -v "$TOP:/project" -v "$CARGO_HOME_DIR:/cargo" -v "$TOOLCHAIN:/rust:ro" -v "$DIRECT_DIR:/target" \
      -w /project -e CARGO_HOME=/cargo -e CARGO_TARGET_DIR=/target -e PATH=/rust/bin:/usr/local/bin:/usr/bin:/bin \
      -e RUSTC_BOOTSTRAP=1 -e "CARGO_TARGET_${T}_RUSTFLAGS=$RUSTFLAGS_MUSL" "${IMAGE[$target]}" \
      cargo build --locked --release -Zbuild-std=std,panic_abort --target "$target" >"$LOG_DIR/direct-$target.log" 2>&1 ||
      { fail "the build of $target without cross failed (log: ${LOG_DIR#$TOP/}/direct-$target.log)"; continue; }
    if cmp -s "$cross_binary" "$direct_binary"; then
      note "$target: built without cross in $(seconds_since "$started") s: byte-identical to cross's"
    else
      fail "$target: without cross $(stat -c %s "$direct_binary") bytes, with cross ${SIZE[$target]}: $(cmp -l "$cross_binary" "$direct_binary" 2>/dev/null | wc -l) bytes differ"
    fi
  done
fi

# ---------------------------------------------------------------- 6. qemu
phase qemu
for target in "${TARGETS[@]}"; do
  binary=$BUILD_DIR/$target/release/intercomd
  [ -x "$binary" ] || continue
  for cpu in $(cpus_for "$target"); do
    echo "+ bash tests/qemu-smoke.sh $(qemu_for "$target") $cpu ${binary#$TOP/}"
    if line=$(bash tests/qemu-smoke.sh "$(qemu_for "$target")" "$cpu" "$binary" 2>"$LOG_DIR/smoke-$target-$cpu.log"); then
      echo "$line"
      note "$target on $cpu: ${line#qemu-smoke: ok: }"
    else
      cat "$LOG_DIR/smoke-$target-$cpu.log" >&2
      fail "$target under $(qemu_for "$target") -cpu $cpu: $(head -n 1 "$LOG_DIR/smoke-$target-$cpu.log")"
    fi
  done
done

# ---------------------------------------------------------------- summary
end_phase
note "total: $(seconds_since "$SCRIPT_START") s"
report_summary
