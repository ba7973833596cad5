"""Running testbed inside QEMU guests on other kernels (``run --kernel``).

- ``build``: the guest builder (stdlib only; ``vagrant/guest/build.py`` runs it from a
  checkout): a Debian kernel image package extracted, a debootstrap'ed root shared by
  every kernel, each kernel's modules, an ext4 image and an initramfs, cached.
- ``guest_init``: PID 1 inside the guest; copied into each boot.
- ``vm``: booting a built guest to run ONE command, with a timeout that leaves nothing
  behind; KVM when it really boots, else TCG.
- ``catalog``: which kernels a run can use (``host``, apt-cache's images, the cache).
- ``record``: what a run directory records about the kernel it ran on.
- ``runner``: a workload's runs on each kernel, brought home like remote runs.
"""
