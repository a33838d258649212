"""BTF (the BPF Type Format, the `.BTF` ELF section and /sys/kernel/btf/vmlinux): parsing every kind.

Layout (include/uapi/linux/btf.h): a header, a type section of variable-length records (type id 1 is
the first record, 0 is void), a string section. Each record keeps its byte offset in the type section
so that the loader can patch sizes and offsets in place (libbpf's DATASEC fix-ups) without
re-encoding the whole blob.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

BTF_MAGIC = 0xEB9F
HEADER = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, type_off, type_len, str_off, str_len
_TYPE = struct.Struct("<III")  # name_off, info, size/type
_U32 = struct.Struct("<I")


class BtfError(ValueError):
    """Malformed BTF; the message says which type id or offset."""


class Kind(IntEnum):
    UNKN = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


_KINDS = list(Kind)
# bytes that follow the 12-byte common header, fixed and per vlen entry
_EXTRA_FIXED = {Kind.INT: 4, Kind.ARRAY: 12, Kind.VAR: 4, Kind.DECL_TAG: 4}
_EXTRA_PER_VLEN = {
    Kind.STRUCT: 12,
    Kind.UNION: 12,
    Kind.ENUM: 8,
    Kind.ENUM64: 12,
    Kind.FUNC_PROTO: 8,
    Kind.DATASEC: 12,
}
MODIFIERS = {Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG}
INT_SIGNED = 1
VAR_STATIC, VAR_GLOBAL_ALLOCATED, VAR_GLOBAL_EXTERN = 0, 1, 2


@dataclass
class Member:
    """A struct/union member (offset in bits, bitfield size 0 when not a bitfield), a function parameter
    (offset unused), an enumerator (`value`), or a DATASEC entry (`offset`/`size` in bytes)."""

    name: str
    type: int = 0
    offset: int = 0
    bitfield_size: int = 0
    value: int = 0
    size: int = 0


@dataclass
class BtfType:
    id: int
    kind: Kind
    name: str
    size: int = 0  # INT, STRUCT, UNION, ENUM*, DATASEC, FLOAT
    type: int = 0  # PTR, TYPEDEF, modifiers, FUNC, VAR, DECL_TAG: the referenced type; FUNC_PROTO: return
    kflag: bool = False
    vlen: int = 0
    members: list[Member] = field(default_factory=list)
    # INT: encoding bits (signed, char, bool), bit offset and width
    int_encoding: int = 0
    int_offset: int = 0
    int_bits: int = 0
    # ARRAY
    elem_type: int = 0
    index_type: int = 0
    nelems: int = 0
    # VAR linkage, FUNC linkage (in vlen), DECL_TAG component index
    linkage: int = 0
    component_idx: int = -1
    offset: int = 0  # byte offset of the record in the type section

    @property
    def signed(self) -> bool:
        if self.kind == Kind.INT:
            return bool(self.int_encoding & INT_SIGNED)
        if self.kind in (Kind.ENUM, Kind.ENUM64):
            return self.kflag
        return False


class BTF:
    """Parsed BTF. `btf[id]` is a type (0 is void); `by_name(name)` lists the ids with that name.

    With `lazy=True` (the big target BTFs of CO-RE: vmlinux has over 100,000 types) the records are
    only scanned for their offsets and decoded when asked for; `types` still gives them all.
    """

    def __init__(self, raw: bytes, *, lazy: bool = False):
        self.raw = bytes(raw)
        if len(raw) < HEADER.size:
            raise BtfError(f"BTF of {len(raw)} bytes is shorter than its header")
        magic, self.version, self.flags, hdr_len, type_off, type_len, str_off, str_len = HEADER.unpack_from(
            raw
        )
        if magic != BTF_MAGIC:
            raise BtfError(f"bad BTF magic {magic:#06x} (big-endian BTF is not supported)")
        if hdr_len < HEADER.size or hdr_len > len(raw):
            raise BtfError(f"bad BTF header length {hdr_len}")
        self.hdr_len = hdr_len
        self.type_start = hdr_len + type_off
        self.str_start = hdr_len + str_off
        if self.type_start + type_len > len(raw) or self.str_start + str_len > len(raw):
            raise BtfError(f"BTF sections run past the end ({len(raw)} bytes)")
        self.strings = raw[self.str_start : self.str_start + str_len]
        self._sec = self.raw[self.type_start : self.type_start + type_len]
        self._names: dict[str, list[int]] | None = None
        self._strcache: dict[int, str] = {}
        self._offsets = self._scan(self._sec)  # record offset of type id i + 1
        self._cache: list[BtfType | None] = [BtfType(0, Kind.UNKN, "")] + [None] * len(self._offsets)
        self._all = False
        if not lazy:
            _ = self.types

    # --- parsing ---------------------------------------------------------------------------------

    def string(self, off: int) -> str:
        if off == 0:
            return ""
        cached = self._strcache.get(off)
        if cached is not None:
            return cached
        if not 0 <= off < len(self.strings):
            raise BtfError(f"string offset {off} outside the string section ({len(self.strings)} bytes)")
        end = self.strings.find(b"\0", off)
        if end < 0:
            raise BtfError(f"string at offset {off} is not NUL-terminated")
        text = self.strings[off:end].decode("utf-8", "replace")
        self._strcache[off] = text  # vmlinux names the same member types thousands of times
        return text

    @staticmethod
    def _scan(sec: bytes) -> list[int]:
        """Offsets of every record, checking kinds and that each record fits."""
        out: list[int] = []
        pos, n = 0, len(sec)
        while pos < n:
            if pos + 12 > n:
                raise BtfError(f"type {len(out) + 1}: record truncated at offset {pos}")
            (info,) = _U32.unpack_from(sec, pos + 4)
            k = (info >> 24) & 0x1F
            if k >= len(_KINDS) or k == 0:
                raise BtfError(f"type {len(out) + 1}: unknown kind {k}")
            kind = _KINDS[k]
            end = pos + 12 + _EXTRA_FIXED.get(kind, 0) + _EXTRA_PER_VLEN.get(kind, 0) * (info & 0xFFFF)
            if end > n:
                raise BtfError(f"type {len(out) + 1} ({kind.name}): record truncated")
            out.append(pos)
            pos = end
        return out

    def _decode(self, tid: int) -> BtfType:
        sec, pos = self._sec, self._offsets[tid - 1]
        u32s = _TYPE
        name_off, info, size_type = _TYPE.unpack_from(sec, pos)
        start = pos
        pos += 12
        kind = _KINDS[(info >> 24) & 0x1F]
        vlen = info & 0xFFFF
        kflag = bool(info >> 31)
        t = BtfType(tid, kind, self.string(name_off), kflag=kflag, vlen=vlen, offset=start)
        if kind == Kind.INT:
            t.size = size_type
            (v,) = _U32.unpack_from(sec, pos)
            t.int_encoding, t.int_offset, t.int_bits = (v >> 24) & 0x0F, (v >> 16) & 0xFF, v & 0xFF
        elif kind == Kind.ARRAY:
            t.elem_type, t.index_type, t.nelems = u32s.unpack_from(sec, pos)
        elif kind in (Kind.STRUCT, Kind.UNION):
            t.size = size_type
            for i in range(vlen):
                mname, mtype, moff = u32s.unpack_from(sec, pos + 12 * i)
                if kflag:
                    t.members.append(Member(self.string(mname), mtype, moff & 0xFFFFFF, moff >> 24))
                else:
                    t.members.append(Member(self.string(mname), mtype, moff))
        elif kind == Kind.ENUM:
            t.size = size_type
            for i in range(vlen):
                ename, val = struct.unpack_from("<Ii" if kflag else "<II", sec, pos + 8 * i)
                t.members.append(Member(self.string(ename), value=val))
        elif kind == Kind.ENUM64:
            t.size = size_type
            for i in range(vlen):
                ename, lo, hi = u32s.unpack_from(sec, pos + 12 * i)
                val = lo | (hi << 32)
                if kflag and val >> 63:
                    val -= 1 << 64
                t.members.append(Member(self.string(ename), value=val))
        elif kind == Kind.FUNC_PROTO:
            t.type = size_type
            for i in range(vlen):
                pname, ptype = struct.unpack_from("<II", sec, pos + 8 * i)
                t.members.append(Member(self.string(pname), ptype))
        elif kind == Kind.VAR:
            t.type = size_type
            (t.linkage,) = _U32.unpack_from(sec, pos)
        elif kind == Kind.DATASEC:
            t.size = size_type
            for i in range(vlen):
                vtype, voff, vsize = u32s.unpack_from(sec, pos + 12 * i)
                t.members.append(Member("", vtype, voff, size=vsize))
        elif kind == Kind.DECL_TAG:
            t.type = size_type
            (t.component_idx,) = struct.unpack_from("<i", sec, pos)
        elif kind == Kind.FLOAT:
            t.size = size_type
        elif kind == Kind.FUNC:
            t.type = size_type
            t.linkage = vlen
        elif kind != Kind.FWD:  # PTR, TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG
            t.type = size_type
        last = len(self._offsets)
        if kind not in (Kind.ENUM, Kind.ENUM64):
            for ref in (t.type, t.elem_type, *(m.type for m in t.members)):
                if ref > last:
                    raise BtfError(
                        f"type {tid} ({kind.name} {t.name!r}) refers to type {ref}, beyond the last ({last})"
                    )
        return t

    # --- queries ---------------------------------------------------------------------------------

    @property
    def types(self) -> list[BtfType]:
        """Every type, void first (decodes whatever a lazy BTF has not decoded yet)."""
        if not self._all:
            for tid in range(1, len(self._cache)):
                if self._cache[tid] is None:
                    self._cache[tid] = self._decode(tid)
            self._all = True
        return self._cache  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self._cache)

    def __getitem__(self, type_id: int) -> BtfType:
        if not 0 <= type_id < len(self._cache):
            raise BtfError(f"no BTF type {type_id} (last is {len(self._cache) - 1})")
        t = self._cache[type_id]
        if t is None:
            t = self._cache[type_id] = self._decode(type_id)
        return t

    def by_name(self, name: str) -> list[int]:
        if self._names is None:
            names: dict[str, list[int]] = {}
            sec = self._sec
            for tid, off in enumerate(self._offsets, 1):
                (name_off,) = _U32.unpack_from(sec, off)
                if name_off:
                    names.setdefault(self.string(name_off), []).append(tid)
            self._names = names
        return self._names.get(name, [])

    def find(self, name: str, kind: Kind | None = None) -> BtfType | None:
        for tid in self.by_name(name):
            if kind is None or self.types[tid].kind == kind:
                return self.types[tid]
        return None

    def name_of(self, type_id: int) -> str:
        """A C-like spelling of the type (`struct iphdr`, `__u32 *`)."""
        t = self[type_id]
        if t.kind == Kind.UNKN:
            return "void"
        if t.kind in (Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64):
            word = {Kind.STRUCT: "struct", Kind.UNION: "union"}.get(t.kind, "enum")
            return f"{word} {t.name or '(anon)'}"
        if t.kind == Kind.PTR:
            return f"{self.name_of(t.type)} *"
        if t.kind == Kind.ARRAY:
            return f"{self.name_of(t.elem_type)}[{t.nelems}]"
        if t.kind in MODIFIERS:
            return f"{t.kind.name.lower()} {self.name_of(t.type)}"
        return t.name or t.kind.name.lower()

    def skip_mods(self, type_id: int) -> int:
        """Follow const/volatile/restrict/type_tag."""
        seen = 0
        while self[type_id].kind in MODIFIERS:
            type_id = self[type_id].type
            seen += 1
            if seen > 64:
                raise BtfError(f"type {type_id}: modifier loop")
        return type_id

    def resolve(self, type_id: int) -> int:
        """Follow modifiers and typedefs to the underlying type id."""
        seen = 0
        while self[type_id].kind in MODIFIERS or self[type_id].kind == Kind.TYPEDEF:
            type_id = self[type_id].type
            seen += 1
            if seen > 64:
                raise BtfError(f"type {type_id}: typedef/modifier loop")
        return type_id

    def size_of(self, type_id: int) -> int:
        """sizeof() of the type, as btf__resolve_size."""
        depth, mult = 0, 1
        while True:
            t = self[self.resolve(type_id)]
            if t.kind == Kind.ARRAY:
                mult *= t.nelems
                type_id = t.elem_type
            elif t.kind == Kind.PTR:
                return 8 * mult
            elif t.kind in (
                Kind.INT,
                Kind.STRUCT,
                Kind.UNION,
                Kind.ENUM,
                Kind.ENUM64,
                Kind.FLOAT,
                Kind.DATASEC,
            ):
                return t.size * mult
            elif t.kind == Kind.VAR:
                type_id = t.type
            else:
                raise BtfError(f"type {t.id} ({t.kind.name} {t.name!r}) has no size")
            depth += 1
            if depth > 64:
                raise BtfError(f"type {type_id}: too deeply nested to size")

    def datasecs(self) -> dict[str, BtfType]:
        return {t.name: t for t in self.types if t.kind == Kind.DATASEC}

    def func_types(self) -> dict[str, int]:
        """FUNC name -> type id."""
        return {t.name: t.id for t in self.types if t.kind == Kind.FUNC}


def essential_name(name: str) -> str:
    """libbpf's "flavour" rule: `iphdr___old` matches `iphdr`."""
    i = name.find("___")
    return name[:i] if i > 0 else name
