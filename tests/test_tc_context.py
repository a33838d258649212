"""`struct __sk_buff` for TC programs: which accesses the kernel allows, what they read, what writes do.

Hand-made programs (kernel_fixtures' instruction builders) load or store one field and return what
they read; each is run in the simulator and, where the kernel's verifier accepts it, in the kernel
(BPF_PROG_TEST_RUN with the same ctx_in); the refused ones must be refused by both (the simulator
with a ProgramFault of kind "ctx", or "memory" past the end of the context).
"""

from __future__ import annotations

import kernel_fixtures as kf
import pytest

import xdpsim
from xdpsim.isa import Instruction

kernel = kf.kernel
W, H, B, DW = kf.W, kf.H, kf.B, kf.DW


def ld(size: int, off: int) -> list[Instruction]:
    return [kf.ldx(size, 0, 1, off), kf.exit_()]


def st_ld(size: int, off: int, imm: int, rsize: int = W, roff: int | None = None) -> list[Instruction]:
    return [kf.st(size, 1, off, imm), kf.ldx(rsize, 0, 1, off if roff is None else roff), kf.exit_()]


def stx_ld(off: int, value: int) -> list[Instruction]:
    return [kf.mov(2, value), kf.stx(W, 1, 2, off), kf.ldx(W, 0, 1, off), kf.exit_()]


CTX_IN = {"mark": 0x11223344, "priority": 9, "cb": [0x01020304, 5, 6, 7, 8], "tstamp": 123456789,
          "gso_segs": 3, "gso_size": 1400, "hwtstamp": 99}

ALLOWED: dict[str, list[Instruction]] = {
    "len": ld(W, 0), "proto_hi": ld(B, 17), "proto16": ld(H, 16), "pkt_type": ld(W, 4), "ifindex": ld(W, 40),
    "ingress_if": ld(W, 36), "tstamp": ld(DW, 152), "tstamp_type": ld(B, 180), "wire_len": ld(W, 160),
    "gso_segs": ld(W, 164), "gso_size": ld(W, 176), "hwtstamp": ld(DW, 184), "napi_id": ld(W, 84),
    "hash": ld(W, 68), "vlan_present": ld(W, 20), "vlan_tci": ld(W, 24), "mark_b3": ld(B, 11),
    "cb_byte": [kf.st(B, 1, 49, 0x7F), kf.ldx(W, 0, 1, 48), kf.exit_()],
    "cb_u64": [kf.ldx(DW, 0, 1, 48), kf.exit_()],
    "cb4_hi": ld(H, 66),
    "qmap_ffff": st_ld(W, 12, 0xFFFF), "qmap_7": stx_ld(12, 7), "qmap_big": stx_ld(12, 0x10000),
    "qmap_st5": st_ld(W, 12, 5),
    "classid": st_ld(W, 72, 0x12345), "classid_b": st_ld(W, 72, 0x1234, B, 73),
    "tc_index": st_ld(W, 44, 0x10001), "mark_w": st_ld(W, 8, 0x55),
    "prio_b1": st_ld(W, 32, 0x7ABBCCDD, B, 33),
    "pkt_len": [kf.ldx(W, 2, 1, 76), kf.ldx(W, 3, 1, 80), kf.movr(0, 3), kf.subr(0, 2), kf.exit_()],
    "meta_eq": [kf.ldx(W, 2, 1, 76), kf.ldx(W, 3, 1, 140), kf.movr(0, 2), kf.subr(0, 3), kf.exit_()],
    "tstamp_w": [kf.mov(2, 5), kf.stx(DW, 1, 2, 152), kf.ldx(DW, 0, 1, 152), kf.exit_()],
}

REFUSED: dict[str, list[Instruction]] = {
    "mark_u64": ld(DW, 8), "data_b": ld(B, 76), "data_h": ld(H, 80), "st_len": st_ld(W, 0, 1),
    "st_mark_h": st_ld(H, 8, 1), "family": ld(W, 88), "remote_ip4": ld(W, 92), "tstamp_w4": ld(W, 152),
    "st_hwts": [kf.mov(2, 1), kf.stx(DW, 1, 2, 184), kf.mov(0, 0), kf.exit_()], "pad": ld(B, 181),
    "flow_keys": ld(DW, 144), "misaligned": ld(W, 2), "st_tstype": st_ld(B, 180, 1, B),
    "past_end": ld(W, 192), "st_ifindex": st_ld(W, 40, 1), "st_hash": st_ld(W, 68, 1),
    "st_vlan": st_ld(W, 24, 1), "st_data": st_ld(W, 76, 1), "u64_len": ld(DW, 0), "cb_past": ld(DW, 64),
    "st_mark_b": st_ld(B, 8, 1),
}


def spec(progs: dict[str, list[Instruction]]):
    return kf.obj([kf.tc_prog(name, insns) for name, insns in progs.items()], [])


@pytest.fixture(scope="module")
def allowed_obj():
    return xdpsim.load(spec(ALLOWED))


def frame() -> bytes:
    return bytes.fromhex("020000000001020000000002080045000028000100004006f97d0a0000010a000002") + bytes(26)


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_allowed_access_agrees_with_kernel(kernel: str, allowed_obj, name: str) -> None:
    from xdpsim.engines.kernel import KernelCollection

    a = allowed_obj.programs[name].run(frame(), **CTX_IN)
    assert a.error is None, a.error
    with KernelCollection(spec({name: ALLOWED[name]})) as ker:
        b = ker.run_skb(name, frame(), **CTX_IN)
    assert a.retval & 0xFFFF_FFFF == b.retval & 0xFFFF_FFFF
    assert a.skb.mark == b.skb["mark"] and a.skb.priority == b.skb["priority"]
    assert list(bytes(a.skb.cb)) == list(b"".join(v.to_bytes(4, "little") for v in b.skb["cb"]))


def test_allowed_values() -> None:
    """What the rewrites store, independent of the kernel: 16-bit fields, ignored queue_mapping."""
    obj = xdpsim.load(spec(ALLOWED))
    got = {n: obj.programs[n].run(frame(), **CTX_IN).retval for n in
           ("qmap_ffff", "qmap_7", "qmap_big", "classid", "classid_b", "tc_index", "prio_b1", "pkt_len",
            "proto16", "meta_eq", "tstamp_type")}
    assert got == {"qmap_ffff": 0, "qmap_7": 7, "qmap_big": 0, "classid": 0x2345, "classid_b": 0x12,
                   "tc_index": 1, "prio_b1": 0xCC, "pkt_len": 60, "proto16": 0x0008, "meta_eq": 0,
                   "tstamp_type": 0}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_access_faults(name: str) -> None:
    obj = xdpsim.load(spec({name: REFUSED[name]}))
    r = obj.programs[name].run(frame())
    assert r.error is not None and r.error.kind in ("ctx", "memory"), r.error
    assert "__sk_buff" in str(r.error) or r.error.kind == "memory"


def test_refused_accesses_are_refused_by_the_verifier(kernel: str) -> None:
    from xdpsim.engines.kernel import verify

    res = verify(spec(REFUSED))
    accepted = [name for name, (ok, _) in res.items() if ok]
    assert accepted == []
    assert all(ok for ok, _ in verify(spec(ALLOWED)).values())
