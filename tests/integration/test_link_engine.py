"""One link engine per testbed (userspace backend): multi-hop delay, supervision, teardown."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
from tb_helpers import TIMING, leftovers, run_cli, wait_for

import testbed
from testbed.emulation import enginectl, passcal
from testbed.emulation.delayline import DelayConfig
from testbed.emulation.engine import _COMP_MAX_NS
from testbed.errors import RealizeError
from testbed.realize import state

pytestmark = [pytest.mark.root]

LINE = """
name: leline
nodes:
  h1: {kind: host}
  h2: {kind: host}
{% for i in range(1, routers + 1) %}
  r{{ i }}: {kind: router}
{% endfor %}
links:
  - {endpoints: [h1, r1], delay: 1ms}
{% for i in range(1, routers) %}
  - {endpoints: [r{{ i }}, r{{ i + 1 }}], delay: 1ms}
{% endfor %}
  - {endpoints: [r{{ routers }}, h2], delay: 1ms}
"""


def line(tmp_path, routers: int):
    path = tmp_path / "line.yaml"
    path.write_text("variables: {routers: %d}\n---\n%s" % (routers, LINE))
    return path


def ping_rtts(net, count: int) -> list[float]:
    out = net["h1"].run(["ping", "-c", str(count), "-i", "0.02", "-W", "1", "h2"],
                        check=False).stdout
    return [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]


def engine_of(state_dir) -> enginectl.EngineHandle:
    handle = enginectl.read_handle(enginectl.EngineFiles.of(state_dir))
    assert handle is not None and enginectl.is_running(handle)
    return handle


@TIMING
def test_one_engine_delays_every_hop_of_a_line(tmp_path, clean_instance):
    # 8 routers, 9 links, 18 delayed directions: 18 ms of round trip
    with testbed.up(line(tmp_path, 8), name=clean_instance, link_backend="userspace") as net:
        handle = engine_of(net.state_dir)
        status = enginectl.fresh_status(net.state_dir)
        lanes = status["lanes"]
        assert len(lanes) == 18
        # calibrated at start, and recorded with the testbed (state.json's notes)
        assert status["calibration"]["timer_late_us"]["samples"] == 100
        # and the NFQUEUE pass of a woken arrival, with real packets (passcal.py)
        calibration = status["calibration"]
        assert calibration["pass_error"] is None, calibration
        for side in ("pass_wake_us", "pass_direct_us", "pass_queued_us"):
            assert calibration[side]["samples"] >= passcal.MIN_SAMPLES, calibration
        assert 0 < calibration["pass_us"] <= passcal.PASS_MAX_NS / 1e3
        assert any(n.startswith(f"link engine: pid {handle.pid} serves 18 delayed directions")
                   for n in net.deployed.notes), net.deployed.notes
        rtts = ping_rtts(net, 50)
        assert len(rtts) >= 48
        # the release compensation takes at most _COMP_MAX_NS off a pass (and is recorded);
        # a loaded 2-core machine may add a few hundred us per pass
        status = enginectl.fresh_status(net.state_dir)
        assert 0 <= status["compensation_us"] <= _COMP_MAX_NS / 1e3
        assert min(rtts) >= 18.0 - 18 * _COMP_MAX_NS / 1e6, rtts
        assert sorted(rtts)[len(rtts) // 2] < 18.0 + 3.0, rtts
        # one process holds every queue, and each queue is bound by it
        spaces = [n.netns for n in net.nodes.values()]
        owner = net.nodes["h1"].planned.tag
        assert enginectl.find_engines(spaces, owner) == [handle.pid]
        net.check_links()


def test_a_killed_engine_is_seen_at_once_and_its_links_drop(tmp_path, clean_instance):
    with testbed.up(line(tmp_path, 2), name=clean_instance, link_backend="userspace") as net:
        net.check_links()
        os.kill(engine_of(net.state_dir).pid, signal.SIGKILL)
        wait_for(lambda: not enginectl.is_running(
            enginectl.read_handle(enginectl.EngineFiles.of(net.state_dir))), timeout=5,
            what="the engine to die")
        with pytest.raises(RealizeError, match="link engine .* has died"):
            net.check_links()
        # no bypass: nothing gets through undelayed
        assert ping_rtts(net, 5) == []


def test_kill_9_of_up_then_down_ends_the_engine(tmp_path, clean_instance):
    path = line(tmp_path, 6)
    proc = subprocess.Popen([sys.executable, "-m", "testbed", "up", str(path), "--name",
                             clean_instance, "--link-backend", "userspace"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    files = enginectl.EngineFiles.of(state.instance_dir(clean_instance))
    wait_for(lambda: files.handle.exists() or proc.poll() is not None, timeout=60,
             what="the engine to start")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    handle = enginectl.read_handle(files)
    assert handle is not None and enginectl.is_running(handle)
    run_cli("down", "--name", clean_instance)
    assert not enginectl.is_running(handle)
    assert leftovers(clean_instance) == []


def test_a_lane_the_engine_cannot_open_is_refused_and_the_others_keep_running(tmp_path,
                                                                             clean_instance):
    with testbed.up(line(tmp_path, 2), name=clean_instance, link_backend="userspace") as net:
        handle = engine_of(net.state_dir)
        bad = (f"tb-{clean_instance}-nosuchnode", 10999)
        with pytest.raises(RealizeError, match="could not serve .*nosuchnode"):
            enginectl.put_lanes(net.state_dir, {bad: DelayConfig(delay_us=1000)},
                                owner_tag="x")
        assert engine_of(net.state_dir) == handle
        _gen, lanes = enginectl.read_lanes(enginectl.EngineFiles.of(net.state_dir))
        assert enginectl.lane_key(*bad) not in lanes and len(lanes) == 6
        net.check_links()
        assert len(ping_rtts(net, 5)) == 5
