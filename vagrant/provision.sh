#!/usr/bin/env bash
# provision.sh: install testbed and the tools it drives in a Debian or Ubuntu
# machine (the Vagrant VM, or any VM/host), as root, then check it with
# `testbed doctor`.
#
#   provision.sh [--project DIR] [--venv DIR] [--skip-doctor] [--dry-run]
#
#   --project DIR   the testbed checkout to install (default /vagrant)
#   --venv DIR      where the virtualenv goes (default /opt/testbed/venv); a
#                   `testbed` wrapper calling it is put in /usr/local/bin
#   --skip-doctor   do not run `testbed doctor` at the end (image builds and
#                   chroots, where the kernel is not the one the VM will boot)
#   --dry-run       print what would be done, change nothing
#
# sch_netem: Ubuntu ships it in linux-modules-extra-$(uname -r), which cloud
# images and Vagrant boxes often lack, so it is installed on Ubuntu when the
# running kernel has such a package. Debian has no linux-modules-extra: its
# linux-image packages already carry sch_netem, so the step is skipped there.
# Safe to run again: apt and pip skip what is already there.
set -euo pipefail

project=/vagrant
venv=/opt/testbed/venv
doctor=1
dry_run=0
os_release=${TESTBED_OS_RELEASE:-/etc/os-release}
while [ $# -gt 0 ]; do
  case "$1" in
    --project) project=$2; shift 2 ;;
    --venv) venv=$2; shift 2 ;;
    --skip-doctor) doctor=0; shift ;;
    --dry-run) dry_run=1; shift ;;
    *) echo "provision: unknown option $1" >&2; exit 2 ;;
  esac
done

say() { echo "provision: $*"; }
run() {
  echo "+ $*"
  if [ "$dry_run" = 0 ]; then "$@"; fi
}

if [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
  echo "provision: run as root (Vagrant does: config.vm.provision \"shell\")" >&2
  exit 1
fi
if [ ! -f "$project/pyproject.toml" ]; then
  echo "provision: $project is not a testbed checkout (no pyproject.toml); use --project DIR" >&2
  exit 1
fi

# shellcheck disable=SC1090
. "$os_release"
distro=${ID:-unknown}
case " $distro ${ID_LIKE:-} " in
  *" ubuntu "*|*" debian "*) ;;
  *) echo "provision: $distro is neither Debian nor Ubuntu; install by hand (see README)" >&2
     exit 1 ;;
esac

packages=(iproute2 iperf3 tcpdump iputils-ping ethtool iptables nftables procps kmod
          python3 python3-venv python3-pip ca-certificates)
kernel=$(uname -r)
export DEBIAN_FRONTEND=noninteractive
run apt-get update -qq
if [ "$distro" = ubuntu ]; then
  extra="linux-modules-extra-$kernel"
  if [ "$dry_run" = 1 ] || apt-cache show "$extra" >/dev/null 2>&1; then
    say "Ubuntu: adding $extra (sch_netem lives there)"
    packages+=("$extra")
  else
    say "Ubuntu, but no $extra for this kernel: if 'testbed doctor' lacks netem," \
        "testbed uses its userspace link backend"
  fi
else
  say "$distro: no linux-modules-extra step (its kernel packages carry sch_netem)"
fi
run apt-get install -y -qq --no-install-recommends "${packages[@]}"

say "installing testbed from $project into $venv"
if [ ! -x "$venv/bin/python" ]; then
  run python3 -m venv "$venv"
fi
run "$venv/bin/pip" install -q --disable-pip-version-check "$project"

wrapper=/usr/local/bin/testbed
say "writing $wrapper"
if [ "$dry_run" = 0 ]; then
  mkdir -p "$(dirname "$wrapper")"
  printf '#!/bin/sh\nexec %s/bin/testbed "$@"\n' "$venv" >"$wrapper"
  chmod 755 "$wrapper"
fi

if [ "$dry_run" = 0 ]; then modprobe sch_netem 2>/dev/null || true; fi
if [ "$doctor" = 1 ]; then
  say "checking with testbed doctor"
  run "$wrapper" doctor
fi
say "done: sudo testbed run $project/workloads/cubic-vs-bbr.yaml"
