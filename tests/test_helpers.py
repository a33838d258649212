"""Helpers: results, argument checks and side effects; csum_diff, bpf_loop and printk against the kernel."""

from __future__ import annotations

import errno
import struct

import kernel_fixtures
import pytest
from kernel_fixtures import W, ld_map, st

from xdpsim import isa
from xdpsim.asm import assemble
from xdpsim.engines.interp import Interpreter
from xdpsim.helpers import HELPERS, helper_id, helper_name
from xdpsim.helpers.csum import csum_diff
from xdpsim.hooks.xdp import XdpAction, run_xdp
from xdpsim.maps import RedirectTarget
from xdpsim.runtime import Runtime
from xdpsim.spec import FuncInfo, MapSpec, MapType, ObjectSpec, ProgramSpec, ProgType

kernel = kernel_fixtures.kernel
PACKET = bytes(range(64))
U32 = 0xFFFF_FFFF
U64 = (1 << 64) - 1

Part = str | list[isa.Instruction]


def code(*parts: Part) -> list[isa.Instruction]:
    out: list[isa.Instruction] = []
    for p in parts:
        out += assemble(p) if isinstance(p, str) else p
    return out


def stack_bytes(data: bytes, at: int) -> list[isa.Instruction]:
    """Store `data` (padded to 4) at r10 - at."""
    data += bytes(-len(data) % 4)
    return [st(W, 10, -at + i, struct.unpack_from("<i", data, i)[0]) for i in range(0, len(data), 4)]


def spec_of(insns: list[isa.Instruction], maps: list[MapSpec] | None = None, **kw) -> ObjectSpec:
    p = ProgramSpec("p", "xdp", ProgType.XDP, "xdp", insns, license="GPL", **kw)
    return ObjectSpec("<t>", {"p": p}, list(maps or []), license="GPL")


def run(spec: ObjectSpec, data: bytes = PACKET, rt: Runtime | None = None, **kw):
    rt = rt or Runtime()
    coll = rt.load(spec)
    return run_xdp(rt, Interpreter(), coll.programs["p"], data, **kw), coll


def kernel_run(spec: ObjectSpec, data: bytes = PACKET):
    from xdpsim.engines.kernel import KernelCollection

    with KernelCollection(spec) as kc:
        return kc.run_xdp("p", data)


# ---------------------------------------------------------------------------- registry


def test_registry_ids_are_the_kernels() -> None:
    expected = {1: "map_lookup_elem", 2: "map_update_elem", 3: "map_delete_elem", 5: "ktime_get_ns",
                6: "trace_printk", 7: "get_prandom_u32", 8: "get_smp_processor_id", 12: "tail_call",
                23: "redirect", 25: "perf_event_output", 28: "csum_diff", 42: "get_numa_node_id",
                44: "xdp_adjust_head", 51: "redirect_map", 54: "xdp_adjust_meta", 65: "xdp_adjust_tail",
                69: "fib_lookup", 87: "map_push_elem", 88: "map_pop_elem", 89: "map_peek_elem",
                93: "spin_lock", 94: "spin_unlock", 125: "ktime_get_boot_ns", 130: "ringbuf_output",
                131: "ringbuf_reserve", 132: "ringbuf_submit", 133: "ringbuf_discard", 134: "ringbuf_query",
                163: "check_mtu", 164: "for_each_map_elem", 177: "trace_vprintk", 181: "loop",
                188: "xdp_get_buff_len", 189: "xdp_load_bytes", 190: "xdp_store_bytes", 195:
                "map_lookup_percpu_elem", 118: "jiffies64"}
    for ident, name in expected.items():
        assert HELPERS[ident].name == name, ident
        assert helper_id(f"bpf_{name}") == ident
    assert helper_name(9) == "bpf_skb_store_bytes"


# ---------------------------------------------------------------------------- csum_diff


def csum_prog(frm: bytes, to: bytes, seed: int, from_size: int | None = None) -> ObjectSpec:
    fs = len(frm) if from_size is None else from_size
    return spec_of(code(
        stack_bytes(frm, 64), stack_bytes(to, 128),
        f"r1 = r10\nr1 += -64\nr2 = {fs}\nr3 = r10\nr3 += -128\nr4 = {len(to)}\nr5 = {seed}\ncall 28\nexit",
    ))


CSUM_CASES = [
    (b"\x45\x00\x00\x54", b"\x45\x00\x00\x58", 0),
    (b"\x01\x02\x03\x04\xff\xff\xff\xff", b"\xaa\xbb\xcc\xdd\x00\x01\x02\x03", 0x1234),
    (b"", b"\x11\x22\x33\x44" * 4, 0xFFFF),
    (b"\x11\x22\x33\x44" * 4, b"", 0xABCD),
    (b"", b"", 7),
    (b"\xff\xff\xff\xff" * 8, b"\x00\x00\x00\x01", 0xFFFFFFF),
]


@pytest.mark.parametrize("frm, to, seed", CSUM_CASES)
def test_csum_diff(frm: bytes, to: bytes, seed: int) -> None:
    res, _ = run(csum_prog(frm, to, seed))
    assert res.error is None
    assert res.retval == csum_diff(frm, to, seed)
    assert res.retval <= 0xFFFF


def test_csum_diff_bad_sizes() -> None:
    res, _ = run(csum_prog(b"\x01\x02\x03\x04", b"", 0, from_size=3))
    assert res.retval == (-errno.EINVAL) & U64


@pytest.mark.parametrize("frm, to, seed", CSUM_CASES)
def test_csum_diff_agrees_with_kernel(kernel: str, frm: bytes, to: bytes, seed: int) -> None:
    spec = csum_prog(frm, to, seed)
    res, _ = run(spec)
    assert kernel_run(spec).retval & U32 == res.retval & U32


# ---------------------------------------------------------------------------- printk


def printk_prog(fmt: bytes, *args: int) -> ObjectSpec:
    sets = "\n".join(f"r{3 + i} = {a} ll" for i, a in enumerate(args))
    return spec_of(code(stack_bytes(fmt, 64), "r1 = r10\nr1 += -64", f"r2 = {len(fmt)}", sets or [],
                        "call 6\nexit"))


@pytest.mark.parametrize("fmt, args, text", [
    (b"hello\0", (), "hello"),
    (b"x=%d y=%u\0", (U64, U64), "x=-1 y=4294967295"),
    (b"%ld %lu %lx\0", (U64, U64, 255), "-1 18446744073709551615 ff"),
    (b"%x %llx %i\0", (0x1_0000_00AB, 0x1_0000_00AB, 5), "ab 1000000ab 5"),
    (b"%c%c %% %05d\0", (0x41, 0x42, 42), "AB % 00042"),
    (b"line\n\0", (), "line"),
])
def test_trace_printk(fmt: bytes, args: tuple[int, ...], text: str) -> None:
    res, _ = run(printk_prog(fmt, *args))
    assert res.error is None and res.trace == [text]
    assert res.retval == len(text) + (1 if fmt.endswith(b"\n\0") else 0)


@pytest.mark.parametrize("fmt", [b"no terminator", b"%q\0", b"%d %d %d %d\0"])
def test_trace_printk_refuses(fmt: bytes) -> None:
    res, _ = run(printk_prog(fmt, 1, 2, 3))
    assert res.retval == (-errno.EINVAL) & U64 and res.trace == []


def test_trace_printk_string_argument() -> None:
    prog = code(stack_bytes(b"name=%s\0", 64), stack_bytes(b"eth0\0", 32),
                "r1 = r10\nr1 += -64\nr2 = 8\nr3 = r10\nr3 += -32\ncall 6\nexit")
    res, _ = run(spec_of(prog))
    assert res.trace == ["name=eth0"]


def test_trace_printk_agrees_with_kernel_on_return_value(kernel: str) -> None:
    spec = printk_prog(b"x=%d y=%u\0", U64, 7)
    res, _ = run(spec)
    assert kernel_run(spec).retval & U32 == res.retval & U32


def test_trace_vprintk() -> None:
    args = struct.pack("<4Q", 1, 2, 3, 4)
    prog = code(stack_bytes(b"%d-%d-%d-%d\0", 64), stack_bytes(args, 128),
                "r1 = r10\nr1 += -64\nr2 = 12\nr3 = r10\nr3 += -128\nr4 = 32\ncall 177\nexit")
    res, _ = run(spec_of(prog))
    assert res.trace == ["1-2-3-4"] and res.retval == 7


# ---------------------------------------------------------------------------- time, random, cpu


def test_time_and_cpu() -> None:
    res, _ = run(spec_of(code("call 5\nexit")), now_ns=123_456_789_000)
    assert res.retval == 123_456_789_000
    res, _ = run(spec_of(code("call 118\nexit")), now_ns=2_000_000_000)
    assert res.retval == 500  # HZ = 250
    rt = Runtime(cpus=4)
    res, _ = run(spec_of(code("call 8\nexit")), rt=rt, queue=6)
    assert res.retval == 2
    res, _ = run(spec_of(code("call 42\nexit")))
    assert res.retval == 0


def test_prandom_is_deterministic_per_seed() -> None:
    spec = spec_of(code("call 7\nr6 = r0\ncall 7\nr0 <<= 32\nr0 |= r6\nexit"))
    a = [run(spec, rt=Runtime(seed=1))[0].retval for _ in range(2)]
    b = run(spec, rt=Runtime(seed=2))[0].retval
    assert a[0] == a[1] != b
    rt = Runtime(seed=1)
    coll = rt.load(spec)
    eng = Interpreter()
    first = run_xdp(rt, eng, coll.programs["p"], PACKET).retval
    second = run_xdp(rt, eng, coll.programs["p"], PACKET).retval
    assert first == a[0] and second != first  # the sequence goes on across packets


# ---------------------------------------------------------------------------- maps


HASH = MapSpec("h", MapType.HASH, 4, 8, 4)


def test_map_update_lookup_delete() -> None:
    prog = code(
        "*(u32 *)(r10 - 4) = 7\n*(u64 *)(r10 - 16) = 99",
        ld_map(1, 0),
        "r2 = r10\nr2 += -4\nr3 = r10\nr3 += -16\nr4 = 0\ncall 2\nr6 = r0",
        ld_map(1, 0),
        "r2 = r10\nr2 += -4\ncall 1\nif r0 == 0 goto +3\nr0 = *(u64 *)(r0 + 0)\nr0 += r6\nexit\n"
        "r0 = -1\nexit",
    )
    res, coll = run(spec_of(prog, [HASH]))
    assert res.error is None and res.retval == 99
    assert coll.maps["h"][7] == (99).to_bytes(8, "little")
    delete = code("*(u32 *)(r10 - 4) = 7", ld_map(1, 0), "r2 = r10\nr2 += -4\ncall 3\nexit")
    rt = Runtime()
    c2 = rt.load(spec_of(delete, [HASH]))
    assert run_xdp(rt, Interpreter(), c2.programs["p"], PACKET).retval == (-errno.ENOENT) & U64


def test_map_helper_with_a_bad_map_faults() -> None:
    res, _ = run(spec_of(code("r1 = 1234\nr2 = r10\nr2 += -4\ncall 1\nexit")))
    e = res.error
    assert e is not None and e.kind == "helper" and e.pc == 3
    assert "bpf_map_lookup_elem: argument 1 (r1) must be a map" in str(e)


def test_map_helper_with_a_bad_key_pointer_faults() -> None:
    res, _ = run(spec_of(code(ld_map(1, 0), "r2 = 0\ncall 1\nexit"), [HASH]))
    e = res.error
    assert e is not None and e.kind == "helper" and e.region == "null" and e.pc == 3
    assert str(e) == ("program p, insn 3, `call 0x1`: bpf_map_lookup_elem: argument 2 (r2): null pointer "
                      "read of 4 bytes at 0x0")


def test_helper_buffer_argument_out_of_bounds_names_the_argument() -> None:
    rb = MapSpec("rb", MapType.RINGBUF, 0, 0, 4096)
    res, _ = run(spec_of(code(ld_map(1, 0), "r2 = r10\nr2 += -8\nr3 = 16\nr4 = 0\ncall 130\nexit"), [rb]))
    e = res.error
    assert e is not None and e.kind == "helper" and e.region == "stack" and e.size == 16
    assert "bpf_ringbuf_output: argument 2 (r2): out-of-bounds read of 16 bytes" in str(e)


def test_queue_push_pop() -> None:
    q = MapSpec("q", MapType.QUEUE, 0, 4, 4)
    prog = code(
        "*(u32 *)(r10 - 4) = 11", ld_map(1, 0), "r2 = r10\nr2 += -4\nr3 = 0\ncall 87",
        "*(u32 *)(r10 - 4) = 22", ld_map(1, 0), "r2 = r10\nr2 += -4\nr3 = 0\ncall 87",
        ld_map(1, 0), "r2 = r10\nr2 += -8\ncall 88\nr0 = *(u32 *)(r10 - 8)\nexit",
    )
    res, coll = run(spec_of(prog, [q]))
    assert res.retval == 11 and coll.maps["q"].values() == [(22).to_bytes(4, "little")]


def test_map_lookup_percpu_elem() -> None:
    pa = MapSpec("pa", MapType.PERCPU_ARRAY, 4, 8, 1)
    prog = code("*(u32 *)(r10 - 4) = 0", ld_map(1, 0), "r2 = r10\nr2 += -4\nr3 = 1\ncall 195",
                "if r0 == 0 goto +2\nr0 = *(u64 *)(r0 + 0)\nexit\nr0 = -1\nexit")
    rt = Runtime(cpus=2)
    coll = rt.load(spec_of(prog, [pa]))
    coll.maps["pa"][0] = [(5).to_bytes(8, "little"), (6).to_bytes(8, "little")]
    assert run_xdp(rt, Interpreter(), coll.programs["p"], PACKET).retval == 6
    prog3 = code("*(u32 *)(r10 - 4) = 0", ld_map(1, 0), "r2 = r10\nr2 += -4\nr3 = 2\ncall 195\nexit")
    assert run(spec_of(prog3, [pa]), rt=Runtime(cpus=2))[0].retval == 0  # cpu >= nr_cpus: NULL


def for_each_prog(map_type: MapType = MapType.ARRAY, stop_after_key: int | None = None) -> ObjectSpec:
    """r0 = for_each(a, cb, &sum, 0) << 16 | sum; cb(map, key, value, ctx): *ctx += *value + *key,
    returning 1 (stop) at `stop_after_key`."""
    m = MapSpec("a", map_type, 4, 8, 4)
    main = code("*(u64 *)(r10 - 8) = 0", ld_map(1, 0))
    rest = code("r3 = r10\nr3 += -8\nr4 = 0\ncall 164\nr0 <<= 16\nr1 = *(u64 *)(r10 - 8)\nr0 |= r1\nexit")
    stop = f"if r1 == {stop_after_key} goto +1\nexit\nr0 = 1\n" if stop_after_key is not None else ""
    cb = code("r5 = *(u64 *)(r3 + 0)\nr1 = *(u32 *)(r2 + 0)\nr5 += r1\nr0 = *(u64 *)(r4 + 0)\nr0 += r5\n"
              f"*(u64 *)(r4 + 0) = r0\nr0 = 0\n{stop}exit")
    func = isa.Instruction(isa.LDDW, 2, isa.PSEUDO_FUNC, 0, 2 + len(rest) - 1, 0)
    insns = [*main, func, isa.Instruction(0), *rest, *cb]
    cb_at = len(main) + 2 + len(rest)
    blob, ids, _ = kernel_fixtures.tiny_btf(["p", "cb"], [])
    p = ProgramSpec("p", "xdp", ProgType.XDP, "xdp", insns, license="GPL", functions={0: "p", cb_at: "cb"},
                    func_info=[FuncInfo(0, "p", ids["p"]), FuncInfo(cb_at, "cb", ids["cb"])])
    return ObjectSpec("<t>", {"p": p}, [m], license="GPL", btf_raw=blob)


FOR_EACH_CASES = [
    (MapType.ARRAY, None, (4 << 16) | (60 + 6)),
    (MapType.ARRAY, 1, (2 << 16) | (10 + 1)),
    (MapType.HASH, None, (4 << 16) | (60 + 6)),
    (MapType.PERCPU_ARRAY, None, (4 << 16) | (60 + 6)),
]


@pytest.mark.parametrize("map_type, stop, expected", FOR_EACH_CASES)
def test_for_each_map_elem(map_type: MapType, stop: int | None, expected: int) -> None:
    rt = Runtime()
    coll = rt.load(for_each_prog(map_type, stop))
    for i in range(4):
        coll.maps["a"][i] = (10 * i).to_bytes(8, "little")
    res = run_xdp(rt, Interpreter(), coll.programs["p"], PACKET)
    assert res.error is None
    assert res.retval == expected


@pytest.mark.parametrize("map_type, stop, expected", FOR_EACH_CASES)
def test_for_each_map_elem_agrees_with_kernel(kernel: str, map_type: MapType, stop: int | None,
                                              expected: int) -> None:
    from xdpsim.engines.kernel import KernelCollection

    with KernelCollection(for_each_prog(map_type, stop)) as kc:
        for i in range(4):
            kc.maps["a"][i] = (10 * i).to_bytes(8, "little")
        assert kc.run_xdp("p", PACKET).retval == expected


def loop_prog(n: int, stop_at: int | None = None) -> ObjectSpec:
    """sum = 0; r0 = bpf_loop(n, cb, &sum, 0); return r0 << 16 | sum; cb(i, ctx): *ctx += i [stop]."""
    before = code("*(u64 *)(r10 - 8) = 0", f"r1 = {n}")
    after = code("r3 = r10\nr3 += -8\nr4 = 0\ncall 181\nr0 <<= 16\nr1 = *(u64 *)(r10 - 8)\nr0 |= r1\nexit")
    stop = f"if r1 == {stop_at} goto +1\nr0 = 0\n" if stop_at is not None else "r0 = 0\n"
    cb = code(f"r3 = *(u64 *)(r2 + 0)\nr3 += r1\n*(u64 *)(r2 + 0) = r3\nr0 = 1\n{stop}exit")
    func = isa.Instruction(isa.LDDW, 2, isa.PSEUDO_FUNC, 0, 2 + len(after) - 1, 0)
    insns = [*before, func, isa.Instruction(0), *after, *cb]
    blob, ids, _ = kernel_fixtures.tiny_btf(["p", "cb"], [])
    cb_at = len(before) + 2 + len(after)
    return ObjectSpec("<t>", {"p": ProgramSpec(
        "p", "xdp", ProgType.XDP, "xdp", insns, license="GPL", functions={0: "p", cb_at: "cb"},
        func_info=[FuncInfo(0, "p", ids["p"]), FuncInfo(cb_at, "cb", ids["cb"])])}, [], license="GPL",
        btf_raw=blob)


@pytest.mark.parametrize("n, stop_at, expected", [(5, None, (5 << 16) | 10), (10, 3, (4 << 16) | 6),
                                                  (0, None, 0)])
def test_bpf_loop(n: int, stop_at: int | None, expected: int) -> None:
    res, _ = run(loop_prog(n, stop_at))
    assert res.error is None and res.retval == expected
    assert res.helper_counts["loop"] == 1


def test_bpf_loop_limits() -> None:
    res, _ = run(loop_prog((1 << 23) + 1))
    assert res.retval == ((-errno.E2BIG) << 16) & U64


@pytest.mark.parametrize("n, stop_at", [(5, None), (10, 3)])
def test_bpf_loop_agrees_with_kernel(kernel: str, n: int, stop_at: int | None) -> None:
    spec = loop_prog(n, stop_at)
    res, _ = run(spec)
    assert kernel_run(spec).retval & U32 == res.retval & U32


def test_spin_lock_must_be_released() -> None:
    arr = MapSpec("a", MapType.ARRAY, 4, 8, 1)
    take = code("*(u32 *)(r10 - 4) = 0", ld_map(1, 0), "r2 = r10\nr2 += -4\ncall 1\nif r0 == 0 goto +4\n"
                "r6 = r0\nr1 = r0\ncall 93")
    ok = code("r1 = r6\ncall 94\nr0 = 2\nexit")
    res, _ = run(spec_of([*take, *ok], [arr]))
    assert res.error is None and res.helper_counts == {"map_lookup_elem": 1, "spin_lock": 1, "spin_unlock": 1}
    res, _ = run(spec_of([*take, *code("r0 = 2\nexit\nr0 = 2\nexit")], [arr]))
    assert res.error is not None and "holding bpf_spin_lock" in str(res.error)


# ---------------------------------------------------------------------------- output


def test_ringbuf_helpers() -> None:
    rb = MapSpec("rb", MapType.RINGBUF, 0, 0, 4096)
    prog = code(
        "*(u64 *)(r10 - 8) = 0x41424344", ld_map(1, 0), "r2 = r10\nr2 += -8\nr3 = 4\nr4 = 0\ncall 130",
        ld_map(1, 0), "r2 = 8\nr3 = 0\ncall 131\nif r0 == 0 goto +4\n*(u64 *)(r0 + 0) = 7\nr1 = r0\nr2 = 0\n"
        "call 132",
        ld_map(1, 0), "r2 = 0\ncall 134\nexit",
    )
    res, coll = run(spec_of(prog, [rb]))
    assert res.error is None and res.retval == 32  # two records of 8-byte header + 8 bytes (rounded)
    assert coll.maps["rb"].records() == [b"DCBA", (7).to_bytes(8, "little")]


def test_ringbuf_submit_of_a_non_record_faults() -> None:
    res, _ = run(spec_of(code("r1 = r10\nr1 += -8\nr2 = 0\ncall 132\nexit")))
    assert res.error is not None and res.error.kind == "helper" and "ringbuf_submit" in str(res.error)


def test_perf_event_output_appends_packet_bytes() -> None:
    pe = MapSpec("pe", MapType.PERF_EVENT_ARRAY, 4, 4, 1)
    prog = code("*(u32 *)(r10 - 4) = 0x64636261\nr6 = r1", ld_map(2, 0),
                "r1 = r6\nr3 = 0x8ffffffff ll\nr4 = r10\nr4 += -4\nr5 = 4\ncall 25\nexit")
    res, coll = run(spec_of(prog, [pe]))
    assert res.error is None and res.retval == 0
    assert coll.maps["pe"].records() == [(0, b"abcd" + PACKET[:8])]


# ---------------------------------------------------------------------------- redirect, xdp data


def test_redirect() -> None:
    res, _ = run(spec_of(code("r1 = 5\nr2 = 0\ncall 23\nexit")))
    assert res.action == XdpAction.XDP_REDIRECT and res.redirect == RedirectTarget("dev", 5)
    res, _ = run(spec_of(code("r1 = 5\nr2 = 1\ncall 23\nexit")))
    assert res.action == XdpAction.XDP_ABORTED and res.redirect is None


def test_redirect_map() -> None:
    dm = MapSpec("dm", MapType.DEVMAP, 4, 4, 4)
    prog = lambda key, flags: spec_of(code(ld_map(1, 0), f"r2 = {key}\nr3 = {flags}\ncall 51\nexit"), [dm])  # noqa: E731
    rt = Runtime()
    coll = rt.load(prog(1, 2))
    coll.maps["dm"][1] = 9
    res = run_xdp(rt, Interpreter(), coll.programs["p"], PACKET)
    assert res.action == XdpAction.XDP_REDIRECT and res.redirect == RedirectTarget("dev", 9)
    res, _ = run(prog(2, int(XdpAction.XDP_PASS)))
    assert res.action == XdpAction.XDP_PASS and res.redirect is None  # miss: the flags' low bits
    res, _ = run(prog(2, 0))
    assert res.action == XdpAction.XDP_ABORTED
    res, _ = run(prog(2, 0x40))
    assert res.action == XdpAction.XDP_ABORTED  # unknown flag
    res, _ = run(prog(2, 1 << 3))
    assert res.action == XdpAction.XDP_REDIRECT and res.redirect.kind == "broadcast"


def test_redirect_map_wrong_map_type_faults() -> None:
    res, _ = run(spec_of(code(ld_map(1, 0), "r2 = 0\nr3 = 0\ncall 51\nexit"), [HASH]))
    assert res.error is not None and "bpf_redirect_map: argument 1" in str(res.error)


def test_xdp_load_store_bytes() -> None:
    prog = code("r6 = r1\nr2 = 2\nr3 = r10\nr3 += -8\nr4 = 4\ncall 189\nr7 = r0",
                "r1 = r6\nr2 = 60\nr3 = r10\nr3 += -8\nr4 = 4\ncall 190\nr7 += r0",
                "r1 = r6\nr2 = 61\nr3 = r10\nr3 += -8\nr4 = 4\ncall 189\nr0 += r7\nexit")
    res, _ = run(spec_of(prog))
    assert res.error is None
    assert res.retval == (-errno.EINVAL) & U64  # the last load runs past the end
    assert res.data == PACKET[:60] + PACKET[2:6]


def test_check_mtu() -> None:
    def prog(diff: int) -> ObjectSpec:
        return spec_of(code(f"r6 = r1\n*(u32 *)(r10 - 4) = 0\nr2 = 0\nr3 = r10\nr3 += -4\nr4 = {diff}\n"
                            "r5 = 0\ncall 163\nr1 = *(u32 *)(r10 - 4)\nr1 <<= 8\nr0 |= r1\nexit"))

    assert run(prog(1500 + 14 - 64))[0].retval == 1500 << 8
    assert run(prog(1500 + 14 - 64 + 1))[0].retval == (1500 << 8) | 1


def test_fib_lookup_without_routes_is_not_forwarded() -> None:
    prog = code("r6 = r1\nr2 = r10\nr2 += -64\nr3 = 64\nr4 = 0\ncall 69\nexit")
    assert run(spec_of(prog))[0].retval == 4

    class Table:
        def lookup(self, params: bytes, flags: int) -> tuple[int, bytes]:
            return 0, params[:4] + b"\x07" * 60

    rt = Runtime()
    rt.fib = Table()
    prog2 = code(prog[:-1], "r0 = *(u8 *)(r10 - 1)\nexit")
    assert run(spec_of(prog2), rt=rt)[0].retval == 7


@pytest.mark.parametrize("key, flags", [(2, 2), (2, 0), (2, 3), (2, 0x40), (7, 1)])
def test_redirect_map_miss_agrees_with_kernel(kernel: str, key: int, flags: int) -> None:
    dm = MapSpec("dm", MapType.DEVMAP, 4, 4, 4)
    spec = spec_of(code(ld_map(1, 0), f"r2 = {key}\nr3 = {flags}\ncall 51\nexit"), [dm])
    res, _ = run(spec)
    assert kernel_run(spec).retval == res.retval


@pytest.mark.parametrize("flags", [0, 1])
def test_redirect_agrees_with_kernel(kernel: str, flags: int) -> None:
    spec = spec_of(code(f"r1 = 5\nr2 = {flags}\ncall 23\nexit"))
    res, _ = run(spec)
    assert kernel_run(spec).retval == res.retval


@pytest.mark.parametrize("given, diff", [(0, 0), (0, 65536 + 14 - 64), (0, 65536 + 15 - 64), (100, 65436),
                                         (100, 65437), (0, -100)])
def test_check_mtu_agrees_with_kernel(kernel: str, given: int, diff: int) -> None:
    """The kernel's test runs come in on the loopback (MTU 65536): give xdpsim the same MTU."""
    spec = spec_of(code(f"*(u32 *)(r10 - 4) = {given}\nr2 = 0\nr3 = r10\nr3 += -4\nr4 = {diff}\nr5 = 0\n"
                        "call 163\nr1 = *(u32 *)(r10 - 4)\nr1 <<= 8\nr0 |= r1\nexit"))
    rt = Runtime()
    rt.mtu[1] = 65536
    res, _ = run(spec, rt=rt)
    assert kernel_run(spec).retval == res.retval & U32


@pytest.mark.parametrize("off, n", [(0, 4), (60, 4), (61, 4), (0, 64), (0x10000, 1), (64, 1)])
def test_xdp_load_store_bytes_agree_with_kernel(kernel: str, off: int, n: int) -> None:
    size = min(n, 64) or 1
    prog = code("r6 = r1\n*(u64 *)(r10 - 8) = 0x41424344", "*(u64 *)(r10 - 64) = 0",
                f"r1 = r6\nr2 = {off}\nr3 = r10\nr3 += -64\nr4 = {size if n <= 64 else n}\ncall 189\nr7 = r0",
                f"r1 = r6\nr2 = {off}\nr3 = r10\nr3 += -8\nr4 = {min(n, 8)}\ncall 190\nr0 <<= 8\nr0 |= r7\n"
                "r0 &= 0xffff\nexit")
    spec = spec_of(prog)
    res, _ = run(spec)
    kr = kernel_run(spec)
    assert (kr.retval, kr.data_out) == (res.retval & U32, res.data)


@pytest.mark.parametrize("query", [0, 1, 2, 3])
def test_ringbuf_agrees_with_kernel(kernel: str, query: int) -> None:
    rb = MapSpec("rb", MapType.RINGBUF, 0, 0, 4096)
    prog = code(
        "*(u64 *)(r10 - 8) = 0x41424344", ld_map(1, 0), "r2 = r10\nr2 += -8\nr3 = 5\nr4 = 0\ncall 130",
        ld_map(1, 0), "r2 = 12\nr3 = 0\ncall 131\nif r0 == 0 goto +4\n*(u64 *)(r0 + 0) = 7\nr1 = r0\nr2 = 0\n"
        "call 133",
        ld_map(1, 0), f"r2 = {query}\ncall 134\nexit",
    )
    spec = spec_of(prog, [rb])
    res, _ = run(spec)
    assert res.error is None
    assert kernel_run(spec).retval == res.retval & U32


def test_a_helper_bug_is_a_fault_of_the_run_not_a_crash() -> None:
    from xdpsim.helpers import HelperDef

    def broken(state, r1, r2, r3, r4, r5) -> int:
        return 1 // 0

    rt = Runtime()
    rt.helpers[7] = HelperDef(7, "get_prandom_u32", (), broken)
    res, _ = run(spec_of(code("call 7\nexit")), rt=rt)
    assert res.error is not None and res.error.kind == "internal" and res.error.pc == 0
    assert "xdpsim internal error (ZeroDivisionError" in str(res.error)
    assert isinstance(res.error.__cause__, ZeroDivisionError)


@pytest.mark.parametrize("fmt, args", [
    (b"%s!\0", "stack"), (b"%s!\0", (0,)), (b"%px %p\0", (0x1234, 5)), (b"%lld %llu %llx\0", (U64, U64, U64)),
    (b"%5d|%-5d|%05x\0", (3, 4, 255)), (b"%c\0", (0x41,)), (b"%%d\0", ()),
])
def test_trace_printk_length_agrees_with_kernel(kernel: str, fmt: bytes, args) -> None:
    if args == "stack":
        prog = code(stack_bytes(fmt, 64), stack_bytes(b"abcdef\0", 32),
                    f"r1 = r10\nr1 += -64\nr2 = {len(fmt)}\nr3 = r10\nr3 += -32\ncall 6\nexit")
        spec = spec_of(prog)
    else:
        spec = printk_prog(fmt, *args)
    res, _ = run(spec)
    assert res.error is None
    assert kernel_run(spec).retval == res.retval & U32, res.trace
