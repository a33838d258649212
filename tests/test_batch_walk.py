"""walk_records: the native walk's header fields equal the Python walk's, in both byte orders."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from xdpsim.io.native import walk_records


def _image(endian: str, records: list[tuple[int, int, bytes, int]]) -> np.ndarray:
    body = b"".join(struct.pack(endian + "IIII", s, f, len(d), o) + d for s, f, d, o in records)
    return np.frombuffer(b"\0" * 24 + body + b"\x01\x02\x03", dtype=np.uint8)  # a torn tail


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("scale", [1, 1000])
def test_walk_fields_native_equals_python(endian: str, scale: int) -> None:
    rng = np.random.default_rng(7)
    recs = [(int(rng.integers(0, 2**32)), int(rng.integers(0, 10**6)),
             bytes(rng.integers(0, 256, ln, np.uint8)), int(rng.integers(0, 2**32)))
            for ln in rng.integers(0, 300, 50).tolist()]
    buf = _image(endian, recs)
    for count in (1, 7, 50, 64):
        a = walk_records(buf, 24, count, endian, scale, use_native=True)
        b = walk_records(buf, 24, count, endian, scale, use_native=False)
        assert a.end == b.end
        for x, y in zip(a[:4], b[:4], strict=True):
            assert x.tolist() == y.tolist()
        k = min(count, 50)
        assert a.caplen.tolist() == [len(d) for _s, _f, d, _o in recs[:k]]
        assert a.orig.tolist() == [o for *_x, o in recs[:k]]
        assert a.ts_ns.tolist() == [s * 10**9 + f * scale for s, f, _d, _o in recs[:k]]
