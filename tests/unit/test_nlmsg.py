"""testbed.kernel.nlmsg builds the same bytes as pyroute2 and decodes what pyroute2 encodes."""

import ipaddress

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from testbed.kernel import nlmsg


def _encoded(msg, msg_type: int, flags: int, seq: int) -> bytes:
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


FLAGS = nlmsg.NLM_F_REQUEST | nlmsg.NLM_F_ACK | nlmsg.NLM_F_CREATE | nlmsg.NLM_F_EXCL


def test_veth_matches_pyroute2():
    msg = ifinfmsg()
    msg["index"] = 1001
    msg["attrs"] = [
        ("IFLA_IFNAME", "eth0"), ("IFLA_NET_NS_FD", 7), ("IFLA_MTU", 1500),
        ("IFLA_LINKINFO", {"attrs": [
            ("IFLA_INFO_KIND", "veth"),
            ("IFLA_INFO_DATA", {"attrs": [
                ("VETH_INFO_PEER", {"index": 1002, "attrs": [
                    ("IFLA_IFNAME", "eth12"), ("IFLA_NET_NS_FD", 8), ("IFLA_MTU", 1500)]})]})]})]
    ours = nlmsg.message(nlmsg.RTM_NEWLINK, FLAGS, 3,
                         nlmsg.veth("eth0", 1001, 7, "eth12", 1002, 8, 1500))
    assert ours == _encoded(msg, nlmsg.RTM_NEWLINK, FLAGS, 3)


def test_veth_made_up_matches_pyroute2():
    """``ip link add ... up``: flags and change on the first end; the peer's are left 0
    (the kernel would apply them before the pair is joined: ENOTCONN)."""
    msg = ifinfmsg()
    msg["index"] = 1001
    msg["flags"] = msg["change"] = 1
    msg["attrs"] = [
        ("IFLA_IFNAME", "eth0"), ("IFLA_NET_NS_FD", 7), ("IFLA_MTU", 1500),
        ("IFLA_LINKINFO", {"attrs": [
            ("IFLA_INFO_KIND", "veth"),
            ("IFLA_INFO_DATA", {"attrs": [
                ("VETH_INFO_PEER", {"index": 1002, "attrs": [
                    ("IFLA_IFNAME", "eth12"), ("IFLA_NET_NS_FD", 8), ("IFLA_MTU", 1500)]})]})]})]
    ours = nlmsg.message(nlmsg.RTM_NEWLINK, FLAGS, 3,
                         nlmsg.veth("eth0", 1001, 7, "eth12", 1002, 8, 1500, flags=1))
    assert ours == _encoded(msg, nlmsg.RTM_NEWLINK, FLAGS, 3)


@pytest.mark.parametrize("tag", ["testbed.a.h1", "testbed.some-long-instance.r1000"])
def test_altname_matches_pyroute2(tag):
    msg = ifinfmsg()
    msg["index"] = 1
    msg["attrs"] = [("IFLA_PROP_LIST", {"attrs": [("IFLA_ALT_IFNAME", tag)]})]
    ours = nlmsg.message(nlmsg.RTM_NEWLINKPROP, FLAGS, 9, nlmsg.altname(1, tag))
    assert ours == _encoded(msg, nlmsg.RTM_NEWLINKPROP, FLAGS, 9)


def test_up_matches_pyroute2():
    msg = ifinfmsg()
    msg["index"] = 4
    msg["flags"] = 1
    msg["change"] = 1
    flags = nlmsg.NLM_F_REQUEST | nlmsg.NLM_F_ACK
    ours = nlmsg.message(nlmsg.RTM_NEWLINK, flags, 2, nlmsg.ifinfo(4, flags=1, change=1))
    assert ours == _encoded(msg, nlmsg.RTM_NEWLINK, flags, 2)


@pytest.mark.parametrize("text", ["10.0.0.1/30", "fd00:1::1/64"])
def test_address_matches_pyroute2(text):
    iface = ipaddress.ip_interface(text)
    msg = ifaddrmsg()
    msg["family"] = nlmsg.family(iface.version)
    msg["prefixlen"] = iface.network.prefixlen
    msg["index"] = 17
    msg["attrs"] = [("IFA_LOCAL", str(iface.ip)), ("IFA_ADDRESS", str(iface.ip))]
    ours = nlmsg.message(nlmsg.RTM_NEWADDR, FLAGS, 5, nlmsg.address(17, iface))
    assert ours == _encoded(msg, nlmsg.RTM_NEWADDR, FLAGS, 5)


@pytest.mark.parametrize("dst,gw", [("10.0.8.0/30", "10.0.0.2"), ("0.0.0.0/0", "10.0.0.1"),
                                    ("fd00:1:5::/64", "fd00:1::2"), ("::/0", "fd00:1::1")])
def test_route_matches_pyroute2(dst, gw):
    dst_net, gateway = ipaddress.ip_network(dst), ipaddress.ip_address(gw)
    msg = rtmsg()
    msg["family"] = nlmsg.family(dst_net.version)
    msg["dst_len"] = dst_net.prefixlen
    msg["table"] = 254
    msg["proto"] = 4
    msg["type"] = 1
    attrs = [("RTA_GATEWAY", gw), ("RTA_OIF", 3)]
    if dst_net.prefixlen:
        attrs.insert(0, ("RTA_DST", str(dst_net.network_address)))
    msg["attrs"] = attrs
    flags = nlmsg.NLM_F_REQUEST | nlmsg.NLM_F_ACK | nlmsg.NLM_F_CREATE | nlmsg.NLM_F_REPLACE
    ours = nlmsg.message(nlmsg.RTM_NEWROUTE, flags, 6,
                         nlmsg.route(dst_net, gateway, 3, table=254, proto=4, rtype=1))
    assert ours == _encoded(msg, nlmsg.RTM_NEWROUTE, flags, 6)


def test_decodes_link_index_operstate_and_altnames():
    msg = ifinfmsg()
    msg["index"] = 42
    msg["attrs"] = [("IFLA_IFNAME", "lo"), ("IFLA_OPERSTATE", "UP"),
                    ("IFLA_PROP_LIST", {"attrs": [("IFLA_ALT_IFNAME", "testbed.x.h1"),
                                                  ("IFLA_ALT_IFNAME", "other")]})]
    data = _encoded(msg, nlmsg.RTM_NEWLINK, 0, 1)
    assert nlmsg.link_index(data) == 42
    assert nlmsg.operstate(data) == "UP"
    assert nlmsg.altnames(data) == ["testbed.x.h1", "other"]


def test_missing_attributes_decode_as_absent():
    msg = ifinfmsg()
    msg["index"] = 2
    msg["attrs"] = [("IFLA_IFNAME", "eth0")]
    data = _encoded(msg, nlmsg.RTM_NEWLINK, 0, 1)
    assert nlmsg.operstate(data) is None
    assert nlmsg.altnames(data) == []
