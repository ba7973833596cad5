"""testbed doctor fails where /proc/sys is read-only (a container with the
capabilities but not privileged): doctor used to pass there, and every run
then failed on its first sysctl ('Read-only file system: .../accept_dad')."""

from __future__ import annotations

from testbed.realize import doctor


def test_a_read_only_proc_sys_is_a_failure_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(doctor, "SYSCTL_PROBE", tmp_path / "ro" / "ip_forward")
    monkeypatch.setattr(doctor, "_capabilities", lambda: (1 << 12) | (1 << 21))
    monkeypatch.setattr(doctor, "probe_qdiscs", lambda: {"tbf": True, "netem": True})
    checks = {c.name: c for c in doctor.run_checks()}
    assert checks["privileges"].status == "ok"
    assert checks["sysctls"].status == "fail"
    assert "read-only" in checks["sysctls"].detail and "privileged" in checks["sysctls"].fix


def test_a_writable_sysctl_passes(tmp_path):
    probe = tmp_path / "ip_forward"
    probe.write_text("0\n")
    assert doctor.sysctl_check(probe).status == "ok"


def test_doctor_says_where_a_links_aqm_can_run():
    here = doctor.aqm_check({"tbf": True, "netem": False})
    # every aqm runs here (in the engine): ok, not a warning with a "fix"
    assert here.status == "ok" and not here.fix and "bottleneck for every aqm (codel, " \
        "fq_codel, red, pie" in here.detail and "refuse" not in here.detail
    guest = doctor.aqm_check({"tbf": True, "netem": True, "codel": True, "fq_codel": True})
    assert guest.status == "ok" and "codel, fq_codel" in guest.detail
    assert doctor.aqm_check({"netem": False, "fq_codel": True}).status == "ok"
