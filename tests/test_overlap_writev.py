"""writev.write_pieces' native loop (xdpsim_writev_all) with libc's own writev: errors come back with the
thread's errno; bytes in order; the callbacks are used only where a test replaced writev."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from xdpsim.pipeline import writev

pytestmark = pytest.mark.skipif(not writev.available(), reason="llvmlite cannot compile writev's plan here")


def _stream(lengths: list[int]) -> tuple[list[np.ndarray], np.ndarray, bytes]:
    rng = np.random.default_rng(7)
    src = [rng.integers(0, 256, n, dtype=np.uint8) for n in lengths]
    iov = np.array([[a.ctypes.data, len(a)] for a in src], np.uint64)
    return src, iov, b"".join(a.tobytes() for a in src)


def test_real_libc_is_called_directly() -> None:
    with writev._Syscalls() as (wfn, efn):
        assert (wfn, efn) == (writev._LIBC_WRITEV, writev._LIBC_ERRNO) and wfn and efn


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_disk_full_from_the_native_loop_is_enospc() -> None:
    _src, iov, _ = _stream([100, 5000, 30])
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(OSError) as e:
            writev.write_pieces(fd, iov, len(iov), np.zeros(4096, np.uint8), min_ref=64)
    finally:
        os.close(fd)
    assert e.value.errno == errno.ENOSPC


def test_many_writevs_in_one_call(tmp_path: Path) -> None:
    """~300 pieces, short and long, writevs of at most 4 iovecs and 3000 bytes: the stream in order."""
    lengths = [int(x) for x in np.random.default_rng(3).integers(1, 2000, 300)]
    _src, iov, want = _stream(lengths)
    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        writev.write_pieces(fd, iov, len(iov), np.zeros(1024, np.uint8), min_ref=256, max_iov=4,
                            max_bytes=3000)
    finally:
        os.close(fd)
    assert path.read_bytes() == want


def test_bad_descriptor_is_ebadf() -> None:
    _src, iov, _ = _stream([10, 20])
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError) as e:
        writev.write_pieces(w, iov, 2, np.zeros(64, np.uint8), min_ref=8)
    assert e.value.errno == errno.EBADF
