"""PID 1 of the guest: mount the shares, load modules, run ONE command, power off.

run.py copies this file into the per-run 9p share (mounted at /testbed by the
initramfs) together with config.json, so editing it needs no rebuild. It runs
under the guest's Debian python3 with -I, stdlib only.

The command's output goes to the console (the host streams it between two
marker lines); its exit code is written to /testbed/rc and printed in the
end marker.
"""

import ctypes
import json
import os
import subprocess
import sys
import time

RUN = "/testbed"
T0 = time.monotonic()


def sh(argv, check=True):
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{argv} exited {r.returncode}: {r.stdout.strip()}")
    return r


def mount_9p(tag, path, readonly):
    os.makedirs(path, exist_ok=True)
    opts = "trans=virtio,version=9p2000.L,msize=262144,cache=loose" if readonly else "trans=virtio,version=9p2000.L,msize=262144"
    if readonly:
        opts += ",ro"
    sh(["/usr/bin/mount", "-t", "9p", "-o", opts, tag, path])


def power_off():
    sys.stdout.flush()
    sys.stderr.flush()
    os.sync()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.reboot(0x4321FEDC)  # LINUX_REBOOT_CMD_POWER_OFF
    # Should not get here; exiting PID 1 panics, and panic=-1 + -no-reboot stops QEMU.
    os._exit(1)


def main():
    with open(f"{RUN}/config.json") as f:
        cfg = json.load(f)
    begin, end = cfg["begin_marker"], cfg["end_marker"]
    rc = 125
    try:
        for point, fstype in (("/tmp", "tmpfs"), ("/run", "tmpfs")):
            sh(["/usr/bin/mount", "-t", fstype, fstype, point])
        os.makedirs("/dev/pts", exist_ok=True)
        sh(["/usr/bin/mount", "-t", "devpts", "devpts", "/dev/pts"], check=False)
        os.makedirs("/run/netns", exist_ok=True)
        for share in cfg["shares"]:
            mount_9p(share["tag"], share["path"], share["readonly"])
        sh(["/usr/sbin/ip", "link", "set", "lo", "up"])
        for mod in cfg["modules"]:
            sh(["/usr/sbin/modprobe", mod])
        os.chdir(cfg["cwd"])
        env = dict(cfg["env"])
        boot_s = time.monotonic() - T0
        print(f"\n{begin} guest-setup={boot_s:.2f}s", flush=True)
        try:
            rc = subprocess.run(cfg["argv"], env=env, stdin=subprocess.DEVNULL).returncode
            if rc < 0:  # killed by a signal: report it the way a shell does
                rc = 128 - rc
        except FileNotFoundError as e:
            print(f"testbed-guest: {e}", flush=True)
            rc = 127
    except Exception as e:  # setup failed: say so, still power off
        print(f"\ntestbed-guest: setup failed: {e}", flush=True)
        rc = 125
    finally:
        try:
            with open(f"{RUN}/rc", "w") as f:
                f.write(f"{rc}\n")
        except OSError:
            pass
        print(f"\n{end} rc={rc}", flush=True)
        power_off()


if __name__ == "__main__":
    main()
