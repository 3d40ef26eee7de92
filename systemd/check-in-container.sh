#!/usr/bin/env bash
# The Debian package under a real systemd: boots Debian 12 in systemd-nspawn
# (its own network namespace, so nothing leaves it) and checks what a person
# with a fresh Pi would see, with every hardening line of the unit in force.
#   sudo bash systemd/check-in-container.sh target/arm/debian/intercomd_VERSION_amd64.deb
# tests/arm.sh runs it with the amd64 package, which has the same unit,
# conffile and maintainer scripts as the ARM ones. Installs systemd-container
# and debootstrap if missing; the Debian tree is made once (about a minute)
# in target/systemd-container/ and reused; each run boots it with a throw-away
# overlay, so the tree itself never changes.
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD
export DEBIAN_FRONTEND=noninteractive

[ $# -eq 1 ] || { echo "usage: $0 PACKAGE.deb" >&2; exit 2; }
DEB=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
[ -f "$DEB" ] || { echo "$0: no package $DEB" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "$0: needs root (debootstrap, systemd-nspawn)" >&2; exit 1; }
ROOTFS=$TOP/target/systemd-container/bookworm
say() { echo "container: $*"; }

missing=()
command -v systemd-nspawn >/dev/null 2>&1 || missing+=(systemd-container)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  echo "+ apt-get install -y --no-install-recommends ${missing[*]}"
  apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
    { apt-get update >/dev/null || true; apt-get install -y --no-install-recommends "${missing[@]}"; }
fi
if [ ! -f "$ROOTFS/.complete" ]; then
  rm -rf "$ROOTFS"
  mkdir -p "$(dirname "$ROOTFS")"
  echo "+ debootstrap --variant=minbase bookworm ${ROOTFS#$TOP/}"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,curl,iproute2 \
    bookworm "$ROOTFS" http://deb.debian.org/debian >"$ROOTFS.log" 2>&1 ||
    { tail -n 20 "$ROOTFS.log" >&2; exit 1; }
  touch "$ROOTFS/.complete"
else
  say "reusing the Debian 12 tree in ${ROOTFS#$TOP/}"
fi

# Boot it: --volatile=overlay puts a tmpfs over the tree, so every run starts
# from the same fresh system; --private-network gives it only its own lo.
# IPAddressDeny= and DeviceAllow= work through BPF programs on cgroup v2, as on
# a Raspberry Pi: give the container the unified hierarchy and the bpf()
# call (nspawn withholds both by default, and systemd then skips the filter).
echo "+ systemd-nspawn --boot --private-network --volatile=overlay -D ${ROOTFS#$TOP/}"
SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn --quiet --register=no --keep-unit --boot --console=passive \
  --private-network --system-call-filter=bpf --capability=CAP_BPF,CAP_PERFMON --volatile=overlay --bind-ro="$DEB:/root/intercomd.deb" -D "$ROOTFS" >"$ROOTFS.boot.log" 2>&1 &
NSPAWN=$!
stop_container() {
  kill -TERM "$NSPAWN" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$NSPAWN" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$NSPAWN" 2>/dev/null || true
}
trap stop_container EXIT
LEADER=
for _ in $(seq 300); do # nspawn forks helpers first; the leader is the container's systemd
  LEADER=$(pgrep -P "$NSPAWN" -x systemd | head -n 1 || true)
  [ -z "$LEADER" ] || break
  sleep 0.1
done
[ -n "$LEADER" ] || { echo "container: systemd-nspawn did not start a container" >&2; exit 1; }
inside() { nsenter --target "$LEADER" --all -- "$@"; }
state=
for _ in $(seq 600); do # the bus appears a moment after boot starts
  state=$(inside systemctl is-system-running --wait 2>/dev/null || true)
  [ -z "$state" ] || break
  sleep 0.1
done
say "booted: systemd $(inside systemctl --version | head -n 1 | cut -d' ' -f2), system $state"

PASSED=0
FAILED=0
check() { # check DESCRIPTION COMMAND...: one line per check
  local what=$1
  shift
  if "$@"; then
    echo "ok:   $what"
    PASSED=$((PASSED + 1))
  else
    echo "FAIL: $what"
    FAILED=$((FAILED + 1))
  fi
}
main_pid() { inside systemctl show -p MainPID --value intercomd; }
in_sh() { inside sh -c "$1"; }

# A LAN address and an internet address, both on the container's own lo.
inside ip addr add 192.168.77.1/32 dev lo
inside ip addr add 198.51.100.1/32 dev lo

echo "+ apt install ./intercomd.deb (inside)"
install_output=$(inside apt-get install -y /root/intercomd.deb 2>&1) || true
echo "$install_output" | grep -v '^(Reading database' | tail -n 3
check "apt-get install works and the maintainer scripts say nothing wrong" \
  sh -c '! echo "$1" | grep -q "dpkg/info/intercomd\|^E:"' _ "$install_output"
check "the service is enabled" in_sh 'systemctl is-enabled --quiet intercomd'
check "the service is running right after install (Type=notify: it said READY=1)" \
  in_sh 'systemctl is-active --quiet intercomd'
check "GET /healthz from this machine answers ok" in_sh '[ "$(curl -sS --max-time 5 http://127.0.0.1:8080/healthz)" = ok ]'
check "GET /healthz over IPv6 (::1) answers ok" in_sh '[ "$(curl -sS --max-time 5 "http://[::1]:8080/healthz")" = ok ]'
check "a LAN address (192.168.77.1) is served" \
  in_sh '[ "$(curl -sS --max-time 5 --interface 192.168.77.1 http://192.168.77.1:8080/healthz)" = ok ]'
check "an internet address (198.51.100.1) is not (IPAddressDeny)" \
  in_sh '! curl -sS --max-time 3 --interface 198.51.100.1 http://198.51.100.1:8080/healthz >/dev/null 2>&1'
pid=$(main_pid)
check "it runs as a dynamic user, not root" in_sh "[ \$(stat -c %u /proc/$pid) -ge 61184 ]"
check "\$STATE_DIRECTORY is /var/lib/intercomd, private to it" \
  in_sh "tr '\\0' '\\n' </proc/$pid/environ | grep -qx STATE_DIRECTORY=/var/lib/intercomd &&
    [ \"\$(stat -L -c %a /var/lib/intercomd)\" = 700 ]"
check "HTTPS on 8443 is trusted through the generated CA, for a LAN address (netlink allowed)" \
  in_sh '[ "$(curl -sS --max-time 5 --cacert /var/lib/intercomd/ca.crt --interface 192.168.77.1 https://192.168.77.1:8443/healthz)" = ok ]'
check "the generated keys are readable by the service only (0600)" \
  in_sh '[ "$(stat -L -c %a /var/lib/intercomd/ca.key)" = 600 ] && [ "$(stat -L -c %a /var/lib/intercomd/server.key)" = 600 ]'
check "it raised its open-file soft limit to the hard limit" \
  in_sh "awk '/open files/ { exit !(\$4 == \$5) }' /proc/$pid/limits"
check "the seccomp filter and the rest are in force" \
  in_sh "grep -q '^Seccomp:[[:space:]]*2' /proc/$pid/status && grep -q '^NoNewPrivs:[[:space:]]*1' /proc/$pid/status &&
    grep -q '^CapBnd:[[:space:]]*0000000000000000' /proc/$pid/status"
score=$(inside systemd-analyze security intercomd 2>/dev/null | sed -n 's/.*Overall exposure level for intercomd.service: \([0-9.]*\).*/\1/p')
check "systemd-analyze security of the running unit: ${score:-?} (at most 2.0)" \
  awk -v s="${score:-99}" 'BEGIN { exit !(s <= 2.0) }'

# Flags from /etc/default/intercomd reach the daemon.
in_sh "sed -i 's/^INTERCOMD_OPTS=\"/INTERCOMD_OPTS=\"--no-stun /' /etc/default/intercomd && systemctl restart intercomd"
check "a flag added in /etc/default/intercomd applies after a restart (--no-stun)" \
  in_sh '[ "$(curl -sS --max-time 5 http://127.0.0.1:8080/api/ice-servers)" = "{\"iceServers\":[]}" ]'

# The door opener under the hardened unit: the command (a stand-in for the
# relay's gpioset script) runs as the service's own user inside its sandbox,
# with the PIN from /etc/default/intercomd; then the same with the GPIO
# drop-in the package ships. systemd/door-call.py rings and answers through
# the container's network namespace.
in_sh 'printf "#!/bin/sh\necho \"opened by \$(id -u)\" >> \"\$STATE_DIRECTORY/door-record\"\n" >/usr/local/bin/open-door &&
  chmod 755 /usr/local/bin/open-door'
in_sh "sed -i 's|^INTERCOMD_OPTS=\"|INTERCOMD_OPTS=\"--door-open door=/usr/local/bin/open-door |' /etc/default/intercomd &&
  echo 'INTERCOMD_DOOR_PIN=\"864209\"' >>/etc/default/intercomd && systemctl restart intercomd"
# door_opens N: a call opens the door, and the record holds N lines, all by the service's own user.
door_opens() {
  nsenter --target "$LEADER" --net -- python3 systemd/door-call.py 8080 864209 || return 1
  local uid
  uid=$(in_sh "stat -c %u /proc/$(main_pid)")
  [ "$(in_sh 'cat /var/lib/intercomd/door-record' | grep -cx "opened by $uid")" = "$1" ]
}
in_group_gpio() {
  local gid
  gid=$(in_sh 'getent group gpio | cut -d: -f3')
  in_sh "grep '^Groups:' /proc/$(main_pid)/status | grep -qw $gid"
}
check "a door opens from a call under the hardened unit: the command ran in the sandbox, as the service's user" door_opens 1
in_sh 'groupadd --system gpio && mkdir -p /etc/systemd/system/intercomd.service.d &&
  cp /usr/share/doc/intercomd/examples/door-gpio.conf /etc/systemd/system/intercomd.service.d/ &&
  systemctl daemon-reload && systemctl restart intercomd'
check "with the GPIO drop-in the service runs in the group gpio" in_group_gpio
check "and a door still opens" door_opens 2
check "the PIN never reached the journal" in_sh '! journalctl -u intercomd -o cat | grep -q 864209'

# The watchdog: with a short WatchdogSec, a running daemon stays up; a frozen
# one is killed and restarted.
in_sh 'mkdir -p /run/systemd/system/intercomd.service.d && printf "[Service]\nWatchdogSec=2s\nTimeoutAbortSec=2s\n" \
  >/run/systemd/system/intercomd.service.d/watchdog.conf && systemctl daemon-reload && systemctl restart intercomd'
pid=$(main_pid)
sleep 5
check "with WatchdogSec=2s the daemon keeps itself alive for 5 s (WATCHDOG=1)" \
  sh -c "[ \"\$1\" = \"\$2\" ] && [ \"\$1\" != 0 ]" _ "$pid" "$(main_pid)"
in_sh "kill -STOP $pid"
restarted=
for _ in $(seq 150); do
  new=$(main_pid)
  if [ "$new" != "$pid" ] && [ "$new" != 0 ] && in_sh 'systemctl is-active --quiet intercomd'; then restarted=$new; break; fi
  sleep 0.1
done
check "a frozen daemon is killed by the watchdog and restarted" \
  in_sh "[ -n '$restarted' ] && journalctl -u intercomd | grep -q 'Watchdog timeout'"
in_sh 'rm -r /run/systemd/system/intercomd.service.d && systemctl daemon-reload && systemctl restart intercomd'

started=$(date +%s%3N)
inside systemctl stop intercomd
stopped_ms=$(($(date +%s%3N) - started))
check "systemctl stop takes ${stopped_ms} ms (under 5 s) and the daemon exits 0" \
  in_sh "[ $stopped_ms -lt 5000 ] && [ \"\$(systemctl show -p ExecMainStatus --value intercomd)\" = 0 ] &&
    [ \"\$(systemctl show -p Result --value intercomd)\" = success ]"
check "its log has no warning or error" in_sh '! journalctl -u intercomd -o cat | grep -E "^(WARN|ERROR)"'
inside systemctl start intercomd

remove_output=$(inside apt-get remove -y intercomd 2>&1) || true
check "apt-get remove stops the service and leaves no script complaint" \
  sh -c '! echo "$1" | grep -q "dpkg/info/intercomd\|^E:" && ! nsenter --target "$2" --all -- systemctl is-active --quiet intercomd' \
  _ "$remove_output" "$LEADER"
check "remove keeps /etc/default/intercomd and the state" in_sh '[ -f /etc/default/intercomd ] && [ -d /var/lib/private/intercomd ]'
purge_output=$(inside apt-get purge -y intercomd 2>&1) || true
check "apt-get purge removes the flags, the state and the enablement" \
  sh -c '! echo "$1" | grep -q "dpkg/info/intercomd\|^E:" &&
    nsenter --target "$2" --all -- sh -c "[ ! -e /etc/default/intercomd ] && [ ! -e /var/lib/private/intercomd ] &&
      [ ! -L /var/lib/intercomd ] && [ ! -L /etc/systemd/system/multi-user.target.wants/intercomd.service ]"' \
  _ "$purge_output" "$LEADER"

if [ "$FAILED" -gt 0 ]; then
  echo "--- the service's journal in the container:"
  inside journalctl -u intercomd --no-pager | tail -n 30 || true
fi
echo "container: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
