"""The bpf() syscall layer against the running kernel: maps, loads, verifier logs, BTF, test runs.

Skipped, with the reason, where the kernel cannot be used (not Linux, not root, bpf() not permitted).
Figures asserted here were measured on Linux 6.18 (x86_64).
"""

from __future__ import annotations

import errno
import struct

import kernel_fixtures
import pytest
from kernel_fixtures import (
    DW,
    W,
    add,
    exit_,
    ldx,
    mov,
    movr,
    raw,
    subr,
    tiny_btf,
)

from xdpsim.errors import KernelError
from xdpsim.kernel import bpf

XDP = 6
ARRAY, HASH, PERCPU_ARRAY = 2, 1, 6


# The fixtures (conftest.py may import them too; these are the same objects).
kernel = kernel_fixtures.kernel



def load(insns, **kw) -> bpf.Fd:
    res = bpf.prog_load(XDP, raw(insns), name=kw.pop("name", "t"), **kw)
    assert res.fd is not None
    return res.fd


# --- no kernel needed -------------------------------------------------------------------------------


def test_parse_cpu_list():
    assert bpf.parse_cpu_list("0-3,5,7-8\n") == [0, 1, 2, 3, 5, 7, 8]
    assert bpf.parse_cpu_list("0") == [0]
    assert bpf.percpu_value_size(12) == 16
    assert bpf.percpu_value_size(8) == 8
    assert bpf.percpu_value_size(1) == 8


def test_attr_layouts_match_uapi():
    # Offsets from the kernel's own BTF for union bpf_attr (6.18).
    assert bpf.MapCreateAttr.map_name.offset == 28
    assert bpf.MapCreateAttr.btf_fd.offset == 48
    assert bpf.MapCreateAttr.map_extra.offset == 64
    assert bpf.MapElemAttr.key.offset == 8 and bpf.MapElemAttr.flags.offset == 24
    assert bpf.ProgLoadAttr.prog_name.offset == 48
    assert bpf.ProgLoadAttr.func_info.offset == 80
    assert bpf.ProgLoadAttr.line_info.offset == 96
    assert bpf.ProgLoadAttr.fd_array.offset == 120
    assert bpf.ProgLoadAttr.log_true_size.offset == 140
    assert bpf.TestRunAttr.ctx_in.offset == 48 and bpf.TestRunAttr.batch_size.offset == 72
    assert bpf.BtfLoadAttr.btf_log_true_size.offset == 28


# --- with the kernel --------------------------------------------------------------------------------


def test_probe_reports_why(kernel):
    ok, why = bpf.kernel_available()
    assert ok and "BPF_PROG_TEST_RUN" in why


def test_return_value_is_raw_r0(kernel):
    with load([mov(0, 2), exit_()]) as fd:
        assert bpf.prog_test_run(fd.fd, bytes(14)).retval == 2
    # An XDP program may return an unknown action: the verifier accepts it, TEST_RUN reports it as is.
    with load([mov(0, 7), exit_()]) as fd:
        run = bpf.prog_test_run(fd.fd, bytes(range(60)))
        assert run.retval == 7
        assert run.data_out == bytes(range(60))


def test_array_map_ops(kernel):
    with bpf.map_create(ARRAY, 4, 8, 4, name="arr") as m:
        k = struct.pack("<I", 2)
        assert bpf.map_lookup(m.fd, k, 8) == bytes(8)
        bpf.map_update(m.fd, k, struct.pack("<Q", 99))
        assert bpf.map_lookup(m.fd, k, 8) == struct.pack("<Q", 99)
        assert bpf.map_keys(m.fd, 4) == [struct.pack("<I", i) for i in range(4)]
        assert bpf.map_lookup(m.fd, struct.pack("<I", 4), 8) is None
        with pytest.raises(KernelError) as ei:
            bpf.map_delete(m.fd, k)  # array elements cannot be deleted
        assert ei.value.errno == errno.EINVAL
        with pytest.raises(KernelError) as ei:
            bpf.map_update(m.fd, k, bytes(8), bpf.BPF_NOEXIST)
        assert ei.value.errno == errno.EEXIST
        info = bpf.map_info(m.fd)
        assert info["name"] == "arr" and info["value_size"] == 8 and info["max_entries"] == 4
        bpf.map_freeze(m.fd)
        with pytest.raises(KernelError) as ei:
            bpf.map_update(m.fd, k, bytes(8))
        assert ei.value.errno == errno.EPERM


def test_hash_map_ops(kernel):
    with bpf.map_create(HASH, 2, 4, 8, name="h") as m:
        assert bpf.map_get_next_key(m.fd, None, 2) is None
        for i in range(3):
            bpf.map_update(m.fd, struct.pack("<H", i), struct.pack("<I", i * 10), bpf.BPF_NOEXIST)
        assert sorted(bpf.map_keys(m.fd, 2)) == [struct.pack("<H", i) for i in range(3)]
        assert bpf.map_delete(m.fd, struct.pack("<H", 1)) is True
        assert bpf.map_delete(m.fd, struct.pack("<H", 1)) is False
        with pytest.raises(KernelError) as ei:
            bpf.map_update(m.fd, struct.pack("<H", 7), bytes(4), bpf.BPF_EXIST)
        assert ei.value.errno == errno.ENOENT


def test_map_create_refusal_names_the_map(kernel):
    with pytest.raises(KernelError) as ei:
        bpf.map_create(ARRAY, 8, 4, 1, name="badkey")  # array keys are u32
    assert ei.value.errno == errno.EINVAL and "badkey" in str(ei.value)


def test_verifier_refusal_carries_log(kernel):
    with pytest.raises(KernelError) as ei:
        bpf.prog_load(XDP, raw([exit_()]), name="noinit")
    assert ei.value.errno == errno.EACCES
    assert "R0 !read_ok" in ei.value.log
    assert "processed 1 insns" in ei.value.log


def test_verifier_log_grows_past_the_first_buffer(kernel):
    insns = raw([mov(1, 0)] + [add(1, 1)] * 20000 + [exit_()])
    res = bpf.prog_load_raw(XDP, insns, name="long", log_level=bpf.BPF_LOG_LEVEL2)
    assert res.fd is None and res.errno == errno.EACCES
    assert len(res.log) > bpf.LOG_START
    assert res.log.startswith("func#0") or res.log.startswith("0:")  # whole, not rotated
    assert "R0 !read_ok" in res.log


def test_btf_line_info_puts_source_lines_in_the_log(kernel):
    blob, ids, offs = tiny_btf(["bad"], ["t.c", "int x = 1;", "return verdict;"])
    with bpf.btf_load(blob) as btf:
        finfo = struct.pack("<II", 0, ids["bad"])
        linfo = struct.pack("<IIII", 0, offs["t.c"], offs["int x = 1;"], (9 << 10) | 2)
        linfo += struct.pack("<IIII", 1, offs["t.c"], offs["return verdict;"], (10 << 10) | 2)
        res = bpf.prog_load_raw(XDP, raw([mov(1, 1), exit_()]), name="bad", prog_btf_fd=btf.fd,
                                func_info=finfo, line_info=linfo, log_level=1)
    assert res.fd is None
    assert "; return verdict; @ t.c:10" in res.log
    assert "; int x = 1; @ t.c:9" in res.log


def test_btf_refusal_carries_log(kernel):
    blob, _, _ = tiny_btf(["f"], [])
    bad = bytearray(blob)
    struct.pack_into("<I", bad, 24 + 4, (99 << 24))  # first type: an unknown kind
    with pytest.raises(KernelError) as ei:
        bpf.btf_load(bytes(bad))
    assert ei.value.errno == errno.EINVAL
    assert ei.value.log  # the kernel says which type is wrong


def test_prog_info(kernel):
    with load([mov(0, 2), exit_()], name="info_me") as fd:
        info = bpf.prog_info(fd.fd)
        assert info["name"] == "info_me" and info["type"] == XDP and info["id"] > 0
        assert len(info["tag"]) == 16


def test_fd_closes_once(kernel):
    fd = load([mov(0, 2), exit_()])
    n = fd.fd
    fd.close()
    fd.close()
    assert fd.closed
    with pytest.raises(ValueError):
        _ = fd.fd
    with pytest.raises(OSError):
        import os

        os.fstat(n)


def test_xdp_packet_sizes(kernel):
    """TEST_RUN's XDP frame: 4096 bytes = 256 headroom + at most 3520 of linear packet + 320 of
    skb_shared_info. More goes into fragments of 4096 (17 at most), even for a program without
    BPF_F_XDP_HAS_FRAGS; the program then sees the first 3520 bytes, the output has them all."""
    # r0 = data_end - data
    prog = [ldx(W, 2, 1, 4), ldx(W, 3, 1, 0), movr(0, 2), subr(0, 3), exit_()]
    with load(prog) as fd:
        with pytest.raises(KernelError) as ei:
            bpf.prog_test_run(fd.fd, bytes(13))
        assert ei.value.errno == errno.EINVAL  # less than an Ethernet header
        assert bpf.prog_test_run(fd.fd, bytes(14)).retval == 14
        assert bpf.prog_test_run(fd.fd, bytes(3520)).retval == 3520
        run = bpf.prog_test_run(fd.fd, bytes(range(256)) * 16)
        assert run.retval == 3520 and run.data_out == bytes(range(256)) * 16
        biggest = 3520 + 17 * 4096
        run = bpf.prog_test_run(fd.fd, bytes(biggest))
        assert run.retval == 3520 and len(run.data_out) == biggest == 73152
        with pytest.raises(KernelError) as ei:
            bpf.prog_test_run(fd.fd, bytes(biggest + 1))
        assert ei.value.errno == errno.ENOMEM


def test_repeat_gives_a_duration(kernel):
    with load([mov(0, 2), exit_()]) as fd:
        run = bpf.prog_test_run(fd.fd, bytes(64), repeat=1000)
        assert run.retval == 2 and run.duration_ns > 0


def test_output_buffer_too_small_is_an_error(kernel):
    with load([mov(0, 2), exit_()]) as fd:
        with pytest.raises(KernelError) as ei:
            bpf.prog_test_run(fd.fd, bytes(64), data_out_size=10)
        assert ei.value.errno == errno.ENOSPC and "64" in str(ei.value)


def test_percpu_syscall_layout(kernel):
    n = bpf.possible_cpus()
    with bpf.map_create(PERCPU_ARRAY, 4, 12, 1, name="pc") as m:
        flat = b"".join(struct.pack("<III", c, 0, 0) + bytes(4) for c in range(n))
        bpf.map_update(m.fd, bytes(4), flat)
        # one value per possible CPU, each rounded up from 12 to 16 bytes
        assert bpf.map_lookup(m.fd, bytes(4), 16 * n) == flat


def test_bad_ctx_access_is_refused(kernel):
    # r0 = *(u64 *)(r1 + 0) is not allowed on xdp_md: the verifier says so in its log
    with pytest.raises(KernelError) as ei:
        bpf.prog_load(XDP, raw([ldx(DW, 0, 1, 0), exit_()]), name="ctxdw")
    assert ei.value.errno == errno.EACCES and "invalid bpf_context access" in ei.value.log
