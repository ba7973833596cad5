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
import socket
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


LIBC = ctypes.CDLL(None, use_errno=True)
MS_RDONLY = 1


def mount(source, target, fstype, flags=0, data=""):
    """mount(2) directly: one exec of mount(8) per share costs ~0.1 s under TCG."""
    os.makedirs(target, exist_ok=True)
    if LIBC.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype} {source} on {target}: {os.strerror(err)}")


def mount_9p(tag, path, readonly):
    # cache=loose on read-only shares: the host side does not change during a run.
    opts = "trans=virtio,version=9p2000.L,msize=262144" + (",cache=loose" if readonly else "")
    mount(tag, path, "9p", MS_RDONLY if readonly else 0, opts)


def power_off():
    sys.stdout.flush()
    sys.stderr.flush()
    os.sync()
    LIBC.reboot(0x4321FEDC)  # LINUX_REBOOT_CMD_POWER_OFF
    # Should not get here; exiting PID 1 panics, and panic=-1 + -no-reboot stops QEMU.
    os._exit(1)


def main():
    with open(f"{RUN}/config.json") as f:
        cfg = json.load(f)
    begin, end = cfg["begin_marker"], cfg["end_marker"]
    rc = 125
    try:
        mount("tmpfs", "/tmp", "tmpfs", 0, "mode=1777")
        mount("tmpfs", "/run", "tmpfs", 0, "mode=755")
        mount("devpts", "/dev/pts", "devpts")
        socket.sethostname("testbed-guest")
        os.makedirs("/run/netns", exist_ok=True)
        for share in cfg["shares"]:
            mount_9p(share["tag"], share["path"], share["readonly"])
        sh(["/usr/sbin/ip", "link", "set", "lo", "up"])
        if cfg["modules"]:
            sh(["/usr/sbin/modprobe", "-a", *cfg["modules"]])
        os.chdir(cfg["cwd"])
        env = dict(cfg["env"])
        boot_s = time.monotonic() - T0
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        print(f"\n{begin} guest-uptime={uptime:.2f}s runner-setup={boot_s:.2f}s", flush=True)
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
