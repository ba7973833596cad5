"""run --kernel and 'testbed kernels' without booting anything: choosing kernels, the
command line, the record a run gets, bringing runs home, and a hung "guest" killed at
its timeout (a stand-in process for QEMU: the timeout logic is the same)."""

from __future__ import annotations

import gzip
import json
import os
import sys
import time
from pathlib import Path

import pytest

from testbed.cli import kernels as cli_kernels
from testbed.cli import main as cli
from testbed.errors import ConfigError
from testbed.guest import build, catalog, record, runner, vm

APT = """\
linux-image-6.1.0-47-amd64 - Linux 6.1 for 64-bit PCs (signed)
linux-image-6.1.0-57-amd64 - Linux 6.1 for 64-bit PCs (signed)
linux-image-6.1.0-57-cloud-amd64 - Linux 6.1 for x86-64 cloud (signed)
linux-image-6.1.0-57-rt-amd64 - Linux 6.1 for 64-bit PCs, PREEMPT_RT (signed)
linux-image-6.12-amd64 - Linux for 64-bit PCs (meta-package)
linux-image-6.12.100+deb12-amd64 - Linux 6.12 for 64-bit PCs (signed)
linux-image-6.12.117+deb12-amd64 - Linux 6.12 for 64-bit PCs (signed)
linux-image-6.12.117+deb12-rt-amd64 - Linux 6.12 for 64-bit PCs (signed), PREEMPT_RT
"""
REPO = Path(__file__).resolve().parents[2]
WORKLOAD = str(REPO / "workloads/cubic-vs-bbr.yaml")


def test_apt_search_gives_versions_and_flavours_not_meta_packages():
    found = catalog.parse_apt_search(APT)
    names = [k.name for k in found]
    assert "6.12-generic" not in names and len(found) == 7
    assert names[-1] in ("6.12.117+deb12-generic", "6.12.117+deb12-rt")
    k = catalog.parse_package("linux-image-6.1.0-57-cloud-amd64")
    assert (k.version, k.flavour, k.series) == ("6.1.0-57", "cloud", "6.1")
    assert k.package == "linux-image-6.1.0-57-cloud-amd64"
    assert catalog.Kernel("6.12.117+deb12", "generic").package == "linux-image-6.12.117+deb12-amd64"


@pytest.mark.parametrize("choice, built, expected", [
    ("6.1", [], "6.1.0-57-generic"),                      # newest of the series
    ("6.12", [], "6.12.117+deb12-generic"),
    ("6.12-rt", [], "6.12.117+deb12-rt"),
    ("6.1.0-47", [], "6.1.0-47-generic"),                 # an exact version
    ("6.1", ["6.1.0-47-generic"], "6.1.0-47-generic"),    # what is built beats a newer package
    ("6.1-cloud", [], "6.1.0-57-cloud"),
])
def test_a_choice_resolves_to_one_kernel(choice, built, expected):
    offered = catalog.parse_apt_search(APT)
    built_kernels = [catalog.Kernel(*b.rsplit("-", 1)) for b in built]
    assert catalog.resolve(choice, offered, built_kernels).name == expected


def test_a_missing_kernel_is_an_error_listing_what_there_is():
    offered = catalog.parse_apt_search(APT)
    with pytest.raises(ConfigError) as exc:
        catalog.resolve("6.6", offered, [catalog.Kernel("6.1.0-57", "generic")])
    message = str(exc.value)
    assert message.startswith("--kernel 6.6: no such kernel; available: host, 6.1, 6.1-cloud, "
                              "6.1-rt, 6.12, 6.12-rt (built: 6.1.0-57-generic)"), message
    with pytest.raises(ConfigError, match="expected 'host', a series"):
        catalog.resolve("latest", offered, [])


def test_a_missing_kernel_on_the_command_line_exits_2_before_anything_boots(monkeypatch, capsys,
                                                                             tmp_path):
    monkeypatch.setattr(catalog, "available", lambda: catalog.parse_apt_search(APT))
    monkeypatch.setenv("TESTBED_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setattr(runner, "run_on_kernels", lambda *a, **k: pytest.fail("ran"))
    code = cli.main(["run", WORKLOAD, "--kernel", "host", "--kernel", "5.10"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--kernel 5.10: no such kernel; available: host, 6.1, 6.1-cloud" in err, err
    assert list(tmp_path.iterdir()) == []


def test_only_built_kernels_count_as_cached(tmp_path):
    done = tmp_path / "6.1.0-57-generic"
    half = tmp_path / "6.12.117+deb12-rt"
    for d in (done, half, tmp_path / "base-bookworm"):
        d.mkdir()
    for name in ("vmlinux", "rootfs.ext4", "initramfs.cpio.gz"):
        (done / f"{name}.key").write_text("k")
    (half / "vmlinux.key").write_text("k")    # a build that stopped half-way
    assert [k.name for k in catalog.cached(tmp_path)] == ["6.1.0-57-generic"]


@pytest.mark.parametrize("argv, message", [
    (["--kernel", "6.1", "--testbed", "kgx"], "not with --testbed"),
    (["--kernel", "6.1", "--kernel", "6.1"], "--kernel 6.1 given twice"),
    (["--kernel", "6.1", "--vcpus", "0"], "--vcpus 0: must be more than 0"),
    (["--kernel", "6.1", "--guest-memory", "lots"], "--guest-memory 'lots': expected a number"),
    (["--kernel", "6.1", "--accel", "xen"], "--accel 'xen': expected auto, kvm, tcg"),
    (["--kernel", "6.1", "--host", "nobody@192.0.2.1"], "not with --host/--hosts"),
])
def test_run_kernel_refuses_bad_options_before_anything_runs(monkeypatch, capsys, argv, message):
    monkeypatch.setattr(catalog, "available", lambda: catalog.parse_apt_search(APT))
    monkeypatch.setattr(runner, "run_on_kernels", lambda *a, **k: pytest.fail("ran"))
    code = cli.main(["run", WORKLOAD, *argv])
    assert code == 2, capsys.readouterr()
    assert message in capsys.readouterr().err


def test_kernel_options_come_out_of_the_argv_wherever_they_are():
    found, rest = cli_kernels.split_argv(
        ["run", "--kernel=host", "W.yaml", "--kernel", "6.12", "--vcpus", "2", "--set", "a=1",
         "--", "--kernel", "x"])
    assert found == {"kernels": ["host", "6.12"], "vcpus": 2}
    assert rest == ["run", "W.yaml", "--set", "a=1", "--", "--kernel", "x"]
    assert cli_kernels.wants_kernels(["run", "W", "--kernel", "6.1"])
    assert not cli_kernels.wants_kernels(["run", "W", "--", "--kernel", "6.1"])


def test_kernel_is_an_option_of_run_only(capsys):
    assert cli.main(["--kernel", "6.1", "status"]) == 2
    assert "--kernel is an option of 'run'" in capsys.readouterr().err


def _run_dir(root: Path, workload: str, run_id: str) -> Path:
    d = root / workload / run_id
    (d / "raw").mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps({"kernel": {"release": "6.1.0-57-amd64"}}))
    return d


def test_guest_runs_come_home_with_their_kernel_recorded(tmp_path):
    results, output = tmp_path / "stage", tmp_path / "out"
    _run_dir(results, "cubic-vs-bbr", "20260101T000000Z-aaaaaa")
    kernel = record.KernelRecord(flavour="generic", mode="tcg", config_hash="0123456789abcdef",
                                 package="linux-image-6.1.0-57-amd64")
    guest = record.GuestRecord(kernel="6.1.0-57-generic", package=kernel.package,
                               release="6.1.0-57-amd64", accel="tcg", vcpus=1, memory_mib=1024,
                               boot_s=5.0, accel_note="no /dev/kvm")
    dirs = runner._bring_home(results, output, kernel, guest)
    assert dirs == [output / "cubic-vs-bbr" / "20260101T000000Z-aaaaaa"]
    assert not (results / "cubic-vs-bbr" / "20260101T000000Z-aaaaaa").exists()
    manifest = json.loads((dirs[0] / "manifest.json").read_text())
    assert manifest["kernel"] == {"release": "6.1.0-57-amd64", "flavour": "generic",
                                  "mode": "tcg", "config_hash": "0123456789abcdef",
                                  "package": "linux-image-6.1.0-57-amd64"}
    assert json.loads((dirs[0] / "guest.json").read_text())["accel"] == "tcg"


def test_a_run_id_that_would_leave_the_output_is_refused(tmp_path):
    results = tmp_path / "stage"
    (results / "wl").mkdir(parents=True)
    (results / "wl" / "evil").symlink_to("/etc")
    (tmp_path / "out" / "wl").mkdir(parents=True)
    (tmp_path / "out" / "wl" / "evil").symlink_to("/")
    kernel = record.KernelRecord("generic", "tcg", None)
    with pytest.raises(ConfigError, match="cannot be used as a name"):
        runner._bring_home(results, tmp_path / "out", kernel, None)  # type: ignore[arg-type]


def test_config_hash_reads_plain_and_gzipped_configs(tmp_path):
    plain, packed = tmp_path / "config", tmp_path / "config.gz"
    plain.write_bytes(b"CONFIG_NET_SCH_NETEM=m\n")
    packed.write_bytes(gzip.compress(b"CONFIG_NET_SCH_NETEM=m\n"))
    assert record.config_hash(plain) == record.config_hash(packed)
    assert len(record.config_hash(plain) or "") == 16
    assert record.config_hash(tmp_path / "missing") is None


def test_host_flavour_from_the_release():
    assert catalog.host_flavour("6.1.0-57-cloud-amd64") == "cloud"
    assert catalog.host_flavour("6.12.117+deb12-rt-amd64") == "rt"
    assert catalog.host_flavour("6.18.44-fc-v657") == "generic"


def test_guest_argv_points_at_the_shipped_workload_and_the_shared_results(tmp_path):
    wl_dir, topo_dir = tmp_path / "w" / "workloads", tmp_path / "w" / "topologies"
    wl_dir.mkdir(parents=True)
    topo_dir.mkdir()
    (wl_dir / "x.yaml").write_text("a")
    (topo_dir / "t.yaml").write_text("b")
    mapping = runner._ship([wl_dir / "x.yaml", topo_dir / "t.yaml"], tmp_path / "stage" / "in")
    assert (tmp_path / "stage/in/workloads/x.yaml").read_text() == "a"
    assert mapping[(topo_dir / "t.yaml").resolve()] == "/out/in/topologies/t.yaml"


def test_qemu_argv_uses_the_host_cpu_only_under_kvm(tmp_path):
    guest = build.Guest(tmp_path / "k", tmp_path / "i", tmp_path / "r", "6.1.0-57-amd64")
    share = vm.Share("out", tmp_path, "/out", False)
    kvm = vm.qemu_argv(guest, tmp_path, [share], vm.Machine("kvm", 2048, 2))
    tcg = vm.qemu_argv(guest, tmp_path, [share], vm.Machine())
    assert kvm[kvm.index("-accel") + 1] == "kvm" and kvm[kvm.index("-cpu") + 1] == "host"
    assert kvm[kvm.index("-m") + 1] == "2048" and kvm[kvm.index("-smp") + 1] == "2"
    assert tcg[tcg.index("-accel") + 1] == "tcg" and tcg[tcg.index("-cpu") + 1] == "max"
    assert f"local,path={tmp_path},mount_tag=out,security_model=none" in kvm


def test_the_console_splits_boot_log_command_output_and_exit_code():
    out: list[str] = []
    console = vm._Console(("@@b@@", "@@e@@"), out.append, None)
    for line in ["SeaBIOS", "@@b@@ guest-uptime=1s", "hello", "@@e@@ rc=3", "reboot: Power down"]:
        console.line(line)
    assert (console.boot_log, out, console.end_rc, console.state) == (["SeaBIOS"], ["hello"], 3,
                                                                      "done")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_hung_guest_is_killed_at_the_timeout(tmp_path):
    # a "QEMU" that boots (prints the begin marker) and then hangs in its command
    pidfile = tmp_path / "pid"
    hang = ("import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); "
            "print('@@b@@', flush=True); time.sleep(300)")
    t0 = time.monotonic()
    result = vm.boot([sys.executable, "-c", hang, str(pidfile)], tmp_path, ("@@b@@", "@@e@@"),
                     timeout=2.0, out=lambda line: None)
    assert result.returncode == vm.TIMED_OUT and result.timed_out
    assert result.boot_s is not None          # it hung in the command, not while booting
    assert time.monotonic() - t0 < 10
    assert not _alive(int(pidfile.read_text()))


def test_a_guest_that_stops_without_an_exit_code_is_125(tmp_path):
    result = vm.boot([sys.executable, "-c", "print('kernel panic')"], tmp_path,
                     ("@@b@@", "@@e@@"), timeout=30, out=lambda line: None)
    assert result.returncode == vm.GUEST_FAILED and result.boot_log == ["kernel panic"]


def test_progress_redrawn_with_cr_shows_its_last_state():
    seen: list[str] = []
    write = runner._prefixed(seen.append, "[k] ")
    write("t=0/5s\rt=1/5s  \r   ")
    write("")
    assert seen == ["[k] t=1/5s"]


def test_kvm_is_tried_once_per_command_and_its_absence_warned(monkeypatch, tmp_path):
    tries: list[object] = []
    monkeypatch.setattr(vm, "kvm_works", lambda guest: tries.append(guest) or "it hangs")
    logged: list[str] = []
    choose = runner._AccelChoice("auto", logged.append)
    guest = build.Guest(tmp_path / "k", tmp_path / "i", tmp_path / "r", "6.1.0-57-amd64")
    assert choose(guest) == ("tcg", "it hangs") and choose(guest) == ("tcg", "it hangs")
    assert len(tries) == 1 and len(logged) == 1 and "WARNING: KVM unusable" in logged[0]
    with pytest.raises(Exception, match="--accel kvm: KVM does not work here: it hangs"):
        runner._AccelChoice("kvm", logged.append)(guest)
    assert runner._AccelChoice("tcg", logged.append)(guest) == ("tcg", "--accel tcg")
    assert len(tries) == 2


def test_kvm_is_used_when_a_guest_boots_with_it(monkeypatch, tmp_path):
    monkeypatch.setattr(vm, "kvm_works", lambda guest: None)
    guest = build.Guest(tmp_path / "k", tmp_path / "i", tmp_path / "r", "6.1.0-57-amd64")
    assert runner._AccelChoice("auto", pytest.fail)(guest) == ("kvm", None)


@pytest.mark.parametrize("packer", ["xz", "gzip", "zstd"])
def test_the_elf_kernel_is_found_inside_a_bzimage_of_each_compression(packer):
    import lzma
    import shutil
    import subprocess
    elf = b"\x7fELF" + os.urandom(4096)
    if packer == "zstd":  # Debian's 6.12 kernels: the old builder found no ELF in them
        if not shutil.which("zstd"):
            pytest.skip("zstd not installed")
        packed = subprocess.run(["zstd", "-c"], input=elf, capture_output=True, check=True).stdout
    else:
        packed = lzma.compress(elf, format=lzma.FORMAT_XZ) if packer == "xz" else \
            gzip.compress(elf)
    bzimage = b"MZ setup code" + os.urandom(512) + packed + b"\0trailer" * 64
    assert build.find_elf(bzimage) == elf
    assert build.find_elf(b"MZ no kernel here") is None


def test_kernels_lists_host_what_is_built_with_its_size_and_what_is_offered(monkeypatch, capsys,
                                                                          tmp_path):
    monkeypatch.setattr(catalog, "available", lambda: catalog.parse_apt_search(APT))
    monkeypatch.setenv("TESTBED_KERNEL_CACHE", str(tmp_path))
    built = tmp_path / "6.1.0-57-generic"
    built.mkdir()
    for name in ("vmlinux", "rootfs.ext4", "initramfs.cpio.gz"):
        (built / f"{name}.key").write_text("k")
    (built / "vmlinux").write_bytes(b"\0" * (3 << 20))
    assert cli.main(["kernels"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"host      {os.uname().release}")
    assert out[1].split()[:4] == ["built", "6.1.0-57-generic", "3", "MiB"]
    offered = [line.split()[1] for line in out if line.startswith("offered")]
    assert offered == ["6.1", "6.1-cloud", "6.1-rt", "6.12", "6.12-rt"]
    assert "newest 6.1.0-57 (built;" in next(l for l in out if l.startswith("offered   6.1 "))


def test_a_guest_gets_time_for_every_run_it_holds(tmp_path):
    from testbed.remote.workload import remote_run
    one = remote_run(["run", WORKLOAD], Path(WORKLOAD), variables={"mix": "shared"}, repeat=1,
                     output=tmp_path, instance=None, attached=False)
    all_three = remote_run(["run", WORKLOAD], Path(WORKLOAD), variables={"duration": "100s"},
                           repeat=2, output=tmp_path, instance=None, attached=False)
    assert runner.guest_timeout(one) == runner.BOOT_MARGIN + 3 * 10 + 60
    assert runner.guest_timeout(all_three) == runner.BOOT_MARGIN + 6 * (3 * 100 + 60)


def test_ctrl_c_while_a_guest_runs_kills_it(tmp_path):
    pidfile = tmp_path / "pid"
    busy = ("import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); "
            "print('@@b@@', flush=True); print('working', flush=True); time.sleep(300)")

    def interrupt(line: str) -> None:
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        vm.boot([sys.executable, "-c", busy, str(pidfile)], tmp_path, ("@@b@@", "@@e@@"),
                timeout=60, out=interrupt)
    assert not _alive(int(pidfile.read_text()))
