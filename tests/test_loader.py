"""The ELF loader: every bundled program loads, the specs say what the C says, the kernel accepts them
(the proof that linking, map references and BTF fix-ups are right), and malformed objects give
LoadError and nothing else."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kernel_fixtures import kernel  # noqa: F401

from xdpsim.errors import LoadError
from xdpsim.isa import CALL, LDDW, PSEUDO_CALL, PSEUDO_FUNC, PSEUDO_MAP_FD, PSEUDO_MAP_VALUE
from xdpsim.loader import load_object
from xdpsim.spec import MapType, ProgType

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "programs"
OBJECTS = sorted(PROGRAMS.glob("*.o"))
CLANG = shutil.which("clang-19") or shutil.which("clang")
BPF_LOOP, TAIL_CALL = 181, 12
BPF_F_RDONLY_PROG, BPF_F_MMAPABLE = 1 << 7, 1 << 10


def obj(name: str):
    return load_object(PROGRAMS / f"{name}.o")


def c_line(name: str, needle: str) -> int:
    """1-based line of the first line of programs/<name>.c containing `needle`."""
    for i, line in enumerate((PROGRAMS / f"{name}.c").read_text().splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError(f"{needle!r} not in {name}.c")


# --- every program ------------------------------------------------------------------------------------


def test_programs_present() -> None:
    names = {p.stem for p in OBJECTS}
    assert {
        "parser",
        "parser_tc",
        "firewall",
        "calls",
        "rewrite",
        "redirect",
        "icmp_echo",
        "chain",
        "bad_bounds",
        "core",
    } <= names


@pytest.mark.parametrize("path", OBJECTS, ids=lambda p: p.stem)
def test_every_program_loads(path: Path) -> None:
    spec = load_object(path)
    assert spec.programs and spec.license == "GPL"
    assert spec.btf is not None and spec.btf_raw
    for prog in spec.programs.values():
        assert prog.functions[0] == prog.name
        assert prog.func_info and prog.func_info[0].insn_off == 0 and prog.func_info[0].name == prog.name
        assert prog.line_info and prog.line_info[0].insn_off == 0
        assert [li.insn_off for li in prog.line_info] == sorted(li.insn_off for li in prog.line_info)
        assert all(li.file.endswith(f"{path.stem}.c") or li.file.endswith(".h") for li in prog.line_info)
        # every map reference points at a map of the object
        for ins in prog.insns:
            if ins.opcode == LDDW and ins.src in (PSEUDO_MAP_FD, PSEUDO_MAP_VALUE):
                assert 0 <= ins.imm < len(spec.maps)


def test_load_from_bytes_equals_path() -> None:
    a = obj("parser")
    b = load_object((PROGRAMS / "parser.o").read_bytes(), name="parser.o")
    assert b.path == "parser.o"
    assert [m.name for m in a.maps] == [m.name for m in b.maps]
    assert {n: p.insns for n, p in a.programs.items()} == {n: p.insns for n, p in b.programs.items()}


# --- parser: maps, declarative prog array, tail call -----------------------------------------------


def test_parser_maps_and_jump_table() -> None:
    spec = obj("parser")
    assert set(spec.programs) == {"packet_parser", "parse_tcp", "parse_udp"}
    assert all(
        p.type == ProgType.XDP and p.attach == "xdp" and p.section == "xdp" for p in spec.programs.values()
    )
    jt = spec.map_by_name("ipproto_jmp_table")
    assert (jt.type, jt.key_size, jt.value_size, jt.max_entries) == (MapType.PROG_ARRAY, 4, 4, 256)
    assert jt.init_slots == {6: "parse_tcp", 17: "parse_udp"}
    pc = spec.map_by_name("proto_count")
    assert (pc.type, pc.key_size, pc.value_size, pc.max_entries) == (MapType.PERCPU_ARRAY, 4, 8, 256)
    assert spec.btf.name_of(pc.btf_key_type_id) == "__u32"
    ps = spec.map_by_name("port_stats")
    assert (ps.type, ps.key_size, ps.value_size, ps.max_entries) == (MapType.HASH, 4, 16, 1024)
    assert spec.btf.name_of(ps.btf_key_type_id) == "struct port_key"
    assert spec.btf.name_of(ps.btf_value_type_id) == "struct port_stats"
    # the tail call loads the jump table's map index right before `call 12`
    insns = spec.programs["packet_parser"].insns
    call = next(
        i for i, ins in enumerate(insns) if ins.opcode == CALL and ins.src == 0 and ins.imm == TAIL_CALL
    )
    lddws = [ins for ins in insns[:call] if ins.opcode == LDDW and ins.src == PSEUDO_MAP_FD]
    assert lddws[-1].imm == spec.map_index("ipproto_jmp_table")
    li = spec.programs["packet_parser"].source_line(call)
    assert (
        li is not None
        and li.line == c_line("parser", "bpf_tail_call(ctx, &ipproto_jmp_table")
        and "bpf_tail_call" in li.text
    )


def test_parser_tc_is_sched_cls() -> None:
    spec = obj("parser_tc")
    assert {p.type for p in spec.programs.values()} == {ProgType.SCHED_CLS}
    assert spec.map_by_name("ipproto_jmp_table").init_slots == {6: "parse_tcp", 17: "parse_udp"}


# --- calls: subprograms, global data, PSEUDO_FUNC --------------------------------------------------


def test_calls_linking() -> None:
    spec = obj("calls")
    prog = spec.programs["calls_main"]
    assert set(prog.functions.values()) == {"calls_main", "summarize", "fold_sum", "mix", "loop_step"}
    starts = {name: off for off, name in prog.functions.items()}
    assert [f.name for f in prog.func_info] == sorted(prog.functions.values(), key=lambda n: starts[n])
    assert [f.insn_off for f in prog.func_info] == sorted(prog.functions)
    # every bpf-to-bpf call lands on a function entry
    targets = set()
    for pc, ins in enumerate(prog.insns):
        if ins.opcode == CALL and ins.src == PSEUDO_CALL:
            targets.add(prog.functions[pc + ins.imm + 1])
    assert targets == {"summarize", "fold_sum", "mix"}
    # bpf_loop's callback is a PSEUDO_FUNC lddw pointing at loop_step
    funcs = [(pc, ins) for pc, ins in enumerate(prog.insns) if ins.opcode == LDDW and ins.src == PSEUDO_FUNC]
    assert len(funcs) == 1
    pc, ins = funcs[0]
    assert prog.functions[pc + ins.imm + 1] == "loop_step"
    assert prog.function_at(starts["mix"] + 1) == "mix"
    # line info of appended subprograms points into them
    call = next(i for i, x in enumerate(prog.insns) if x.opcode == CALL and x.src == 0 and x.imm == BPF_LOOP)
    assert prog.source_line(call).line == c_line("calls", "bpf_loop(cfg.loop_rounds")
    li = prog.source_line(starts["mix"])
    assert li.line >= c_line("calls", "static __noinline __u32 mix(")


def test_calls_global_data() -> None:
    spec = obj("calls")
    names = [m.name for m in spec.maps]
    assert set(names) == {".data", ".bss", ".rodata"}
    ro, data, bss = spec.map_by_name(".rodata"), spec.map_by_name(".data"), spec.map_by_name(".bss")
    assert ro.frozen and not data.frozen and not bss.frozen
    assert (ro.type, ro.key_size, ro.max_entries, ro.value_size) == (MapType.ARRAY, 4, 1, 12)
    assert struct.unpack("<3I", ro.initial) == (60, 16, 0x9E3779B9)
    assert struct.unpack("<Q", data.initial) == (0x5844505349,)
    assert bss.initial == bytes(16)
    assert spec.btf[ro.btf_value_type_id].name == ".rodata"
    # a global variable reference: PSEUDO_MAP_VALUE with the variable's offset in next_imm
    prog = spec.programs["calls_main"]
    refs = {
        (ins.imm, ins.next_imm) for ins in prog.insns if ins.opcode == LDDW and ins.src == PSEUDO_MAP_VALUE
    }
    assert (spec.map_index(".bss"), 0) in refs  # packets_seen
    assert (spec.map_index(".data"), 0) in refs  # magic


def test_btf_raw_datasec_fixed_up() -> None:
    from xdpsim.btf import BTF, Kind

    spec = obj("calls")
    fixed = BTF(spec.btf_raw)
    secs = fixed.datasecs()
    assert secs[".rodata"].size == 12 and secs[".bss"].size == 16 and secs[".data"].size == 8
    bss = {fixed[m.type].name: m.offset for m in secs[".bss"].members}
    assert bss == {"packets_seen": 0, "last_sum": 8, "last_hash": 12}
    assert spec.btf.datasecs()[".bss"].size == 0  # clang's original, kept apart
    assert all(t.kind == Kind.DATASEC or t == spec.btf[t.id] for t in fixed.types)


# --- other programs ------------------------------------------------------------------------------------


def test_firewall_maps() -> None:
    spec = obj("firewall")
    bl = spec.map_by_name("blocklist")
    assert (bl.type, bl.key_size, bl.value_size, bl.flags) == (MapType.LPM_TRIE, 8, 4, 1)
    assert spec.map_by_name("allowed_ports").key_size == 2
    assert spec.map_by_name("counters").value_size == 24
    assert any(m.name.startswith(".rodata") for m in spec.maps)  # bpf_printk's format strings


def test_chain_run_config() -> None:
    spec = obj("chain")
    p = spec.programs
    assert (p["chain_count"].run_priority, p["chain_count"].chain_call_actions) == (10, ["XDP_PASS"])
    assert (p["chain_filter"].run_priority, p["chain_filter"].chain_call_actions) == (
        20,
        ["XDP_DROP", "XDP_PASS"],
    )
    assert (p["chain_last"].run_priority, p["chain_last"].chain_call_actions) == (30, None)
    assert all(m.name != ".xdp_run_config" for m in spec.maps)


def test_legacy_section_notice() -> None:
    spec = obj("icmp_echo")
    prog = spec.programs["icmp_echo"]
    assert (prog.type, prog.section, prog.attach) == (ProgType.XDP, "xdp_icmp_echo", "xdp")
    assert any("xdp_icmp_echo" in n and "legacy" in n for n in spec.notices)


def test_redirect_sections() -> None:
    spec = obj("redirect")
    assert spec.programs["devmap_prog"].attach == "xdp/devmap"
    tx = spec.map_by_name("tx_ports")
    assert (tx.type, tx.key_size, tx.value_size, tx.max_entries) == (MapType.DEVMAP, 4, 4, 8)


def test_core_relocations_resolved() -> None:
    spec = obj("core")
    prog = spec.programs["core_parse"]
    # ctx->data_end (offset 4) and ctx->data (0) are CO-RE relocated loads from r1
    assert prog.insns[0].off == 4 and prog.insns[1].off == 0
    # `r3 = 1` stored for bpf_core_field_exists(iphdr___old.options_word) becomes 0
    stores = [(pc, ins) for pc, ins in enumerate(prog.insns) if ins.opcode == 0xB7 and ins.dst == 3][:5]
    assert [ins.imm for _, ins in stores] == [1, 0, 4, 1, 8]


# --- the kernel accepts them -----------------------------------------------------------------------


@pytest.mark.parametrize("path", [p for p in OBJECTS if p.stem != "bad_bounds"], ids=lambda p: p.stem)
def test_kernel_accepts(kernel: str, path: Path) -> None:  # noqa: F811
    from xdpsim.engines.kernel import KernelCollection

    spec = load_object(path)
    with KernelCollection(spec) as coll:
        assert set(coll.programs) == set(spec.programs)
        assert coll.btf_fd is not None
        assert not [n for n in coll.notes if "without" in n], coll.notes  # BTF, func and line info all taken


def test_kernel_refuses_bad_bounds(kernel: str) -> None:  # noqa: F811
    from xdpsim.engines.kernel import verify

    ok, log = verify(obj("bad_bounds"))["bad_bounds"]
    assert not ok
    assert f"bad_bounds.c:{c_line('bad_bounds', 'if (*next == 0x45)')}" in log.splitlines()[0]


def _eth(proto: int, payload: bytes) -> bytes:
    return b"\x02" * 6 + b"\x04" * 6 + struct.pack("!H", proto) + payload


def _ipv4(proto: int, l4: bytes) -> bytes:
    return (
        bytes([0x45, 0])
        + struct.pack("!HHHBBH", 20 + len(l4), 0, 0, 64, proto, 0)
        + bytes([10, 0, 0, 1, 10, 0, 0, 2])
        + l4
    )


def test_kernel_runs_parser_tail_calls(kernel: str) -> None:  # noqa: F811
    from xdpsim.engines.kernel import KernelCollection

    tcp = lambda dport: struct.pack("!HHIIBBHHH", 1234, dport, 0, 0, 0x50, 0x02, 1024, 0, 0)  # noqa: E731
    udp = lambda dport: struct.pack("!HHHH", 1234, dport, 8, 0)  # noqa: E731
    with KernelCollection(obj("parser")) as coll:
        assert coll.prog_array_slots("ipproto_jmp_table") == {6: "parse_tcp", 17: "parse_udp"}
        run = lambda pkt: coll.run_xdp("packet_parser", pkt).retval  # noqa: E731
        assert run(_eth(0x0800, _ipv4(6, tcp(23)))) == 1  # telnet dropped by parse_tcp
        assert run(_eth(0x0800, _ipv4(6, tcp(80)))) == 2
        assert run(_eth(0x0800, _ipv4(17, udp(19)))) == 1  # chargen dropped by parse_udp
        assert run(_eth(0x0800, _ipv4(17, udp(53)))) == 2
        assert run(_eth(0x0800, _ipv4(1, b"\x08\0\0\0\0\0\0\0"))) == 2  # no handler: falls through
        assert run(_eth(0x0806, bytes(28))) == 2  # ARP
        assert run(_eth(0x0800, b"\x45\0")) == 1  # truncated
        counts = coll.read_map("proto_count")
        assert sum(int.from_bytes(v, "little") for v in counts[(6).to_bytes(4, "little")]) == 2
        assert len(coll.read_map("port_stats")) == 4


def test_kernel_runs_calls_and_core(kernel: str) -> None:  # noqa: F811
    from xdpsim.engines.kernel import KernelCollection

    with KernelCollection(obj("calls")) as coll:
        assert coll.run_xdp("calls_main", bytes(64)).retval == 2
        assert coll.run_xdp("calls_main", bytes(20)).retval == 1
        bss = coll.read_map(".bss")[bytes(4)]
        assert struct.unpack_from("<Q", bss)[0] == 2  # packets_seen
    udp = struct.pack("!HHHH", 1, 4789, 8, 0)
    with KernelCollection(obj("core")) as coll:
        assert coll.run_xdp("core_parse", _eth(0x0800, _ipv4(17, udp))).retval == 2
        res = struct.unpack("<10Q", coll.read_map(".bss")[bytes(4)])
        # ihl, version, ttl exists, options_word exists, sizeof saddr, iphdr exists, sizeof udphdr,
        # XDP_PASS, XDP_TELEPORT exists, udp dest
        assert res == (5, 4, 1, 0, 4, 1, 8, 2, 0, 4789)


# --- refusals and malformed input ------------------------------------------------------------------


def test_not_elf_and_truncated_header() -> None:
    with pytest.raises(LoadError, match="not an ELF"):
        load_object(b"hello world" * 10, name="junk")
    with pytest.raises(LoadError, match="shorter than an ELF header"):
        load_object(b"\x7fELF", name="tiny")
    with pytest.raises(LoadError, match="cannot read"):
        load_object(PROGRAMS / "does-not-exist.o")


def test_wrong_machine() -> None:
    data = bytearray((PROGRAMS / "parser.o").read_bytes())
    struct.pack_into("<H", data, 18, 62)  # EM_X86_64
    with pytest.raises(LoadError, match="not BPF"):
        load_object(bytes(data), name="x86.o")


TRUNC_DATA = (PROGRAMS / "calls.o").read_bytes()


@pytest.mark.parametrize(
    "cut",
    [
        0,
        1,
        16,
        63,
        64,
        100,
        0x40 + 8 * 10,
        len(TRUNC_DATA) // 2,
        len(TRUNC_DATA) - 64 * 3,
        len(TRUNC_DATA) - 1,
    ],
)
def test_truncated_objects(cut: int) -> None:
    with pytest.raises(LoadError) as e:
        load_object(TRUNC_DATA[:cut], name="cut.o")
    assert "cut.o" in str(e.value)


def _section_ranges(stem: str) -> list[tuple[int, int]]:
    """File ranges of every section of a bundled object (header and section table included)."""
    from elftools.elf.elffile import ELFFile

    with open(PROGRAMS / f"{stem}.o", "rb") as f:
        elf = ELFFile(f)
        out = [(0, 64), (elf.header["e_shoff"], elf.header["e_shnum"] * 64)]
        out += [(s["sh_offset"], s["sh_size"]) for s in elf.iter_sections() if s["sh_type"] != "SHT_NOBITS"]
    return [(o, n) for o, n in out if n > 0]


FUZZ = {
    stem: ((PROGRAMS / f"{stem}.o").read_bytes(), _section_ranges(stem))
    for stem in ("calls", "parser", "chain")
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_flipped_bytes_give_load_error_or_a_spec(data: st.DataObject) -> None:
    """Damage inside one section at a time (ELF header, section table, code, relocations, .BTF,
    .BTF.ext, .maps, symbols...): the loader answers LoadError or a spec, nothing else."""
    stem = data.draw(st.sampled_from(sorted(FUZZ)))
    raw, ranges = FUZZ[stem]
    start, size = data.draw(st.sampled_from(ranges))
    buf = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 6))):
        buf[start + data.draw(st.integers(0, size - 1))] ^= data.draw(st.integers(1, 255))
    try:
        spec = load_object(bytes(buf), name="flipped.o")
    except LoadError as e:
        assert "flipped.o" in str(e)
    else:
        assert spec.programs


# --- objects compiled on the fly ------------------------------------------------------------------

needs_clang = pytest.mark.skipif(CLANG is None, reason="clang not installed")

HEADER = '#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\nchar LICENSE[] SEC("license") = "GPL";\n'


def build(tmp_path: Path, src: str, name: str = "t") -> Path:
    import platform

    c = tmp_path / f"{name}.c"
    c.write_text(HEADER + src)
    out = tmp_path / f"{name}.o"
    subprocess.run(
        [
            CLANG,
            "-O2",
            "-g",
            "-target",
            "bpf",
            f"-I/usr/include/{platform.machine()}-linux-gnu",
            "-c",
            str(c),
            "-o",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    return out


@needs_clang
def test_unknown_section_refused_and_forced(tmp_path: Path) -> None:
    o = build(tmp_path, 'SEC("mystuff") int prog(void *ctx) { return 2; }')
    with pytest.raises(LoadError, match="mystuff"):
        load_object(o)
    spec = load_object(o, prog_type=ProgType.XDP)
    assert spec.programs["prog"].type == ProgType.XDP
    assert any("mystuff" in n for n in spec.notices)
    o = build(tmp_path, 'SEC("kprobe/sys_open") int prog(void *ctx) { return 0; }', "kp")
    with pytest.raises(LoadError, match="kprobe"):
        load_object(o)


@needs_clang
def test_kfunc_refused(tmp_path: Path) -> None:
    src = (
        "extern struct bpf_sock *bpf_skc_to_whatever(void *p) __ksym;\n"
        'SEC("xdp") int prog(struct xdp_md *ctx) { return bpf_skc_to_whatever(ctx) ? 1 : 2; }'
    )
    with pytest.raises(LoadError, match="extern|kfunc"):
        load_object(build(tmp_path, src))


MAP_IN_MAP = """
struct inner {
    __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 4); __type(key, __u32); __type(value, __u64);
};
struct inner inner_a SEC(".maps"), inner_b SEC(".maps");
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
    __uint(max_entries, 3);
    __type(key, __u32);
    __array(values, struct inner);
} outer SEC(".maps") = { .values = { [0] = &inner_a, [2] = &inner_b } };
struct bpf_map_def_legacy { unsigned int type, key_size, value_size, max_entries, map_flags; };
struct bpf_map_def_legacy old_hash SEC("maps") = { BPF_MAP_TYPE_HASH, 4, 8, 16, 0 };
SEC("xdp") int prog(struct xdp_md *ctx)
{
    __u32 k = 0;
    void *m = bpf_map_lookup_elem(&outer, &k);
    if (!m) return 1;
    __u64 *v = bpf_map_lookup_elem(m, &k);
    if (v) *v += 1;
    return bpf_map_lookup_elem(&old_hash, &k) ? 1 : 2;
}
"""


@needs_clang
def test_maps_of_maps_and_legacy_maps(tmp_path: Path) -> None:
    src = MAP_IN_MAP
    spec = load_object(build(tmp_path, src))
    outer = spec.map_by_name("outer")
    assert outer.type == MapType.ARRAY_OF_MAPS and outer.value_size == 4
    assert outer.init_slots == {0: "inner_a", 2: "inner_b"}
    assert outer.inner is not None and (
        outer.inner.type,
        outer.inner.value_size,
        outer.inner.max_entries,
    ) == (MapType.ARRAY, 8, 4)
    old = spec.map_by_name("old_hash")
    assert (old.type, old.key_size, old.value_size, old.max_entries, old.section) == (
        MapType.HASH,
        4,
        8,
        16,
        "maps",
    )
    refs = [ins.imm for ins in spec.programs["prog"].insns if ins.opcode == LDDW and ins.src == PSEUDO_MAP_FD]
    assert sorted(set(refs)) == sorted({spec.map_index("outer"), spec.map_index("old_hash")})


@needs_clang
def test_static_subprogram_in_text_and_frags(tmp_path: Path) -> None:
    src = """
static __attribute__((noinline)) int twice(int x) { return x * 2; }
__attribute__((noinline)) int global_helper(struct xdp_md *ctx) { return ctx->rx_queue_index ? 1 : 2; }
SEC("xdp.frags") int a(struct xdp_md *ctx) { return twice(1) == 2 ? global_helper(ctx) : 0; }
SEC("tcx/ingress") int b(struct __sk_buff *skb) { return twice(skb->len) > 100 ? 2 : 0; }
"""
    spec = load_object(build(tmp_path, src))
    a, b = spec.programs["a"], spec.programs["b"]
    assert a.frags and a.attach == "xdp.frags" and a.type == ProgType.XDP
    assert b.type == ProgType.SCHED_CLS and b.attach == "tcx/ingress"
    assert set(a.functions.values()) == {"a", "twice", "global_helper"}
    assert set(b.functions.values()) == {"b", "twice"}
    assert "global_helper" not in spec.programs  # .text functions are subprograms


@needs_clang
def test_text_only_object_needs_a_type(tmp_path: Path) -> None:
    o = build(
        tmp_path,
        "static __attribute__((noinline)) int f(int x) { return x + 1; }\n"
        "int entry(struct xdp_md *ctx) { return f(ctx->rx_queue_index); }",
    )
    with pytest.raises(LoadError, match="no programs"):
        load_object(o)
    spec = load_object(o, prog_type=ProgType.XDP)
    assert set(spec.programs) == {"entry"} and set(spec.programs["entry"].functions.values()) == {
        "entry",
        "f",
    }


def _rel_section(data: bytes, name: str) -> tuple[int, int]:
    from xdpsim.loader.elf import read_elf

    elf = read_elf(data, "x")
    sec = elf.section(name)
    assert sec is not None
    return data.index(sec.data), sec.size


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (lambda e: (e[0] + 3, e[1]), "not on an instruction"),
        (lambda e: (e[0], (e[1] & ~0xFFFFFFFF) | 2), "unsupported relocation R_BPF_64_ABS64"),
        (lambda e: (e[0], (e[1] & ~0xFFFFFFFF) | 77), "relocation 77"),
        (lambda e: (e[0], (e[1] & 0xFFFFFFFF) | (5000 << 32)), "beyond the symbol table"),
    ],
)
def test_bad_relocations(patch, message: str) -> None:
    data = bytearray((PROGRAMS / "parser.o").read_bytes())
    off, _ = _rel_section(bytes(data), ".relxdp")
    entry = struct.unpack_from("<QQ", data, off)
    struct.pack_into("<QQ", data, off, *patch(entry))
    with pytest.raises(LoadError, match=message):
        load_object(bytes(data), name="badrel.o")


# --- libbpf itself as the reference ------------------------------------------------------------------


def _libbpf():
    import ctypes

    try:
        lib = ctypes.CDLL("libbpf.so.1")
    except OSError:
        return None
    vp, cp = ctypes.c_void_p, ctypes.c_char_p
    for name, res, args in [
        ("bpf_object__open_file", vp, [cp, vp]),
        ("bpf_object__next_program", vp, [vp, vp]),
        ("bpf_program__name", cp, [vp]),
        ("bpf_program__insns", vp, [vp]),
        ("bpf_program__insn_cnt", ctypes.c_size_t, [vp]),
        ("bpf_object__load", ctypes.c_int, [vp]),
        ("bpf_object__close", None, [vp]),
        ("bpf_object__next_map", vp, [vp, vp]),
        ("bpf_map__fd", ctypes.c_int, [vp]),
        ("bpf_object__btf", vp, [vp]),
        ("btf__raw_data", vp, [vp, ctypes.POINTER(ctypes.c_uint32)]),
        ("bpf_map__type", ctypes.c_int, [vp]),
        ("bpf_map__key_size", ctypes.c_uint32, [vp]),
        ("bpf_map__value_size", ctypes.c_uint32, [vp]),
        ("bpf_map__max_entries", ctypes.c_uint32, [vp]),
        ("bpf_map__map_flags", ctypes.c_uint32, [vp]),
        ("bpf_map__btf_key_type_id", ctypes.c_uint32, [vp]),
        ("bpf_map__btf_value_type_id", ctypes.c_uint32, [vp]),
        ("bpf_program__set_type", ctypes.c_int, [vp, ctypes.c_int]),
    ]:
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


@pytest.mark.parametrize("path", [p for p in OBJECTS if p.stem != "bad_bounds"], ids=lambda p: p.stem)
def test_linked_like_libbpf(kernel: str, path: Path) -> None:  # noqa: F811
    same_as_libbpf(path)


@needs_clang
def test_maps_of_maps_like_libbpf(kernel: str, tmp_path: Path) -> None:  # noqa: F811
    src = (
        MAP_IN_MAP.split("struct bpf_map_def_legacy")[0]
        + """
SEC("xdp") int prog(struct xdp_md *ctx)
{
    __u32 k = 0;
    void *m = bpf_map_lookup_elem(&outer, &k);
    if (!m) return 1;
    __u64 *v = bpf_map_lookup_elem(m, &k);
    if (v) *v += 1;
    return 2;
}
"""
    )
    same_as_libbpf(build(tmp_path, src))


def same_as_libbpf(path: Path) -> None:
    """libbpf loads the same object; its final instructions (map fds put back to map indexes in its
    map order) must equal ours slot for slot, its maps ours (same order, types, sizes, BTF ids), and
    its fixed-up BTF our btf_raw, byte for byte."""
    import ctypes

    from xdpsim.isa import decode

    lib = _libbpf()
    if lib is None:
        pytest.skip("libbpf.so.1 not installed")
    o = lib.bpf_object__open_file(str(path).encode(), None)
    if not o:
        pytest.skip(f"libbpf cannot open {path.name}")
    try:
        progs, p = [], None
        while p := lib.bpf_object__next_program(o, p):
            progs.append(p)
            if path.stem == "icmp_echo":  # libbpf 1.x does not know the legacy section name
                lib.bpf_program__set_type(p, int(ProgType.XDP))
            if path.stem == "tc_classify":  # libbpf before 1.3 does not know tcx/ sections
                lib.bpf_program__set_type(p, int(ProgType.SCHED_CLS))
        assert lib.bpf_object__load(o) == 0
        fds, theirs_maps, m = [], [], None
        while m := lib.bpf_object__next_map(o, m):
            fds.append(lib.bpf_map__fd(m))
            flags = lib.bpf_map__map_flags(m) & ~(BPF_F_MMAPABLE | BPF_F_RDONLY_PROG)  # set for global data
            theirs_maps.append(
                (
                    lib.bpf_map__type(m),
                    lib.bpf_map__key_size(m),
                    lib.bpf_map__value_size(m),
                    lib.bpf_map__max_entries(m),
                    flags,
                    lib.bpf_map__btf_key_type_id(m),
                    lib.bpf_map__btf_value_type_id(m),
                )
            )
        spec = load_object(path)
        # libbpf drops the key/value BTF ids of these types when it creates them; the spec keeps them
        # (they still decode devmap values), so they are compared as libbpf leaves them
        no_btf = {
            MapType.PERF_EVENT_ARRAY,
            MapType.CGROUP_ARRAY,
            MapType.STACK_TRACE,
            MapType.ARRAY_OF_MAPS,
            MapType.HASH_OF_MAPS,
            MapType.DEVMAP,
            MapType.DEVMAP_HASH,
            MapType.CPUMAP,
            MapType.XSKMAP,
            MapType.SOCKMAP,
            MapType.SOCKHASH,
            MapType.QUEUE,
            MapType.STACK,
        }
        ours = [
            (
                int(x.type),
                x.key_size,
                x.value_size,
                x.max_entries,
                x.flags,
                0 if x.type in no_btf else x.btf_key_type_id,
                0 if x.type in no_btf else x.btf_value_type_id,
            )
            for x in spec.maps
        ]
        assert ours == theirs_maps
        size = ctypes.c_uint32()
        raw = lib.btf__raw_data(lib.bpf_object__btf(o), ctypes.byref(size))
        assert ctypes.string_at(raw, size.value) == spec.btf_raw  # the DATASEC fix-ups, byte for byte
        for p in progs:
            name = lib.bpf_program__name(p).decode()
            theirs = decode(ctypes.string_at(lib.bpf_program__insns(p), lib.bpf_program__insn_cnt(p) * 8))
            theirs = [
                ins.__class__(ins.opcode, ins.dst, ins.src, ins.off, fds.index(ins.imm), ins.next_imm)
                if ins.opcode == LDDW and ins.src in (PSEUDO_MAP_FD, PSEUDO_MAP_VALUE)
                else ins
                for ins in theirs
            ]
            assert theirs == spec.programs[name].insns, name
    finally:
        lib.bpf_object__close(o)


@needs_clang
def test_maps_of_maps_in_the_kernel(kernel: str, tmp_path: Path) -> None:  # noqa: F811
    from xdpsim.engines.kernel import KernelCollection

    spec = load_object(build(tmp_path, MAP_IN_MAP))
    with KernelCollection(spec) as coll:
        assert coll.run_xdp("prog", bytes(64)).retval == 2  # old_hash is empty
        assert coll.read_map("inner_a")[bytes(4)] == (1).to_bytes(8, "little")  # reached through outer[0]
        assert coll.read_map("inner_b")[bytes(4)] == bytes(8)


@needs_clang
def test_object_without_btf(tmp_path: Path) -> None:
    import platform

    c = tmp_path / "nobtf.c"
    c.write_text(HEADER + 'SEC("xdp") int prog(struct xdp_md *ctx) { return ctx->rx_queue_index ? 1 : 2; }\n')
    o = tmp_path / "nobtf.o"
    inc = f"-I/usr/include/{platform.machine()}-linux-gnu"
    subprocess.run([CLANG, "-O2", "-target", "bpf", inc, "-c", str(c), "-o", str(o)], check=True)
    spec = load_object(o)
    assert spec.btf is None and spec.btf_raw is None
    assert spec.programs["prog"].line_info == [] and spec.programs["prog"].func_info == []
    subprocess.run(
        [CLANG, "-O2", "-target", "bpf", inc, "-c", str(PROGRAMS / "parser.c"), "-o", str(o)], check=True
    )
    with pytest.raises(LoadError, match="BTF-defined maps need"):
        load_object(o)


@pytest.mark.parametrize(
    ("section", "ptype", "attach", "frags"),
    [
        ("xdp", ProgType.XDP, "xdp", False),
        ("xdp.frags", ProgType.XDP, "xdp.frags", True),
        ("xdp/devmap", ProgType.XDP, "xdp/devmap", False),
        ("xdp.frags/cpumap", ProgType.XDP, "xdp.frags/cpumap", True),
        ("xdp/anything", ProgType.XDP, "xdp/anything", False),
        ("tc", ProgType.SCHED_CLS, "tc", False),
        ("classifier", ProgType.SCHED_CLS, "classifier", False),
        ("classifier/ingress", ProgType.SCHED_CLS, "classifier/ingress", False),
        ("tcx/ingress", ProgType.SCHED_CLS, "tcx/ingress", False),
        ("tcx/egress", ProgType.SCHED_CLS, "tcx/egress", False),
        ("tc/ingress", ProgType.SCHED_CLS, "tc/ingress", False),
        ("action", ProgType.SCHED_ACT, "action", False),
        ("socket", ProgType.SOCKET_FILTER, "socket", False),
        ("xdp_prog", ProgType.XDP, "xdp", False),
    ],
)
def test_section_names(section: str, ptype: ProgType, attach: str, frags: bool) -> None:
    from xdpsim.loader.sections import classify

    kind = classify(section)
    assert (kind.type, kind.attach, kind.frags) == (ptype, attach, frags)
    assert (kind.notice is not None) == section.startswith("xdp_")


@pytest.mark.parametrize(
    "section", ["kprobe/do_sys_open", "tracepoint/syscalls/x", "fentry/f", "lsm/file_open", "weird"]
)
def test_section_names_refused(section: str) -> None:
    from xdpsim.loader.sections import classify

    with pytest.raises(LoadError, match=section.split("/")[0]):
        classify(section)
