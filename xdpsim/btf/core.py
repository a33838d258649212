"""CO-RE relocations: compute what a `preserve_access_index` access means in the target kernel's BTF.

As libbpf's relo_core.c: the local side walks the access string ("0:1:2": an array index on the root,
then member or array indices) through the object's own BTF; the target side finds types with the same
essential name (`iphdr___old` -> `iphdr`) and kind, and follows the same *named* members (anonymous
structs and unions are looked through). The result replaces the constant clang put in the
instruction: `off` of a load/store, `imm` of an ALU-immediate instruction, the 64-bit immediate of an
`lddw`. A relocation that cannot be satisfied (a field that does not exist in the target) "poisons"
the instruction as libbpf does: it becomes a call to helper 0xbad2310, which the verifier refuses and
xdpsim reports if it is ever reached; `..._EXISTS` relocations give 0 instead.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..isa import BPF_ALU, BPF_ALU64, BPF_K, BPF_LDX, BPF_ST, BPF_STX, CALL, SIZE_BYTES, Instruction
from .ext import CoreKind, CoreRelo
from .types import BTF, BtfError, BtfType, Kind, essential_name

VMLINUX = "/sys/kernel/btf/vmlinux"
POISON_HELPER = 0xBAD2310
_COMPOSITE = (Kind.STRUCT, Kind.UNION)
_ENUMS = (Kind.ENUM, Kind.ENUM64)
_FIELD_KINDS = {
    CoreKind.FIELD_BYTE_OFFSET,
    CoreKind.FIELD_BYTE_SIZE,
    CoreKind.FIELD_EXISTS,
    CoreKind.FIELD_SIGNED,
    CoreKind.FIELD_LSHIFT_U64,
    CoreKind.FIELD_RSHIFT_U64,
}
_TYPE_KINDS = {
    CoreKind.TYPE_ID_LOCAL,
    CoreKind.TYPE_ID_TARGET,
    CoreKind.TYPE_EXISTS,
    CoreKind.TYPE_SIZE,
    CoreKind.TYPE_MATCHES,
}


class CoreError(BtfError):
    """A CO-RE relocation that is malformed (bad access string, instruction that does not fit)."""


@functools.lru_cache(maxsize=4)
def _load_btf(path: str) -> BTF:
    return BTF(Path(path).read_bytes(), lazy=True)


def shipped_btf() -> BTF:
    """xdpsim's own small BTF of the networking uapi and BPF context types (xdpsim/data)."""
    data = resources.files("xdpsim").joinpath("data/core_types.btf")
    return _load_btf(str(data))


def target_btf(path: str | None = None) -> tuple[BTF, str]:
    """The BTF to relocate against and where it came from: `path`, else the running kernel's, else
    the shipped one."""
    if path:
        return _load_btf(path), path
    if os.path.exists(VMLINUX):
        try:
            return _load_btf(VMLINUX), VMLINUX
        except (OSError, BtfError):
            pass
    return shipped_btf(), "xdpsim/data/core_types.btf"


@dataclass
class _Field:
    """Where an access ends: bit offset from the root, the final member's type and bitfield width."""

    bit_off: int
    type_id: int
    bitfield: int  # 0 when not a bitfield


@dataclass
class CoreResult:
    local: int
    target: int
    poison: bool = False
    new_size: int | None = None  # a load's new width when the target field is narrower/wider
    why: str = ""
    # libbpf checks the instruction holds the local value, except for bitfields: there the compiler
    # and libbpf may pick different (equally valid) load widths
    validate: bool = True


def _access(relo: CoreRelo) -> list[int]:
    try:
        out = [int(x) for x in relo.access.split(":")]
    except ValueError:
        raise CoreError(f"CO-RE access string {relo.access!r} is not a list of indices") from None
    if not out or any(x < 0 for x in out):
        raise CoreError(f"CO-RE access string {relo.access!r} is empty or negative")
    return out


def _walk_local(btf: BTF, root: int, idx: list[int]) -> tuple[_Field, list[tuple[str, int | str]]]:
    """Follow indices through the local BTF; return the field and the named path the target must have
    (("arr", index) and ("mem", name) steps; anonymous members are skipped, as libbpf does)."""
    cur = btf.resolve(root)
    bit_off = idx[0] * btf.size_of(cur) * 8
    steps: list[tuple[str, int | str]] = [("arr", idx[0])]
    fld = _Field(bit_off, cur, 0)
    for i in idx[1:]:
        t = btf[btf.resolve(cur)]
        if t.kind in _COMPOSITE:
            if i >= len(t.members):
                raise CoreError(
                    f"CO-RE access {i} beyond the {len(t.members)} members of {btf.name_of(t.id)}"
                )
            m = t.members[i]
            bit_off += m.offset
            if m.name:
                steps.append(("mem", m.name))
            cur = m.type
            fld = _Field(bit_off, m.type, m.bitfield_size)
        elif t.kind == Kind.ARRAY:
            bit_off += i * btf.size_of(t.elem_type) * 8
            steps.append(("arr", i))
            cur = t.elem_type
            fld = _Field(bit_off, cur, 0)
        else:
            raise CoreError(
                f"CO-RE access {i} into {btf.name_of(t.id)}, which is not a struct, union or array"
            )
    return fld, steps


def _find_member(btf: BTF, t: BtfType, name: str) -> tuple[int, int, int] | None:
    """(bit offset, type id, bitfield size) of member `name`, looking through anonymous members."""
    for m in t.members:
        if m.name == name:
            return m.offset, m.type, m.bitfield_size
        if not m.name:
            inner = btf[btf.resolve(m.type)]
            if inner.kind in _COMPOSITE:
                found = _find_member(btf, inner, name)
                if found is not None:
                    return m.offset + found[0], found[1], found[2]
    return None


def _compatible(lb: BTF, lt: int, tb: BTF, tt: int) -> bool:
    """libbpf's bpf_core_fields_are_compat, simplified to kind classes."""
    a, b = lb[lb.resolve(lt)], tb[tb.resolve(tt)]
    cls = {
        Kind.INT: "int",
        Kind.ENUM: "int",
        Kind.ENUM64: "int",
        Kind.PTR: "ptr",
        Kind.FLOAT: "float",
        Kind.STRUCT: "comp",
        Kind.UNION: "comp",
        Kind.FWD: "comp",
        Kind.ARRAY: "arr",
    }
    return cls.get(a.kind, a.kind.name) == cls.get(b.kind, b.kind.name)


def _walk_target(
    lb: BTF, local_fld: _Field, tb: BTF, root: int, steps: list[tuple[str, int | str]]
) -> _Field | None:
    cur = tb.resolve(root)
    bit_off = int(steps[0][1]) * tb.size_of(cur) * 8
    fld = _Field(bit_off, cur, 0)
    for kind, what in steps[1:]:
        t = tb[tb.resolve(cur)]
        if kind == "mem":
            if t.kind not in _COMPOSITE:
                return None
            found = _find_member(tb, t, str(what))
            if found is None:
                return None
            off, mtype, bits = found
            bit_off += off
            cur = mtype
            fld = _Field(bit_off, mtype, bits)
        else:
            if t.kind != Kind.ARRAY:
                return None
            if int(what) >= t.nelems and t.nelems != 0:
                return None
            bit_off += int(what) * tb.size_of(t.elem_type) * 8
            cur = t.elem_type
            fld = _Field(bit_off, cur, 0)
    if not _compatible(lb, local_fld.type_id, tb, fld.type_id):
        return None
    return fld


def _field_value(btf: BTF, fld: _Field, kind: CoreKind) -> tuple[int, int]:
    """(relocated value, byte size of the access) for a field relocation, as bpf_core_calc_field_relo."""
    mt = btf[btf.resolve(fld.type_id)]
    bit_off, bit_sz = fld.bit_off, fld.bitfield
    if not bit_sz:
        byte_sz = btf.size_of(mt.id)
        byte_off = bit_off // 8
        bit_sz = byte_sz * 8
    else:
        byte_sz = mt.size
        byte_off = bit_off // 8 // byte_sz * byte_sz
        while bit_off + bit_sz - byte_off * 8 > byte_sz * 8:
            if byte_sz >= 8:
                raise CoreError("bitfield straddles an 8-byte boundary")
            byte_sz *= 2
            byte_off = bit_off // 8 // byte_sz * byte_sz
    if kind == CoreKind.FIELD_BYTE_OFFSET:
        return byte_off, byte_sz
    if kind == CoreKind.FIELD_BYTE_SIZE:
        return byte_sz, byte_sz
    if kind == CoreKind.FIELD_EXISTS:
        return 1, byte_sz
    if kind == CoreKind.FIELD_SIGNED:
        return int(mt.signed), byte_sz
    if kind == CoreKind.FIELD_LSHIFT_U64:
        return 64 - (bit_off + bit_sz - byte_off * 8), byte_sz
    return 64 - bit_sz, byte_sz  # FIELD_RSHIFT_U64


def _candidates(lb: BTF, local: BtfType, tb: BTF) -> list[BtfType]:
    name = essential_name(local.name)
    kinds = _ENUMS if local.kind in _ENUMS else (local.kind,)
    return [tb[i] for i in tb.by_name(name) if tb[i].kind in kinds]


def types_match(lb: BTF, lid: int, tb: BTF, tid: int, depth: int = 32) -> bool:
    """libbpf's "types match" relation (bpf_core_type_matches): same essential names and kinds; ints
    of the same size and signedness; enums whose every local enumerator exists in the target; arrays
    of the same length; pointers, prototypes and every local struct/union member (by name) matching
    recursively."""
    if depth <= 0:
        return False
    a, b = lb[lb.resolve(lid)], tb[tb.resolve(tid)]
    if a.name and essential_name(a.name) != essential_name(b.name):
        return False
    if a.kind in _ENUMS and b.kind in _ENUMS:
        names = {essential_name(m.name) for m in b.members}
        return a.size == b.size and all(essential_name(m.name) in names for m in a.members)
    if a.kind == Kind.FWD or b.kind == Kind.FWD:
        return a.kind == b.kind or {a.kind, b.kind} <= {Kind.FWD, Kind.STRUCT, Kind.UNION}
    if a.kind != b.kind:
        return False
    if a.kind == Kind.INT:
        return a.size == b.size and a.signed == b.signed
    if a.kind == Kind.FLOAT:
        return a.size == b.size
    if a.kind == Kind.PTR:
        return types_match(lb, a.type, tb, b.type, depth - 1)
    if a.kind == Kind.ARRAY:
        return a.nelems == b.nelems and types_match(lb, a.elem_type, tb, b.elem_type, depth - 1)
    if a.kind == Kind.FUNC_PROTO:
        return (
            len(a.members) == len(b.members)
            and types_match(lb, a.type, tb, b.type, depth - 1)
            and all(
                types_match(lb, x.type, tb, y.type, depth - 1)
                for x, y in zip(a.members, b.members, strict=True)
            )
        )
    if a.kind in _COMPOSITE:
        for m in a.members:
            found = next((t for t in b.members if t.name == m.name), None)
            if found is None or found.bitfield_size != m.bitfield_size:
                return False
            if not types_match(lb, m.type, tb, found.type, depth - 1):
                return False
        return True
    return a.kind == Kind.UNKN


def resolve(relo: CoreRelo, lb: BTF, tb: BTF) -> CoreResult:
    """The local and target values of one relocation."""
    local = lb[lb.skip_mods(relo.type_id)]
    idx = _access(relo)
    kind = relo.kind
    if kind in _TYPE_KINDS:
        if not local.name:
            raise CoreError(f"CO-RE {kind.name} on an anonymous type {relo.type_id}")
        cands = _candidates(lb, local, tb)
        local_vals = {
            CoreKind.TYPE_ID_LOCAL: relo.type_id,
            CoreKind.TYPE_ID_TARGET: relo.type_id,
            CoreKind.TYPE_EXISTS: 1,
            CoreKind.TYPE_MATCHES: 1,
            CoreKind.TYPE_SIZE: lb.size_of(local.id) if local.kind != Kind.FWD else 0,
        }
        lv = local_vals[kind]
        if kind == CoreKind.TYPE_MATCHES:
            return CoreResult(lv, int(any(types_match(lb, local.id, tb, c.id) for c in cands)))
        if not cands:
            return CoreResult(lv, relo.type_id if kind == CoreKind.TYPE_ID_LOCAL else 0)
        c = cands[0]
        tv = {
            CoreKind.TYPE_ID_LOCAL: relo.type_id,
            CoreKind.TYPE_ID_TARGET: c.id,
            CoreKind.TYPE_EXISTS: 1,
            CoreKind.TYPE_SIZE: tb.size_of(c.id) if c.kind != Kind.FWD else 0,
        }[kind]
        return CoreResult(lv, tv)
    if kind in (CoreKind.ENUMVAL_EXISTS, CoreKind.ENUMVAL_VALUE):
        t = lb[lb.resolve(relo.type_id)]
        if t.kind not in _ENUMS or idx[0] >= len(t.members):
            raise CoreError(
                f"CO-RE {kind.name}: access {relo.access!r} is not an enumerator of {lb.name_of(t.id)}"
            )
        ename = essential_name(t.members[idx[0]].name)
        lv = 1 if kind == CoreKind.ENUMVAL_EXISTS else t.members[idx[0]].value
        for c in _candidates(lb, t, tb):
            for m in c.members:
                if essential_name(m.name) == ename:
                    return CoreResult(lv, 1 if kind == CoreKind.ENUMVAL_EXISTS else m.value)
        if kind == CoreKind.ENUMVAL_EXISTS:
            return CoreResult(lv, 0)
        return CoreResult(
            lv, 0, poison=True, why=f"enumerator {ename} of {lb.name_of(t.id)} not in the target"
        )
    # field relocations
    if local.kind not in _COMPOSITE and local.kind != Kind.TYPEDEF:
        raise CoreError(f"CO-RE {kind.name} on {lb.name_of(local.id)}, not a struct or union")
    root = lb[lb.resolve(local.id)]
    if not local.name and not root.name:
        raise CoreError(f"CO-RE {kind.name} on an anonymous type {relo.type_id}")
    local_fld, steps = _walk_local(lb, root.id, idx)
    lv, lsize = _field_value(lb, local_fld, kind)
    validate = not local_fld.bitfield or kind == CoreKind.FIELD_SIGNED
    results: list[tuple[int, int]] = []
    for c in _candidates(lb, root if root.name else local, tb):
        tf = _walk_target(lb, local_fld, tb, c.id, steps)
        if tf is not None:
            results.append(_field_value(tb, tf, kind))
    if not results:
        if kind == CoreKind.FIELD_EXISTS:
            return CoreResult(lv, 0, validate=validate)
        return CoreResult(
            lv,
            0,
            poison=True,
            validate=validate,
            why=f"field {relo.access!r} of {lb.name_of(root.id)} not found in the target",
        )
    if len({r[0] for r in results}) > 1:
        raise CoreError(
            f"CO-RE {kind.name} of {lb.name_of(root.id)} ({relo.access}): ambiguous, the "
            f"target's candidates give {sorted({r[0] for r in results})}"
        )
    tv, tsize = results[0]
    new_size = tsize if (kind == CoreKind.FIELD_BYTE_OFFSET and tsize != lsize) else None
    return CoreResult(lv, tv, new_size=new_size, validate=validate)


_SIZE_CODE = {v: k for k, v in SIZE_BYTES.items()}


def patch(insns: list[Instruction], pc: int, relo: CoreRelo, res: CoreResult) -> None:
    """Write a relocation's result into instruction `pc` (one slot per 8 bytes, lddw filler after)."""
    if not 0 <= pc < len(insns):
        raise CoreError(f"CO-RE relocation at insn {pc} is outside its section ({len(insns)} insns)")
    ins = insns[pc]
    if res.poison:
        insns[pc] = Instruction(CALL, 0, 0, 0, POISON_HELPER)
        if ins.is_lddw and pc + 1 < len(insns):
            insns[pc + 1] = Instruction(CALL, 0, 0, 0, POISON_HELPER)
        return
    val = res.target
    cls = ins.cls
    if ins.is_lddw:
        if res.validate and ins.imm64 != res.local & ((1 << 64) - 1):
            raise CoreError(
                f"insn {pc}: lddw holds {ins.imm64:#x}, the CO-RE relocation expects {res.local:#x}"
            )
        lo, hi = val & 0xFFFFFFFF, (val >> 32) & 0xFFFFFFFF
        lo = lo - (1 << 32) if lo >> 31 else lo
        hi = hi - (1 << 32) if hi >> 31 else hi
        insns[pc] = Instruction(ins.opcode, ins.dst, ins.src, ins.off, lo, hi)
        insns[pc + 1] = Instruction(0, 0, 0, 0, hi)
    elif cls in (BPF_ALU, BPF_ALU64):
        if ins.source != BPF_K:
            raise CoreError(f"insn {pc}: CO-RE relocation on a register-source ALU instruction")
        if res.validate and ins.imm != res.local:
            raise CoreError(f"insn {pc}: immediate {ins.imm}, the CO-RE relocation expects {res.local}")
        if not -(1 << 31) <= val < (1 << 31):
            raise CoreError(f"insn {pc}: CO-RE value {val} does not fit a 32-bit immediate")
        insns[pc] = Instruction(ins.opcode, ins.dst, ins.src, ins.off, val)
    elif cls in (BPF_LDX, BPF_ST, BPF_STX):
        if relo.kind != CoreKind.FIELD_BYTE_OFFSET:
            raise CoreError(f"insn {pc}: {relo.kind.name} relocation on a load/store")
        if res.validate and ins.off != res.local:
            raise CoreError(f"insn {pc}: offset {ins.off}, the CO-RE relocation expects {res.local}")
        if not -(1 << 15) <= val < (1 << 15):
            raise CoreError(f"insn {pc}: CO-RE offset {val} does not fit 16 bits")
        opcode = ins.opcode
        if res.new_size is not None:
            if res.new_size not in _SIZE_CODE or cls != BPF_LDX:
                raise CoreError(
                    f"insn {pc}: the target field is {res.new_size} bytes, the access cannot be resized"
                )
            opcode = (opcode & ~0x18) | _SIZE_CODE[res.new_size]
        insns[pc] = Instruction(opcode, ins.dst, ins.src, val, ins.imm)
    else:
        raise CoreError(
            f"insn {pc}: CO-RE relocation on an instruction that takes no constant ({ins.opcode:#x})"
        )
