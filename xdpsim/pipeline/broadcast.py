"""XDP broadcast: `bpf_redirect_map(&devmap, key, BPF_F_BROADCAST [| BPF_F_EXCLUDE_INGRESS])`.

The kernel (kernel/bpf/devmap.c, dev_map_enqueue_multi) walks the devmap and puts a copy of the frame
on the transmit queue of every entry's device, the key being ignored:
- in the map's order: a devmap by index; a devmap_hash by bucket (key & (n_buckets - 1), n_buckets the
  entries rounded up to a power of two), which is also the order BPF_MAP_GET_NEXT_KEY lists its keys
  (within a bucket the kernel puts the newest entry first; xdpsim keeps its own order there);
- skipping a device that cannot take the frame (is_valid_dst: xdp_ok_fwd_dev refuses frames longer than
  the device's MTU + 14 + 4 bytes) and, with BPF_F_EXCLUDE_INGRESS, the ingress device (and its upper
  devices: the pipeline has none);
- each copy later goes through its entry's devmap program (bq_xmit_all), which may rewrite or drop it;
- an empty walk frees the frame and still returns 0: xdp_do_redirect reports a successful redirect
  (tracepoint xdp_redirect, not xdp_redirect_err) though nothing is sent.
Two entries naming the same device send it two copies.

`Port` is one entry the walk keeps; the backends list them (`SimBackend.broadcast_ports`,
`KernelBackend.broadcast_ports`). `may_broadcast` tells the pipeline which programs could broadcast,
whose packets the JIT's batch path must not take (it writes one record per packet).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..isa import (
    BPF_ALU,
    BPF_ALU64,
    BPF_ATOMIC,
    BPF_CALL,
    BPF_JMP,
    BPF_JMP32,
    BPF_K,
    BPF_LDX,
    BPF_MOV,
    BPF_STX,
    Instruction,
)

BPF_F_BROADCAST = 1 << 3
BPF_F_EXCLUDE_INGRESS = 1 << 4
REDIRECT_MAP = 51  # the helper id of bpf_redirect_map
ETH_HLEN = 14
VLAN_HLEN = 4


def frame_limit(mtu: int) -> int:
    """The longest frame a device of this MTU takes from a redirect: MTU + hard_header_len (14 for
    Ethernet) + VLAN_HLEN (4), the kernel's xdp_ok_fwd_dev and is_skb_forwardable alike."""
    return mtu + ETH_HLEN + VLAN_HLEN


@dataclass(frozen=True)
class Port:
    """One devmap entry a broadcast sends a copy to: the key, the device, the entry's program (runtime
    id, or kernel id on the kernel backend)."""

    key: int
    ifindex: int
    prog: int | None = None


def n_buckets(max_entries: int) -> int:
    """A devmap_hash's bucket count (dev_map_init_map: roundup_pow_of_two(max_entries))."""
    return 1 << max(max_entries - 1, 0).bit_length()


def hash_order(ports: Iterable[Port], max_entries: int) -> list[Port]:
    """A devmap_hash's entries in the kernel's walk order: by bucket (stable within one)."""
    mask = n_buckets(max_entries) - 1
    return sorted(ports, key=lambda p: p.key & mask)


def parse_value(key: bytes, value: bytes) -> Port:
    """A devmap value (`struct bpf_devmap_val`: ifindex, then the program id when 8 bytes)."""
    prog = int.from_bytes(value[4:8], "little") if len(value) >= 8 else 0
    return Port(int.from_bytes(key, "little"), int.from_bytes(value[:4], "little"), prog or None)


def walk(ports: Sequence[Port], *, ingress: int, exclude_ingress: bool, length: int,
         mtu: dict[int, int]) -> tuple[list[Port], list[str]]:
    """The ports a frame of `length` bytes arriving on `ingress` is copied to, and why others were
    skipped (for the packet log): too long for the device, or the ingress device excluded."""
    out: list[Port] = []
    skipped: list[str] = []
    for p in ports:
        if exclude_ingress and p.ifindex == ingress:
            skipped.append(f"key {p.key}: ingress ifindex {p.ifindex} excluded")
            continue
        limit = mtu.get(p.ifindex)
        if limit is not None and length > frame_limit(limit):
            skipped.append(f"key {p.key}: {length} bytes over ifindex {p.ifindex}'s MTU {limit}")
            continue
        out.append(p)
    return out, skipped


# --- which programs may broadcast ---------------------------------------------------------------------


def _r3_constant(insns: Sequence[Instruction], pc: int, leaders: set[int]) -> int | None:
    """The constant the call at `pc` gets in r3 (the flags), from a `r3 = imm` earlier in its basic
    block with nothing writing r3 between; None when the code does not say."""
    i = pc - 1
    while i >= 0:
        ins = insns[i]
        if i and insns[i - 1].opcode == 0x18:  # an lddw's second slot
            i -= 1
            ins = insns[i]
            if ins.dst == 3:
                return None
        elif ins.cls in (BPF_ALU, BPF_ALU64) and ins.dst == 3:
            if ins.code == BPF_MOV and ins.source == BPF_K and ins.off == 0:
                return ins.imm & (0xFFFF_FFFF if ins.cls == BPF_ALU else 0xFFFF_FFFF_FFFF_FFFF)
            return None
        elif ins.cls == BPF_LDX and ins.dst == 3:
            return None
        elif ins.cls in (BPF_JMP, BPF_JMP32) and ins.code == BPF_CALL:
            return None  # r3 clobbered by a call
        elif ins.cls == BPF_STX and ins.mode == BPF_ATOMIC and ins.imm & 0x01 and \
                (0 if ins.imm == 0xF1 else ins.src) == 3:
            return None  # an atomic fetch writing r3 (cmpxchg writes r0)
        if i in leaders:
            return None
        i -= 1
    return None


def program_may_broadcast(insns: Sequence[Instruction]) -> bool:
    """Whether a bpf_redirect_map call of the program can have BPF_F_BROADCAST in its flags: its r3 is
    not a constant of the same basic block without that bit."""
    calls = [pc for pc, ins in enumerate(insns)
             if ins.cls == BPF_JMP and ins.code == BPF_CALL and ins.src == 0 and ins.imm == REDIRECT_MAP]
    if not calls:
        return False
    leaders = {0}
    for i, ins in enumerate(insns):
        if ins.is_jump:
            leaders.update((ins.jump_target(i), i + 1))
    for pc in calls:
        flags = _r3_constant(insns, pc, leaders)
        if flags is None or flags & BPF_F_BROADCAST:
            return True
    return False
