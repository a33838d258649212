"""The 32-bit checksum values a TC program sees (bpf_csum_update's return, i.e. skb->csum of a
CHECKSUM_COMPLETE skb) are the kernel's: x86-64's csum_partial sums 64-bit words, so its 32-bit
sums differ from a 16-bit-word sum even where both fold to the same checksum.

A small TC program (assembled here, no clang needed) does op cb[0] and returns skb->csum through
bpf_csum_update: 0 csum_update(cb[1]) (then undoes it, so the kernel's end-of-run skb->csum check
passes), 1 skb_store_bytes(cb[1], &cb[2], 4, BPF_F_RECOMPUTE_CSUM), 2 l4_csum_replace(cb[1], cb[3],
cb[2], BPF_F_PSEUDO_HDR | 4), 3 skb_adjust_room((s32)cb[1], BPF_ADJ_ROOM_NET). The values were
recorded from Linux 6.18 (x86-64); the kernel test re-asks the running kernel.
"""

from __future__ import annotations

import hashlib

import kernel_fixtures
import pytest
from kernel_fixtures import obj, tc_prog

from xdpsim.asm import assemble
from xdpsim.engines.interp import Interpreter
from xdpsim.engines.jit import JitEngine
from xdpsim.helpers.csum import csum_partial
from xdpsim.hooks.tc import run_tc
from xdpsim.runtime import Runtime
from xdpsim.spec import ObjectSpec

kernel = kernel_fixtures.kernel

PROGRAM = """
r6 = r1
r7 = *(u32 *)(r6 + 48)
r8 = *(u32 *)(r6 + 52)
r9 = *(u32 *)(r6 + 56)
if r7 == 1 goto store
if r7 == 2 goto l4
if r7 == 3 goto adjust
goto update
store:
*(u32 *)(r10 - 8) = r9
r1 = r6
r2 = r8
r3 = r10
r3 += -8
r4 = 4
r5 = 1
call 9
goto done
l4:
r1 = r6
r2 = r8
r3 = *(u32 *)(r6 + 60)
r4 = r9
r5 = 20
call 11
goto done
adjust:
r1 = r6
r2 = r8
r2 <<= 32
r2 s>>= 32
r3 = 0
r4 = 0
r5 = 0
call 50
done:
if r0 != 0 goto out
r8 = 0
update:
r1 = r6
r2 = r8
call 40
r7 = r0
r1 = r6
r2 = r8
r2 ^= -1
call 40
r0 = r7
out:
exit
"""


def spec() -> ObjectSpec:
    return obj([tc_prog("csum", assemble(PROGRAM))], [])


def stream(seed: int, n: int) -> bytes:
    out = b""
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{len(out)}".encode()).digest()
    return out[:n]


def packet(seed: int, payload: int) -> bytes:
    """Ethernet + IPv4 + UDP headers, then `payload` pseudo-random bytes (odd and even lengths)."""
    eth = bytes.fromhex("020000000001020000000002") + b"\x08\x00"
    ip = bytes.fromhex("450000000001000040110000") + bytes([10, 0, 0, 1, 10, 0, 0, 2])
    udp = bytes.fromhex("0035303900000000")
    return eth + ip + udp + stream(seed, payload)


def u32(seed: int) -> int:
    return int.from_bytes(stream(seed + 1000, 4), "little")


# (payload length, cb): what each case does, see the module docstring
CASES: list[tuple[int, list[int]]] = [
    (0, [0, 0, 0, 0]), (1, [0, u32(1), 0, 0]), (7, [0, u32(2), 0, 0]), (33, [0, 0xFFFF_FFFF, 0, 0]),
    (64, [0, u32(3), 0, 0]), (91, [0, u32(4), 0, 0]),
    (20, [1, 14, u32(5), 0]), (21, [1, 43, u32(6), 0]), (50, [1, 61, u32(7), 0]),
    (9, [1, 49, u32(8), 0]),  # past the end: -EFAULT, skb->csum untouched
    (12, [2, 40, u32(9), u32(10)]), (45, [2, 40, u32(11), u32(12)]), (3, [2, 40, 0, 0xFFFF_FFFF]),
    (30, [3, 8, 0, 0]), (31, [3, 12, 0, 0]), (40, [3, -4 & 0xFFFF_FFFF, 0, 0]),
    (77, [3, -8 & 0xFFFF_FFFF, 0, 0]),
]

# the kernel's answers for CASES (Linux 6.18, x86-64)
RECORDED: list[int] = [
    0x3C304799, 0x0B734E19, 0x3E24D668, 0xDAC0E3F5, 0xB29E82E2, 0x702F9AB0, 0x381E7634, 0x043426DF,
    0x7ADFE18D, 0xFFFFFFF2, 0xEA71DD14, 0x6BE1E891, 0x3C5E91EB, 0x81C5FF1B, 0x21326EFE, 0x76E3F786,
    0x1466D22E,
]


def run_sim(engine: str) -> list[int]:
    rt = Runtime()
    pid = rt.load(spec()).programs["csum"]
    eng = Interpreter() if engine == "interp" else JitEngine()
    out = []
    for i, (n, cb) in enumerate(CASES):
        r = run_tc(rt, eng, pid, packet(i, n), cb=cb, checksum_complete=True)
        assert r.error is None and r.csum_ok, (i, r.error)
        out.append(r.retval & 0xFFFF_FFFF)
    return out


@pytest.mark.parametrize("engine", ["interp", "jit"])
def test_skb_csum_values_match_the_recorded_kernel(engine: str) -> None:
    assert run_sim(engine) == RECORDED


def test_csum_partial_is_x86_64s_64_bit_word_sum() -> None:
    """Same 16-bit folds, different 32-bit sums: 16-bit words would give 2 and 0x3fffc."""
    assert csum_partial(b"\x01" + bytes(13) + b"\x01\x00", 0) == 0x0001_0001
    assert csum_partial(b"\xff" * 8, 0) == 0xFFFF_FFFF
    assert csum_partial(b"\x01\x02\x03", 0x10) == 0x0003_0211


def test_skb_csum_values_match_the_running_kernel(kernel: str) -> None:
    from xdpsim.engines.kernel import KernelCollection
    from xdpsim.kernel.bpf import BPF_F_TEST_SKB_CHECKSUM_COMPLETE

    with KernelCollection(spec()) as ker:
        got = [ker.run_skb("csum", packet(i, n), cb=cb, flags=BPF_F_TEST_SKB_CHECKSUM_COMPLETE).retval
               & 0xFFFF_FFFF for i, (n, cb) in enumerate(CASES)]
    assert got == run_sim("interp")
