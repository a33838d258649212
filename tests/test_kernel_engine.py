"""The kernel engine (KernelCollection) over hand-made ObjectSpecs, and what it tells about the kernel.

Measured on Linux 6.18 and asserted here:
- MAX_TAIL_CALL_CNT is 33: a program tail-calling itself runs 34 times (1 + 33 tail calls).
- Per-CPU values come as one value per possible CPU, each rounded up to 8 bytes, CPU i at index i.
- The XDP frame of a test run: 256 bytes of headroom of which 216 are usable (40 for struct xdp_frame),
  3520 bytes of linear packet at most, metadata up to 216 bytes (adjust_meta and ctx_in alike).
"""

from __future__ import annotations

import errno
import os
import struct

import kernel_fixtures
import pytest
from kernel_fixtures import (
    DW,
    GET_SMP_PROCESSOR_ID,
    TAIL_CALL,
    XDP_ADJUST_HEAD,
    XDP_ADJUST_META,
    XDP_ADJUST_TAIL,
    W,
    add,
    addr,
    array,
    atomic_add64,
    call,
    exit_,
    jeq,
    ld_map,
    ld_map_value,
    ldx,
    ldxsw,
    lookup0,
    mov,
    movr,
    mul,
    obj,
    st,
    stx,
    subr,
    tc_prog,
    tiny_btf,
    xdp_prog,
)

from xdpsim.engines.kernel import (
    KernelCollection,
    expected_attach_type,
    log_source_line,
    refusal_message,
    verify,
)
from xdpsim.errors import KernelError, LoadError, MapError
from xdpsim.kernel import bpf
from xdpsim.spec import FuncInfo, LineInfo, MapSpec, MapType

# --- tail calls --------------------------------------------------------------------------------------


# The fixtures (conftest.py may import them too; these are the same objects).
kernel = kernel_fixtures.kernel
netns_ok = kernel_fixtures.netns_ok



def chain_obj():
    """`chain` counts its runs in counter[0], then tail-calls jmp[0] (itself, declaratively)."""
    chain = xdp_prog("chain", [
        movr(6, 1),
        *lookup0(0, 2),
        mov(1, 1),
        atomic_add64(0, 1, 0),
        movr(1, 6),
        *ld_map(2, 1),
        mov(3, 0),
        call(TAIL_CALL),
        mov(0, 2),
        exit_(),
    ])
    jmp = MapSpec("jmp", MapType.PROG_ARRAY, 4, 4, 1, init_slots={0: "chain"})
    return obj([chain], [array("counter"), jmp])


def counter(kc: KernelCollection) -> int:
    return struct.unpack("<Q", kc.read_map("counter")[bytes(4)])[0]


def test_tail_call_limit_is_33(kernel):
    with KernelCollection(chain_obj()) as kc:
        assert kc.prog_array_slots("jmp") == {0: "chain"}
        run = kc.run_xdp("chain", bytes(64))
        assert run.retval == 2  # the 34th tail call falls through to `return XDP_PASS`
        assert counter(kc) == 1 + 33
        # the syscall reads a prog array slot back as the kernel's program id
        assert kc.read_map("jmp") == {bytes(4): kc.programs["chain"].id.to_bytes(4, "little")}
        assert kc.maps["jmp"].to_json() == {"type": "prog_array", "entries": {"00000000": "chain"}}
        kc.set_prog_slot("jmp", 0, None)  # an empty slot falls through at once
        kc.run_xdp("chain", bytes(64))
        assert counter(kc) == 34 + 1
        assert kc.prog_array_slots("jmp") == {}
        kc.set_prog_slot("jmp", 0, "chain")
        kc.run_xdp("chain", bytes(64))
        assert counter(kc) == 35 + 34


def test_only_some_programs(kernel):
    with KernelCollection(chain_obj(), programs=[]) as kc:
        assert kc.programs == {}
        assert any("not loaded" in n for n in kc.notes)
        with pytest.raises(KeyError):
            kc.run_xdp("chain", bytes(64))
    with pytest.raises(LoadError):
        KernelCollection(chain_obj(), programs=["nope"])


# --- per-CPU maps --------------------------------------------------------------------------------------


def test_percpu_layout_one_padded_value_per_possible_cpu(kernel):
    # pcpu[0] on this CPU: +4 = 100 + cpu id, +8 = 0x11223344 (value_size 12)
    prog = xdp_prog("pc", [
        *lookup0(0, 5),
        movr(6, 0),
        call(GET_SMP_PROCESSOR_ID),
        add(0, 100),
        stx(W, 6, 0, 4),
        st(W, 6, 8, 0x11223344),
        mov(0, 2),
        exit_(),
    ])
    n = bpf.possible_cpus()
    with KernelCollection(obj([prog], [MapSpec("pcpu", MapType.PERCPU_ARRAY, 4, 12, 1)])) as kc:
        home = os.sched_getaffinity(0)
        try:
            for cpu in sorted(home):
                os.sched_setaffinity(0, {cpu})  # a test run runs on the caller's CPU
                kc.run_xdp("pc", bytes(14))
        finally:
            os.sched_setaffinity(0, home)
        values = kc.read_map("pcpu")[bytes(4)]
        assert isinstance(values, list) and len(values) == n
        for cpu, v in enumerate(values):
            assert len(v) == 16  # 12 rounded up to 8
            if cpu in home:
                assert v == struct.pack("<III", 0, 100 + cpu, 0x11223344) + bytes(4)
            else:
                assert v == bytes(16)
        # user-space updates: a list, the flat buffer, or one value for every CPU
        m = kc.maps["pcpu"]
        m.update(0, [struct.pack("<III", c, c, c) for c in range(n)])
        assert m[0] == [struct.pack("<III", c, c, c) + bytes(4) for c in range(n)]
        m.update(0, bytes(12))
        assert m[0] == [bytes(16)] * n
        with pytest.raises(MapError):
            m.update(0, [bytes(12)] * (n + 1))


# --- the XDP frame -----------------------------------------------------------------------------------


def adj(helper: int):
    """Calls `helper(ctx, cfg[0].delta)` (s32 at +0), stores the result at +8, returns data_end - data."""
    return xdp_prog(f"adj{helper}", [
        movr(6, 1),
        *lookup0(0, 9),
        movr(7, 0),
        ldxsw(2, 7, 0),
        movr(1, 6),
        call(helper),
        stx(DW, 7, 0, 8),
        ldx(W, 2, 6, 4),
        ldx(W, 3, 6, 0),
        subr(2, 3),
        movr(0, 2),
        exit_(),
    ])


@pytest.fixture(scope="module")
def frame(kernel):
    o = obj([adj(XDP_ADJUST_HEAD), adj(XDP_ADJUST_TAIL), adj(XDP_ADJUST_META)], [array("cfg", 16)])
    with KernelCollection(o) as kc:

        def probe(helper: int, delta: int, size: int = 64, meta: bytes = b""):
            kc.set_map_entry("cfg", 0, struct.pack("<iiq", delta, 0, 0))
            run = kc.run_xdp(f"adj{helper}", bytes(range(256)) * (size // 256) + bytes(range(size % 256)),
                             meta=meta)
            result = struct.unpack("<iiq", kc.read_map("cfg")[bytes(4)])[2]
            return result, run

        yield probe


def test_headroom(frame):
    ok, run = frame(XDP_ADJUST_HEAD, -216)
    assert ok == 0 and run.retval == 64 + 216 and run.data_out[216:] == bytes(range(64))
    assert run.data_out[:216] == bytes(216)  # grown head reads as zeros
    assert frame(XDP_ADJUST_HEAD, -217)[0] == -errno.EINVAL
    assert frame(XDP_ADJUST_HEAD, 50)[0] == 0  # 14 bytes must stay
    assert frame(XDP_ADJUST_HEAD, 51)[0] == -errno.EINVAL


def test_tailroom(frame):
    ok, run = frame(XDP_ADJUST_TAIL, 3520 - 64)
    assert ok == 0 and run.retval == 3520 and len(run.data_out) == 3520
    assert run.data_out[64:] == bytes(3520 - 64)
    assert frame(XDP_ADJUST_TAIL, 3520 - 64 + 1)[0] == -errno.EINVAL
    assert frame(XDP_ADJUST_TAIL, -50)[0] == 0
    assert frame(XDP_ADJUST_TAIL, -51)[0] == -errno.EINVAL
    # beyond 3520 bytes the rest is in fragments, and adjust_tail works on the last one
    ok, run = frame(XDP_ADJUST_TAIL, 10, size=4000)
    assert ok == 0 and run.retval == 3520 and len(run.data_out) == 4010


def test_metadata(frame):
    ok, run = frame(XDP_ADJUST_META, -216)
    assert ok == 0 and len(run.meta) == 216 and run.data_out == bytes(range(64))
    assert frame(XDP_ADJUST_META, -220)[0] == -errno.EINVAL
    # metadata handed in through ctx_in: the same 216-byte ceiling
    ok, run = frame(XDP_ADJUST_HEAD, 0, meta=bytes(range(216)))
    assert ok == 0 and run.meta == bytes(range(216)) and run.data_out == bytes(range(64))
    with pytest.raises(KernelError) as ei:
        frame(XDP_ADJUST_HEAD, 0, meta=bytes(220))
    assert ei.value.errno == errno.EINVAL
    # the metadata comes out of the headroom
    assert frame(XDP_ADJUST_HEAD, -212, meta=bytes(4))[0] == 0
    assert frame(XDP_ADJUST_HEAD, -213, meta=bytes(4))[0] == -errno.EINVAL


# --- global data, maps of maps -------------------------------------------------------------------


def test_global_data_and_frozen_rodata(kernel):
    # returns *(u32 *)(.rodata + 4) + *(u32 *)(.data + 0)
    prog = xdp_prog("g", [
        *ld_map_value(1, 0, 4),
        ldx(W, 0, 1, 0),
        *ld_map_value(2, 1, 0),
        ldx(W, 2, 2, 0),
        movr(3, 0),
        addr(3, 2),
        movr(0, 3),
        exit_(),
    ])
    ro = MapSpec(".rodata", MapType.ARRAY, 4, 8, 1, initial=struct.pack("<II", 1, 40), frozen=True,
                 section=".rodata")
    data = MapSpec(".data", MapType.ARRAY, 4, 4, 1, initial=struct.pack("<I", 2), section=".data")
    with KernelCollection(obj([prog], [ro, data])) as kc:
        assert kc.run_xdp("g", bytes(14)).retval == 42
        with pytest.raises(MapError) as ei:
            kc.set_map_entry(".rodata", 0, bytes(8))
        assert ei.value.errno == errno.EPERM
        assert bpf.map_info(kc.maps[".rodata"].fd.fd)["flags"] & bpf.BPF_F_RDONLY_PROG
        kc.set_map_entry(".data", 0, 5)
        assert kc.run_xdp("g", bytes(14)).retval == 45


def test_map_of_maps(kernel):
    # inner = outer[0]; return inner ? *(u32 *)inner[0] : 1
    prog = xdp_prog("mm", [
        *lookup0(0, 8),
        movr(1, 0),
        st(W, 10, -8, 0),
        movr(2, 10),
        add(2, -8),
        call(1),
        jeq(0, 0, 2),
        ldx(W, 0, 0, 0),
        exit_(),
        mov(0, 1),
        exit_(),
    ])
    inner = array("inner", 4)
    outer = MapSpec("outer", MapType.ARRAY_OF_MAPS, 4, 4, 2, inner=array("tmpl", 4), init_slots={0: "inner"})
    with KernelCollection(obj([prog], [outer, inner])) as kc:
        kc.set_map_entry("inner", 0, 33)
        assert kc.run_xdp("mm", bytes(14)).retval == 33
        assert kc.read_map("outer") == {bytes(4): kc.maps["inner"].id.to_bytes(4, "little")}
        kc.delete_map_entry("outer", 0)
        assert kc.run_xdp("mm", bytes(14)).retval == 1


def test_bad_map_spec_is_a_load_error(kernel):
    with pytest.raises(LoadError) as ei:
        KernelCollection(obj([], [MapSpec("k8", MapType.ARRAY, 8, 4, 1)]))
    assert "k8" in str(ei.value) and "EINVAL" in str(ei.value)


def test_map_api(kernel):
    with KernelCollection(obj([], [MapSpec("h", MapType.HASH, 4, 8, 16)])) as kc:
        m = kc.maps["h"]
        m[1] = 10
        m.update(2, struct.pack("<Q", 20))
        assert kc.read_map("h") == {(1).to_bytes(4, "little"): (10).to_bytes(8, "little"),
                                    (2).to_bytes(4, "little"): (20).to_bytes(8, "little")}
        with pytest.raises(KeyError):
            m[3]  # noqa: B018
        with pytest.raises(MapError) as ei:
            m.update(1, 0, bpf.BPF_NOEXIST)
        assert ei.value.errno == errno.EEXIST
        with pytest.raises(MapError):
            m.update(b"\0\0", 0)  # wrong key size
        del m[1]
        assert len(m) == 1 and 2 in m and 1 not in m


# --- verifier logs ------------------------------------------------------------------------------------


def btf_obj():
    blob, ids, _ = tiny_btf(["good", "bad"], ["t.c", "return XDP_PASS;", "int x = 1;", "return verdict;"])
    good = xdp_prog("good", [mov(0, 2), exit_()], func_info=[FuncInfo(0, "good", ids["good"])],
                    line_info=[LineInfo(0, "t.c", 5, 2, "return XDP_PASS;")])
    bad = xdp_prog("bad", [mov(1, 1), exit_()], func_info=[FuncInfo(0, "bad", ids["bad"])],
                   line_info=[LineInfo(0, "t.c", 9, 2, "int x = 1;"),
                              LineInfo(1, "t.c", 10, 2, "return verdict;")])
    return obj([good, bad], [], btf_raw=blob)


def test_verify_reports_each_program(kernel):
    res = verify(btf_obj())
    assert res["good"][0] is True
    ok, log = res["bad"]
    assert ok is False
    assert log.splitlines()[0] == "program bad refused by the kernel (EACCES): R0 !read_ok " \
                                  "(at t.c:10: `return verdict;`)"
    assert "; return verdict; @ t.c:10" in log


def test_refusal_raises_with_source_line(kernel):
    with pytest.raises(KernelError) as ei:
        KernelCollection(btf_obj())
    assert ei.value.errno == errno.EACCES
    assert "(at t.c:10: `return verdict;`)" in str(ei.value).splitlines()[0]
    with KernelCollection(btf_obj(), programs=["good"]) as kc:
        assert kc.btf_fd is not None and kc.notes == []
        assert kc.run_xdp("good", bytes(14)).retval == 2


def test_refused_btf_falls_back(kernel):
    o = btf_obj()
    o.btf_raw = o.btf_raw[:30]  # truncated: the kernel refuses it
    with KernelCollection(o, programs=["good"]) as kc:
        assert kc.btf_fd is None
        assert any("BTF not loaded" in n for n in kc.notes)
        assert kc.run_xdp("good", bytes(14)).retval == 2


def test_log_helpers():
    log = "0: R1=ctx()\n; if (x) @ p.c:3\n0: (95) exit\nR0 !read_ok\nprocessed 1 insns (limit 1000000)\n"
    assert log_source_line(log) == "p.c:3: `if (x)`"
    assert refusal_message("p", errno.EACCES, log) == (
        "program p refused by the kernel (EACCES): R0 !read_ok (at p.c:3: `if (x)`)")
    assert log_source_line("nothing here") is None


def test_expected_attach_types():
    assert expected_attach_type(xdp_prog("x", [])) == bpf.AttachType.XDP
    p = xdp_prog("x", [])
    p.attach = "xdp/devmap"
    assert expected_attach_type(p) == bpf.AttachType.XDP_DEVMAP
    t = tc_prog("t", [])
    assert expected_attach_type(t) == 0
    t.attach = "tcx/egress"
    assert expected_attach_type(t) == bpf.AttachType.TCX_EGRESS


# --- runs with devices -------------------------------------------------------------------------------


def test_run_xdp_with_ingress_ifindex(netns_ok):
    # r0 = ingress_ifindex * 100 + rx_queue_index
    prog = xdp_prog("ifx", [ldx(W, 0, 1, 12), ldx(W, 2, 1, 16), mul(0, 100),
                            addr(0, 2), exit_()])
    with KernelCollection(obj([prog], []), interfaces=[("eth0", 7, 4)]) as kc:
        assert kc.netns is not None and 7 in kc.netns.interfaces
        assert kc.run_xdp("ifx", bytes(14)).retval == 100  # the loopback
        assert kc.run_xdp("ifx", bytes(14), ingress_ifindex=7, rx_queue_index=3).retval == 703
        with pytest.raises(KernelError) as ei:
            kc.run_xdp("ifx", bytes(14), ingress_ifindex=7, rx_queue_index=4)
        assert ei.value.errno == errno.EINVAL
        # an ifindex not asked for: made on the fly
        assert kc.run_xdp("ifx", bytes(14), ingress_ifindex=9, rx_queue_index=1).retval == 901
        with kc.entered():
            assert kc.run_xdp("ifx", bytes(14), ingress_ifindex=9).retval == 900
        name = kc.netns.name
    assert name not in os.listdir("/var/run/netns")
    with KernelCollection(obj([prog], []), auto_interfaces=False) as kc:
        with pytest.raises(KernelError) as ei:
            kc.run_xdp("ifx", bytes(14), ingress_ifindex=9)
        assert ei.value.errno == errno.ENODEV


def test_run_skb(netns_ok):
    # r0 = len + mark * 1000 + ifindex * 100000; then mark = 77, cb[0] = 5
    prog = tc_prog("t", [
        ldx(W, 2, 1, 0),
        ldx(W, 3, 1, 8),
        mul(3, 1000),
        addr(2, 3),
        ldx(W, 3, 1, 40),
        mul(3, 100000),
        addr(2, 3),
        st(W, 1, 8, 77),
        st(W, 1, 48, 5),
        movr(0, 2),
        exit_(),
    ])
    with KernelCollection(obj([prog], [])) as kc:
        run = kc.run_skb("t", bytes(range(60)), mark=3)
        assert run.retval == 60 + 3000 + 100000  # skb->dev is the loopback
        assert run.data_out == bytes(range(60))
        assert run.skb["mark"] == 77 and run.skb["cb"] == [5, 0, 0, 0, 0] and run.skb["ifindex"] == 1
        run = kc.run_skb("t", bytes(60), ifindex=9)
        assert run.retval == 60 + 900000 and run.skb["ifindex"] == 9
        with pytest.raises(KernelError):
            kc.run_skb("t", bytes(60), len=5)
        assert kc.run("t", bytes(60)).retval == 100060
