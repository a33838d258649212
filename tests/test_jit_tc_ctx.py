"""TC programs on the JIT read `__sk_buff` len/data/data_end/data_meta and mark/protocol/ingress_ifindex/
ifindex natively (env, lower.TC_CTX_FIELDS): the values must be the interpreter's SkbContext's, also
after Python helpers move the packet (skb_change_head, skb_pull_data, skb_adjust_room) or change a
field (skb_change_proto, a context store to mark), and through the run-time-offset slow path."""

from __future__ import annotations

import kernel_fixtures as kf
import pytest

import xdpsim
from xdpsim.isa import Instruction
from xdpsim.jit.verify import analyse

W = kf.W
CHANGE_HEAD, PULL_DATA, ADJUST_ROOM, CHANGE_PROTO = 43, 39, 50, 31


def fields_after(call: list[Instruction]) -> list[Instruction]:
    """Run `call` (r1 = ctx on entry, kept in r6), then return
    ((data_end - data) << 48) | ((data - data_meta) << 32) | (len << 16) | (data & 0xffff)."""
    return [
        kf.movr(6, 1), *call, kf.movr(1, 6),
        kf.ldx(W, 2, 6, 76), kf.ldx(W, 3, 6, 80), kf.ldx(W, 4, 6, 140), kf.ldx(W, 5, 6, 0),
        kf.movr(0, 3), kf.subr(0, 2), Instruction(0x67, 0, 0, 0, 16),  # r0 = (end - data) << 16
        kf.movr(7, 2), kf.subr(7, 4), kf.addr(0, 7), Instruction(0x67, 0, 0, 0, 16),  # + data - meta
        kf.addr(0, 5), Instruction(0x67, 0, 0, 0, 16),  # + len
        Instruction(0x57, 2, 0, 0, 0xFFFF), kf.addr(0, 2),  # + data & 0xffff
        kf.exit_(),
    ]


PROGS: dict[str, list[Instruction]] = {
    "plain": fields_after([]),
    "change_head": fields_after([kf.mov(2, 8), kf.mov(3, 0), kf.call(CHANGE_HEAD)]),
    "pull_data": fields_after([kf.mov(2, 20), kf.call(PULL_DATA)]),
    "adjust_room": fields_after([kf.mov(2, 12), kf.mov(3, 0), kf.mov(4, 0), kf.mov(5, 0),
                                 kf.call(ADJUST_ROOM)]),
    # the context pointer through an ALU op the static pass does not follow: the slow path's switch
    "dynamic": [kf.movr(2, 1), Instruction(0x57, 2, 0, 0, -1), kf.ldx(W, 3, 2, 80), kf.ldx(W, 4, 2, 76),
                kf.ldx(W, 5, 2, 0), kf.movr(0, 3), kf.subr(0, 4), Instruction(0x67, 0, 0, 0, 16),
                kf.addr(0, 5), kf.exit_()],
    "mark": [kf.ldx(W, 2, 1, 76), kf.ldx(W, 0, 1, 8), kf.exit_()],
    # a field left to the accessor (priority), next to native ones
    "priority": [kf.ldx(W, 2, 1, 76), kf.ldx(W, 0, 1, 32), kf.exit_()],
    "ifindexes": [kf.ldx(W, 0, 1, 40), Instruction(0x67, 0, 0, 0, 16), kf.ldx(W, 2, 1, 36), kf.addr(0, 2),
                  kf.exit_()],
    # mark read, stored through the context (Python), read again: the store refreshes env
    "mark_store": [kf.ldx(W, 6, 1, 8), kf.mov(2, 0x77), kf.stx(W, 1, 2, 8), kf.ldx(W, 0, 1, 8),
                   Instruction(0x67, 0, 0, 0, 16), kf.addr(0, 6), kf.exit_()],
    # protocol before and after bpf_skb_change_proto(skb, htons(ETH_P_IPV6), 0)
    "change_proto": [kf.movr(6, 1), kf.ldx(W, 7, 1, 16), kf.mov(2, 0xDD86), kf.mov(3, 0),
                     kf.call(CHANGE_PROTO), kf.ldx(W, 0, 6, 16), Instruction(0x67, 0, 0, 0, 16),
                     kf.addr(0, 7), kf.exit_()],
}


def frame() -> bytes:
    return bytes.fromhex("020000000001020000000002080045000028000100004006f97d0a0000010a000002") + bytes(26)


@pytest.fixture(scope="module")
def objs():
    spec = kf.obj([kf.tc_prog(n, i) for n, i in PROGS.items()], [])
    return xdpsim.load(spec, engine="interp"), xdpsim.load(spec, engine="jit")


@pytest.mark.parametrize("name", sorted(PROGS))
@pytest.mark.parametrize("meta", [b"", b"\x01\x02\x03\x04"])
def test_jit_reads_skb_fields_as_the_interpreter(objs, name: str, meta: bytes) -> None:
    interp, jit = objs
    kw = {"mark": 0x1234, "priority": 5, "ifindex": 7, "ingress_ifindex": 3}
    a = interp.programs[name].run(frame(), meta=meta, **kw)
    b = jit.programs[name].run(frame(), meta=meta, **kw)
    assert a.error is None, a.error
    assert b.error is None, b.error
    assert (a.retval, a.data, a.meta) == (b.retval, b.data, b.meta)


def test_values_follow_the_packet(objs) -> None:
    """Not just equal: the native reads give the moved packet's geometry."""
    jit = objs[1]
    plain = jit.programs["plain"].run(frame()).retval
    assert plain >> 48 == 60 and (plain >> 16) & 0xFFFF == 60 and (plain >> 32) & 0xFFFF == 0
    head = jit.programs["change_head"].run(frame()).retval
    assert head >> 48 == 68 and (head >> 16) & 0xFFFF == 68
    assert (plain - head) & 0xFFFF == 8  # data moved 8 bytes towards the head
    assert (jit.programs["plain"].run(frame(), meta=b"\x00" * 8).retval >> 32) & 0xFFFF == 8
    assert jit.programs["mark"].run(frame(), mark=0x55).retval == 0x55
    assert jit.programs["mark_store"].run(frame(), mark=0x55).retval == 0x77_0055
    assert jit.programs["change_proto"].run(frame()).retval == 0xDD86_0008
    assert jit.programs["ifindexes"].run(frame(), ifindex=7, ingress_ifindex=3).retval == 0x7_0003


def test_static_pass_proves_tc_context_fields() -> None:
    insns = PROGS["change_head"]
    proofs, _ = analyse(insns, tc=True)
    ctx = sorted(p.offset for p in proofs.values() if p.kind == "ctx")
    assert ctx == [0, 76, 80, 140]
    assert not any(p.kind == "ctx" for p in analyse(PROGS["priority"], tc=True)[0].values() if p.offset == 32)
    assert not any(p.kind == "packet" for p in proofs.values())  # no packet proofs for TC
    assert not any(p.kind == "ctx" for p in analyse(insns)[0].values())
