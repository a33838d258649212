"""Map keys and values <-> Python values, following the BTF types the map was declared with.

`decode(btf, type_id, data)` gives ints (signed where the type says so), dicts for structs and unions
(anonymous members flattened into their parent, as C spells the access), lists for arrays, `bytes`
for arrays of 1-byte integers (MAC addresses, names), floats, and ints for pointers and enums.
`encode(btf, type_id, value)` is the inverse; missing struct members are zero, unknown ones refused.
Both work little-endian, as BPF maps on the hosts xdpsim runs on.
"""

from __future__ import annotations

import struct
from typing import Any

from .types import BTF, BtfError, BtfType, Kind


def decode(btf: BTF, type_id: int, data: bytes) -> Any:
    size = btf.size_of(type_id)
    if len(data) < size:
        raise BtfError(f"{btf.name_of(type_id)} needs {size} bytes, got {len(data)}")
    return _decode(btf, type_id, bytes(data), 0)


def _int(data: bytes, off: int, size: int, signed: bool) -> int:
    return int.from_bytes(data[off : off + size], "little", signed=signed)


def _decode(btf: BTF, type_id: int, data: bytes, off: int) -> Any:
    t = btf[btf.resolve(type_id)]
    if t.kind == Kind.INT:
        v = _int(data, off, t.size, t.signed)
        return bool(v) if t.int_encoding & 4 else v
    if t.kind in (Kind.ENUM, Kind.ENUM64):
        return _int(data, off, t.size, t.signed)
    if t.kind == Kind.PTR:
        return _int(data, off, 8, False)
    if t.kind == Kind.FLOAT:
        if t.size in (4, 8):
            return struct.unpack_from("<f" if t.size == 4 else "<d", data, off)[0]
        return data[off : off + t.size]
    if t.kind == Kind.ARRAY:
        esize = btf.size_of(t.elem_type)
        elem = btf[btf.resolve(t.elem_type)]
        if esize == 1 and elem.kind == Kind.INT:
            return data[off : off + t.nelems]
        return [_decode(btf, t.elem_type, data, off + i * esize) for i in range(t.nelems)]
    if t.kind in (Kind.STRUCT, Kind.UNION):
        out: dict[str, Any] = {}
        for m in t.members:
            if m.bitfield_size:
                out[m.name] = _bitfield(btf, m.type, data, off, m.offset, m.bitfield_size)
                continue
            v = _decode(btf, m.type, data, off + m.offset // 8)
            if not m.name and isinstance(v, dict):
                out.update(v)
            else:
                out[m.name] = v
        return out
    if t.kind == Kind.DATASEC:
        return {btf[m.type].name: _decode(btf, m.type, data, off + m.offset) for m in t.members}
    if t.kind == Kind.VAR:
        return _decode(btf, t.type, data, off)
    raise BtfError(f"cannot decode a value of {btf.name_of(t.id)}")


def _bitfield(btf: BTF, type_id: int, data: bytes, off: int, bit_off: int, bits: int) -> int:
    t = btf[btf.resolve(type_id)]
    start = off + bit_off // 8
    nbytes = (bit_off % 8 + bits + 7) // 8
    raw = int.from_bytes(data[start : start + nbytes], "little") >> (bit_off % 8)
    v = raw & ((1 << bits) - 1)
    if t.signed and v >> (bits - 1):
        v -= 1 << bits
    return v


def encode(btf: BTF, type_id: int, value: Any) -> bytes:
    buf = bytearray(btf.size_of(type_id))
    _encode(btf, type_id, value, buf, 0)
    return bytes(buf)


def _encode(btf: BTF, type_id: int, value: Any, buf: bytearray, off: int) -> None:
    t = btf[btf.resolve(type_id)]
    what = btf.name_of(t.id)
    if isinstance(value, (bytes, bytearray, memoryview)):  # raw bytes fit any type (MACs, whole structs)
        raw = bytes(value)
        size = btf.size_of(t.id)
        if len(raw) > size:
            raise BtfError(f"{len(raw)} bytes do not fit {what} ({size} bytes)")
        buf[off : off + len(raw)] = raw
        return
    if t.kind in (Kind.INT, Kind.ENUM, Kind.ENUM64, Kind.PTR):
        size = 8 if t.kind == Kind.PTR else t.size
        if isinstance(value, str) and t.kind in (Kind.ENUM, Kind.ENUM64):
            value = _enum_value(btf, t, value)
        if not isinstance(value, int):
            raise BtfError(f"{what} takes an integer, not {type(value).__name__}")
        lo = -(1 << (size * 8 - 1))
        if not lo <= value < (1 << (size * 8)):
            raise BtfError(f"{value} does not fit {what} ({size} bytes)")
        buf[off : off + size] = (value & ((1 << (size * 8)) - 1)).to_bytes(size, "little")
    elif t.kind == Kind.FLOAT and t.size in (4, 8):
        struct.pack_into("<f" if t.size == 4 else "<d", buf, off, float(value))
    elif t.kind == Kind.ARRAY:
        if not isinstance(value, (list, tuple)):
            raise BtfError(f"{what} takes a list (or bytes)")
        if len(value) > t.nelems:
            raise BtfError(f"{len(value)} elements do not fit {what}")
        esize = btf.size_of(t.elem_type)
        for i, v in enumerate(value):
            _encode(btf, t.elem_type, v, buf, off + i * esize)
    elif t.kind in (Kind.STRUCT, Kind.UNION):
        if not isinstance(value, dict):
            raise BtfError(f"{what} takes a dict of its members (or bytes)")
        left = dict(value)
        _encode_members(btf, t, left, buf, off)
        if left:
            raise BtfError(f"{what} has no member {', '.join(map(repr, left))}")
    else:
        raise BtfError(f"cannot encode a value of {what}")


def _encode_members(btf: BTF, t: BtfType, left: dict[str, Any], buf: bytearray, off: int) -> None:
    for m in t.members:
        if not m.name:
            inner = btf[btf.resolve(m.type)]
            if inner.kind in (Kind.STRUCT, Kind.UNION):
                _encode_members(btf, inner, left, buf, off + m.offset // 8)
            continue
        if m.name not in left:
            continue
        v = left.pop(m.name)
        if m.bitfield_size:
            if not isinstance(v, int):
                raise BtfError(f"bitfield {m.name} takes an integer")
            mask = (1 << m.bitfield_size) - 1
            start = off + m.offset // 8
            shift = m.offset % 8
            nbytes = (shift + m.bitfield_size + 7) // 8
            cur = int.from_bytes(buf[start : start + nbytes], "little")
            cur = (cur & ~(mask << shift)) | ((v & mask) << shift)
            buf[start : start + nbytes] = cur.to_bytes(nbytes, "little")
        else:
            _encode(btf, m.type, v, buf, off + m.offset // 8)


def _enum_value(btf: BTF, t: BtfType, name: str) -> int:
    for m in t.members:
        if m.name == name:
            return m.value
    raise BtfError(f"{btf.name_of(t.id)} has no enumerator {name!r}")
