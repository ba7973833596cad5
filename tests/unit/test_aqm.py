"""The bottleneck queue's discipline: the model (aqm, ecn), the schema, what each backend
does with it (the netem backend's kernel qdisc bytes; the userspace backend's link engine)."""

import struct

import pytest

from testbed.emulation import aqm, links
from testbed.emulation.netem import NetemBackend, resolve as netem_resolve
from testbed.emulation.userspace import UserspaceBackend
from testbed.errors import PreflightError
from testbed.model.impairment import IMPAIRMENT_KEYS, Aqm, Impairment, parse_impairment
from testbed.model.schema import IMPAIRMENT_PROPS
from testbed.instance.network import load_topology
from testbed.model.topology import parse_topology
from testbed.plan.planner import make_plan
from testbed.units import Duration

TICK_IN_USEC = 15.625   # /proc/net/psched here: 1000 ns per us, 64 ns per tick


def imp(**kw):
    return parse_impairment(kw, file="t.yaml", path="links[0]")


def test_a_name_or_a_mapping_and_the_kernel_defaults():
    short = imp(rate="50mbit", aqm="fq_codel")
    assert short.aqm == Aqm("fq_codel")
    assert short.aqm.resolved() == Aqm("fq_codel", Duration(0.005), Duration(0.1), 10240)
    full = imp(rate="50mbit", aqm={"kind": "codel", "target": "2ms", "limit": "500p"}, ecn=True)
    assert full.aqm == Aqm("codel", target=Duration(0.002), limit=500) and full.ecn is True
    assert full.aqm.resolved().interval == Duration(0.1)
    assert Impairment.from_fields(full.as_fields()) == full
    assert "aqm codel (target 2ms, limit 500), ecn" in full.describe()
    assert imp(rate="1mbit", aqm="pie").aqm.resolved().target == Duration(0.015)


def test_link_set_takes_aqm_and_ecn_as_text():
    from testbed.emulation import live
    changed = live.parse_settings(["aqm=codel", "ecn=on"])
    assert changed.aqm == Aqm("codel") and changed.ecn is True


def test_the_schema_lists_every_impairment_key():
    assert tuple(IMPAIRMENT_PROPS) == IMPAIRMENT_KEYS


def u32_attrs(data: bytes) -> dict[int, int]:
    out, i = {}, 0
    while i < len(data):
        length, kind = struct.unpack_from("=HH", data, i)
        assert length == 8
        out[kind] = struct.unpack_from("=I", data, i + 4)[0]
        i += 8
    return out


def test_kernel_qdisc_options_follow_the_uapi_numbers():
    codel = aqm.resolve(Aqm("codel", target=Duration(0.002)), True)
    # TCA_CODEL_TARGET 1, LIMIT 2, INTERVAL 3, ECN 4; times in us
    assert u32_attrs(aqm.options(codel, TICK_IN_USEC)) == {1: 2000, 2: 1000, 3: 100000, 4: 1}
    fq = aqm.resolve(Aqm("fq_codel"), None)
    assert u32_attrs(aqm.options(fq, TICK_IN_USEC)) == {1: 5000, 2: 10240, 3: 100000, 4: 0}
    pie = aqm.resolve(Aqm("pie", limit=200), True)
    # TCA_PIE_TARGET 1, LIMIT 2, TUPDATE 3, ECN 6
    assert u32_attrs(aqm.options(pie, TICK_IN_USEC)) == {1: 15000, 2: 200, 3: 15000, 6: 1}


def test_netem_backend_grafts_the_aqm_under_tbf_and_says_so():
    i = imp(rate="50mbit", delay="20ms", aqm="codel", ecn=True)
    assert netem_resolve(i, None, 1500).aqm == aqm.AqmParams("codel", 5000, 100000, 1000, True)
    steps = [str(s) for s in NetemBackend().plan("ns", "eth0", i, None, 1500)]
    assert any("aqm: codel handle 7466: parent 7463:1 limit 1000p target 5000us "
               "interval 100000us ecn" in s for s in steps), steps
    assert netem_resolve(imp(rate="50mbit", aqm="fifo"), None, 1500).aqm is None


def test_the_userspace_backend_runs_every_discipline_in_the_link_engine(tmp_path):
    """fq_codel and pie were refused ("aqm pie: the link engine's bottleneck has codel, red")."""
    from testbed.model.impairment import AQM_KINDS
    for kind in AQM_KINDS:
        assert UserspaceBackend().unsupported(imp(rate="50mbit", aqm=kind, ecn=kind != "fifo")) \
            == [], kind
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nnodes: {h1: {}, r1: {kind: router}, h2: {}}\n"
                    "links:\n  - {endpoints: [h1, r1]}\n"
                    "  - {endpoints: [r1, h2], rate: 50mbit, aqm: fq_codel}\n")
    plan = make_plan(load_topology(path), "aq")
    selection = links.choose(plan, "userspace")
    assert any("fq_codel (1024 flows, quantum 1514) target 5000us interval 100000us" in s
               for s in links.steps(plan, selection))


def test_pie_and_fq_codel_take_their_defaults_and_an_explicit_limit_in_packets():
    from testbed.emulation.userspace import plan_steps, resolve
    pie = resolve(imp(rate="50mbit", queue="2MB", aqm={"kind": "pie", "limit": "300p"}),
                  None, 1500).delay
    assert (pie.aqm, pie.target_us, pie.interval_us, pie.limit_packets, pie.limit_bytes) == \
        ("pie", 15000.0, 15000.0, 300, 300 * 1514)
    assert any("pie target 15000us tupdate 15000us limit 300p (no tbf)" in str(s)
               for s in plan_steps("ns", "eth0", resolve(imp(rate="50mbit", aqm={
                   "kind": "pie", "limit": "300p"}), None, 1500)))
    fq = resolve(imp(rate="50mbit", queue="2MB", aqm="fq_codel"), None, 1500).delay
    assert (fq.aqm, fq.limit_bytes, fq.limit_packets) == ("fq_codel", 2_000_000, 0)
    assert fq.bottleneck().limit_packets == 0 and pie.bottleneck().limit_packets == 300


def test_with_codel_the_link_engine_is_the_bottleneck_and_there_is_no_tbf():
    from testbed.emulation.userspace import plan_steps, resolve
    plan = resolve(imp(rate="50mbit", delay="20ms", queue="2MB", aqm="codel", ecn=True),
                   Duration(0.04), 1500)
    assert plan.tbf is None and plan.offloads_off
    d = plan.delay
    assert (d.aqm, d.rate_bps, d.limit_bytes, d.target_us, d.interval_us, d.ecn) == \
        ("codel", 50e6, 2_000_000, 5000.0, 100000.0, True)
    steps = [str(s) for s in plan_steps("ns", "eth0", plan)]
    assert any("bottleneck in the link engine: rate 50 Mbit/s, buffer 2000000 B, codel "
               "target 5000us interval 100000us, ECN marks CE" in s for s in steps), steps
    with_limit = resolve(imp(rate="50mbit", aqm={"kind": "red", "limit": 100}), None, 1500)
    assert with_limit.delay.limit_bytes == 100 * 1514 and with_limit.delay.aqm == "red"
    assert resolve(imp(rate="50mbit", aqm="fifo"), None, 1500).tbf is not None


def test_the_bufferbloat_workload_asks_for_what_it_says():
    """workloads/bufferbloat.yaml: fifo vs codel vs fq_codel, with and without ECN."""
    from pathlib import Path

    from testbed.model.document import Document
    from testbed.workload.loader import load_workload
    path = Path(__file__).resolve().parents[2] / "workloads" / "bufferbloat.yaml"
    seen = {}
    for kind in ("fifo", "codel", "fq_codel"):
        for ecn in ("off", "on"):
            wl = load_workload(path, {"aqm": kind, "ecn": ecn})
            topo = parse_topology(Document(file=str(path), data=wl.topology_inline, lines={},
                                           text=""))
            link = next(l for l in topo.links if l.name == "r1-r2")
            hosts = {n.name: dict(n.sysctls) for n in topo.nodes.values() if n.kind == "host"}
            seen[kind, ecn] = (link.forward.aqm.kind, link.forward.ecn,
                               all(s.get("net.ipv4.tcp_ecn") == "1" for s in hosts.values()))
    assert seen[("fifo", "on")] == ("fifo", None, True)
    assert seen[("codel", "on")] == ("codel", True, True)
    assert seen[("fq_codel", "off")] == ("fq_codel", None, False)


def test_status_names_the_engine_and_how_many_directions_are_bottlenecks(tmp_path):
    import json

    from testbed.emulation import enginectl
    from testbed.instance import status
    files = enginectl.EngineFiles.of(tmp_path)
    files.directory.mkdir(parents=True)
    files.handle.write_text(json.dumps({"pid": 999999999, "start_time": 1, "netns": "x"}))
    files.status.write_text(json.dumps({"lanes": {"x/1": {"bottleneck": None},
                                                  "x/2": {"bottleneck": {"marks": 3}}}}))
    engine = status._engine(tmp_path)
    assert engine == {"pid": 999999999, "alive": False, "lanes": 2, "bottlenecks": 1}
    text = status.render({"instances": [{
        "name": "t", "complete": True, "topology": "t", "file": "t.yaml",
        "link_backend": "userspace", "nodes": {}, "links": [], "link_engine": engine}]})
    assert "link engine: pid 999999999, DEAD: emulated links drop, 2 directions, 1 of them " \
        "bottlenecks" in text


def test_the_aqm_handle_is_not_one_tbf_grafts_its_fresh_fifos_at():
    """They were the same (7464:): a rate change that shrank tbf's burst grafted a bfifo
    there, and the netem backend read it back as the link's discipline (the guest's
    netem test failed with "reads back as {'kind': 'bfifo'}")."""
    from testbed.emulation import aqm, tbf
    assert aqm.AQM_HANDLE not in tbf.FIFO_HANDLES


def test_another_kind_of_aqm_takes_a_fresh_queue_first():
    """`link set aqm=fq_codel` on a codel link failed in the guest: "fq_codel qdisc refused:
    Invalid argument" (the kernel changes a qdisc in place only into its own kind)."""
    assert aqm.needs_fresh_queue("codel", "fq_codel")
    assert aqm.needs_fresh_queue("red", None)           # an AQM taken away: tbf's fifo again
    assert not aqm.needs_fresh_queue("codel", "codel")  # new parameters: changed in place
    assert not aqm.needs_fresh_queue(None, "red")       # nothing there yet: grafted


def test_an_aqm_acts_per_packet_so_offloads_go_off():
    """With the sender's TSO on, the AQM dropped or marked ~5.7 kB aggregates (a new user
    counted 4 drops costing 15 retransmitted segments); a real bottleneck sees packets."""
    assert imp(rate="50mbit", aqm="codel").acts_per_packet
    assert imp(rate="50mbit", aqm="fq_codel", ecn=True).acts_per_packet
    assert not imp(rate="50mbit", aqm="fifo").acts_per_packet
    assert not imp(rate="50mbit").acts_per_packet
