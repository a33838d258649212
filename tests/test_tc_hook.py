"""hooks/tc.py: XDP and TC runs sharing one runtime, XDP metadata seen by TC, the JIT on __sk_buff."""

from __future__ import annotations

from pathlib import Path

import kernel_fixtures
import pytest
from test_tc_context import ALLOWED, CTX_IN, frame, spec

import xdpsim
from xdpsim.engines.interp import Interpreter
from xdpsim.hooks.tc import TcAction, run_tc
from xdpsim.hooks.xdp import XdpAction, run_xdp
from xdpsim.loader import load_object
from xdpsim.runtime import Runtime

kernel = kernel_fixtures.kernel
PROGRAMS = Path(__file__).resolve().parent.parent / "programs"


def test_xdp_and_tc_alternate_in_one_runtime() -> None:
    from scapy.all import IP, TCP, Ether

    rt = Runtime()
    xdp = rt.load(load_object(PROGRAMS / "parser.o"))
    tc = rt.load(load_object(PROGRAMS / "tc_nat.o"))
    eng = Interpreter()
    pkt = bytes(Ether() / IP(src="10.0.0.1") / TCP(dport=80))
    for _ in range(2):
        a = run_xdp(rt, eng, xdp.programs["packet_parser"], pkt)
        b = run_tc(rt, eng, tc.programs["tc_nat"], pkt)
        assert a.action == XdpAction.XDP_PASS and a.data == pkt and a.error is None
        assert b.action == TcAction.TC_ACT_OK and b.error is None and b.data[26:30] == bytes([192, 0, 2, 1])


def test_xdp_metadata_is_the_skb_data_meta_window() -> None:
    obj = xdpsim.load(spec({"meta_eq": ALLOWED["meta_eq"]}))
    r = run_tc(obj.runtime, Interpreter(), obj.programs["meta_eq"].id, frame(), meta=b"abcdefgh")
    assert r.retval == 8 and r.meta == b"abcdefgh"


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_jit_reads_and_writes_the_context_as_the_interpreter(name: str) -> None:
    obj = xdpsim.load(spec({name: ALLOWED[name]}))
    a = obj.programs[name].run(frame(), engine="interp", **CTX_IN)
    b = obj.programs[name].run(frame(), engine="jit", **CTX_IN)
    assert (a.retval, a.skb) == (b.retval, b.skb) and b.error is None


def test_wire_and_host_skbs() -> None:
    from scapy.all import IP, TCP, Dot1Q, Ether

    from xdpsim.hooks.tc import host_skb, wire_skb

    tagged = bytes(Ether(dst="02:00:00:00:00:09") / Dot1Q(vlan=12, prio=5) / IP() / TCP())
    data, st = wire_skb(tagged, 3, dev_addr=bytes.fromhex("020000000009"))
    assert data == bytes(Ether(dst="02:00:00:00:00:09") / IP() / TCP())
    assert (st.vlan_present, st.vlan_tci, st.vlan_proto) == (True, (5 << 13) | 12, 0x0081)
    assert st.protocol == 0x0008
    assert (st.pkt_type, st.ingress_ifindex, st.ifindex) == (0, 3, 3)
    obj = xdpsim.load(PROGRAMS / "tc_vlan.o")
    r = run_tc(obj.runtime, Interpreter(), obj.programs["tc_vlan"].id, data, skb=st)
    seen = bytes(obj.maps["vlan_seen"][0])
    # the offload tag from the wire is pushed back into the bytes by the program's vlan_push
    assert r.data == tagged and int.from_bytes(seen[4:8], "little") == 100 | (3 << 13)
    data, st = host_skb(bytes(Ether(dst="ff:ff:ff:ff:ff:ff") / IP()), 2, sk_cookie=77)
    assert (st.pkt_type, st.ingress_ifindex, st.sk_cookie) == (0, 0, 77)


def _helper_prog(*helpers: int) -> list:
    import kernel_fixtures as kf

    insns = [kf.movr(6, 1)]
    for h in helpers:
        insns += [kf.movr(1, 6), kf.call(h)]
    return [*insns, kf.exit_()]


def test_socket_cookie_cgroup_id_and_hash() -> None:
    from test_tc_context import spec as mkspec

    from xdpsim.helpers import helper_id
    from xdpsim.hooks.tc import host_skb, wire_skb

    progs = {"cookie": _helper_prog(helper_id("get_socket_cookie")),
             "cgroup": _helper_prog(helper_id("skb_cgroup_id")),
             "rehash": _helper_prog(helper_id("set_hash_invalid"), helper_id("get_hash_recalc"))}
    obj = xdpsim.load(mkspec(progs))
    eng = Interpreter()
    sent, st = host_skb(frame(), 2, sk_cookie=77)
    st.cgroup_id = 5
    got = {n: run_tc(obj.runtime, eng, obj.programs[n].id, sent, skb=st).retval for n in progs}
    assert got["cookie"] == 77 and got["cgroup"] == 5
    rx, st2 = wire_skb(frame(), 1)
    assert run_tc(obj.runtime, eng, obj.programs["cookie"].id, rx, skb=st2).retval == 0  # no socket
    again = run_tc(obj.runtime, eng, obj.programs["rehash"].id, rx, skb=st2).retval
    assert got["rehash"] == again != 0  # xdpsim's own flow hash: deterministic, never 0


def test_skb_cgroup_id_is_allowed_for_tc_by_the_kernel(kernel: str) -> None:
    from test_tc_context import spec as mkspec

    from xdpsim.engines.kernel import verify
    from xdpsim.helpers import helper_id

    res = verify(mkspec({"cgroup": _helper_prog(helper_id("skb_cgroup_id")),
                         "cookie": _helper_prog(helper_id("get_socket_cookie"))}))
    assert all(ok for ok, _ in res.values()), res


class _OneRoute:
    """A route table sending everything out of ifindex 2."""

    def lookup(self, params: bytes, flags: int) -> tuple[int, bytes]:
        return 0, params[:8] + (2).to_bytes(4, "little") + params[12:]


def test_fib_lookup_tc_flavour_checks_the_skb_against_the_egress_mtu() -> None:
    import kernel_fixtures as kf
    from test_tc_context import spec as mkspec

    from xdpsim.helpers import helper_id

    call = [kf.movr(6, 1)] + [kf.st(kf.DW, 10, -64 + 8 * i, 0) for i in range(8)] + [
        kf.movr(1, 6), kf.movr(2, 10), kf.add(2, -64), kf.mov(3, 64), kf.mov(4, 0),
        kf.call(helper_id("fib_lookup"))]
    obj = xdpsim.load(mkspec({"ret": [*call, kf.exit_()],
                              "mtu": [*call, kf.ldx(kf.H, 0, 10, -58), kf.exit_()]}))
    obj.runtime.fib = _OneRoute()
    obj.runtime.mtu[2] = 100
    eng = Interpreter()
    small, big = frame(), frame() + bytes(100)
    assert run_tc(obj.runtime, eng, obj.programs["ret"].id, small).retval == 0
    assert run_tc(obj.runtime, eng, obj.programs["ret"].id, big).retval == 8  # BPF_FIB_LKUP_RET_FRAG_NEEDED
    assert run_tc(obj.runtime, eng, obj.programs["mtu"].id, small).retval == 100
