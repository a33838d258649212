"""BTF and BTF.ext parsing, the shipped CO-RE BTF, and CO-RE relocation against other layouts."""

from __future__ import annotations

import os
import platform
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xdpsim.btf import BTF, BtfError, CoreKind, Kind, essential_name, parse_ext, shipped_btf
from xdpsim.btf.core import POISON_HELPER, VMLINUX
from xdpsim.errors import LoadError
from xdpsim.isa import CALL, LDDW
from xdpsim.loader import load_object
from xdpsim.loader.elf import read_elf

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "programs"
CLANG = shutil.which("clang-19") or shutil.which("clang")
needs_clang = pytest.mark.skipif(CLANG is None, reason="clang not installed")
needs_vmlinux = pytest.mark.skipif(
    not os.path.exists(VMLINUX), reason=f"{VMLINUX} absent (kernel without BTF)"
)


def section(path: Path, name: str) -> bytes:
    sec = read_elf(path.read_bytes(), str(path)).section(name)
    assert sec is not None
    return sec.data


# --- a tiny BTF encoder, to cover every kind -------------------------------------------------------


class Builder:
    def __init__(self) -> None:
        self.types = b""
        self.strings = b"\0"
        self.n = 0

    def s(self, name: str) -> int:
        if not name:
            return 0
        off = len(self.strings)
        self.strings += name.encode() + b"\0"
        return off

    def add(
        self, name: str, kind: Kind, vlen: int, size_type: int, extra: bytes = b"", kflag: int = 0
    ) -> int:
        info = (kflag << 31) | (int(kind) << 24) | vlen
        self.types += struct.pack("<III", self.s(name), info, size_type) + extra
        self.n += 1
        return self.n

    def raw(self) -> bytes:
        hdr = struct.pack(
            "<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strings)
        )
        return hdr + self.types + self.strings


def every_kind() -> tuple[bytes, dict[str, int]]:
    b = Builder()
    ids: dict[str, int] = {}
    ids["int"] = b.add("int", Kind.INT, 0, 4, struct.pack("<I", (1 << 24) | 32))
    ids["u8"] = b.add("u8", Kind.INT, 0, 1, struct.pack("<I", 8))
    ids["ptr"] = b.add("", Kind.PTR, 0, ids["int"])
    ids["arr"] = b.add("", Kind.ARRAY, 0, 0, struct.pack("<III", ids["u8"], ids["int"], 6))
    m = struct.pack("<III", b.s("a"), ids["int"], 0) + struct.pack("<III", b.s("mac"), ids["arr"], 32)
    m += struct.pack("<III", b.s("bits"), ids["u8"], (3 << 24) | 80)
    ids["struct"] = b.add("s", Kind.STRUCT, 3, 12, m, kflag=1)
    ids["union"] = b.add("u", Kind.UNION, 1, 4, struct.pack("<III", b.s("x"), ids["int"], 0))
    ids["enum"] = b.add(
        "e", Kind.ENUM, 2, 4, struct.pack("<Ii", b.s("A"), -1) + struct.pack("<Ii", b.s("B"), 7), kflag=1
    )
    ids["fwd"] = b.add("later", Kind.FWD, 0, 0)
    ids["typedef"] = b.add("s_t", Kind.TYPEDEF, 0, ids["struct"])
    ids["volatile"] = b.add("", Kind.VOLATILE, 0, ids["typedef"])
    ids["const"] = b.add("", Kind.CONST, 0, ids["volatile"])
    ids["restrict"] = b.add("", Kind.RESTRICT, 0, ids["ptr"])
    ids["proto"] = b.add("", Kind.FUNC_PROTO, 1, ids["int"], struct.pack("<II", b.s("arg"), ids["ptr"]))
    ids["func"] = b.add("f", Kind.FUNC, 1, ids["proto"])
    ids["var"] = b.add("v", Kind.VAR, 0, ids["const"], struct.pack("<I", 1))
    ids["datasec"] = b.add(".data", Kind.DATASEC, 1, 12, struct.pack("<III", ids["var"], 0, 12))
    ids["float"] = b.add("double", Kind.FLOAT, 0, 8)
    ids["decl_tag"] = b.add("tag", Kind.DECL_TAG, 0, ids["struct"], struct.pack("<i", 0))
    ids["type_tag"] = b.add("user", Kind.TYPE_TAG, 0, ids["int"])
    ids["enum64"] = b.add("e64", Kind.ENUM64, 1, 8, struct.pack("<III", b.s("BIG"), 1, 2))
    return b.raw(), ids


def test_every_kind() -> None:
    raw, ids = every_kind()
    btf = BTF(raw)
    assert len(btf) == len(ids) + 1
    assert {t.kind for t in btf.types[1:]} == set(Kind) - {Kind.UNKN}
    s = btf[ids["struct"]]
    assert [(m.name, m.offset, m.bitfield_size) for m in s.members] == [
        ("a", 0, 0),
        ("mac", 32, 0),
        ("bits", 80, 3),
    ]
    assert btf[ids["int"]].signed and btf[ids["int"]].int_bits == 32 and not btf[ids["u8"]].signed
    assert [(m.name, m.value) for m in btf[ids["enum"]].members] == [("A", -1), ("B", 7)]
    assert btf[ids["enum"]].signed
    assert btf[ids["enum64"]].members[0].value == (2 << 32) | 1
    assert btf[ids["arr"]].nelems == 6 and btf.size_of(ids["arr"]) == 6
    assert btf.resolve(ids["const"]) == ids["struct"] and btf.size_of(ids["var"]) == 12
    assert btf.name_of(ids["const"]) == "const volatile s_t"
    assert btf.name_of(ids["ptr"]) == "int *"
    assert btf.name_of(ids["struct"]) == "struct s"
    assert btf[ids["var"]].linkage == 1 and btf[ids["func"]].linkage == 1
    assert btf[ids["decl_tag"]].component_idx == 0
    ds = btf.datasecs()[".data"]
    assert (ds.members[0].type, ds.members[0].offset, ds.members[0].size) == (ids["var"], 0, 12)
    assert btf.find("f", Kind.FUNC).type == ids["proto"] and btf.func_types() == {"f": ids["func"]}
    with pytest.raises(BtfError, match="no size"):
        btf.size_of(ids["func"])


def test_malformed_btf() -> None:
    raw, _ = every_kind()
    with pytest.raises(BtfError, match="magic"):
        BTF(b"\x00\x00" + raw[2:])
    with pytest.raises(BtfError, match="shorter"):
        BTF(raw[:10])
    with pytest.raises(BtfError, match="past the end"):
        BTF(raw[:-3])
    b = Builder()
    b.add("p", Kind.PTR, 0, 99)
    with pytest.raises(BtfError, match="refers to type 99"):
        BTF(b.raw())
    b = Builder()
    b.add("", Kind.INT, 0, 4, struct.pack("<I", 32))
    bad = bytearray(b.raw())
    struct.pack_into("<I", bad, 24, 1000)  # name offset beyond the strings
    with pytest.raises(BtfError, match="string offset"):
        BTF(bytes(bad))


SHIPPED_RAW = (ROOT / "xdpsim" / "data" / "core_types.btf").read_bytes()


@settings(max_examples=80, deadline=None)
@given(
    st.integers(0, len(SHIPPED_RAW)),
    st.lists(st.tuples(st.integers(0, len(SHIPPED_RAW) - 1), st.integers(1, 255)), max_size=6),
)
def test_damaged_btf_raises_btf_error_only(cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(SHIPPED_RAW[:cut])
    for off, x in flips:
        if off < len(data):
            data[off] ^= x
    try:
        BTF(bytes(data))
    except BtfError:
        pass
    try:  # lazily: the same errors, when the damaged type is asked for
        lazy = BTF(bytes(data), lazy=True)
        lazy.by_name("iphdr")
        _ = lazy.types
    except BtfError:
        pass


def test_lazy_equals_eager() -> None:
    eager = BTF(SHIPPED_RAW)
    lazy = BTF(SHIPPED_RAW, lazy=True)
    ip = lazy.find("iphdr", Kind.STRUCT)
    assert ip == eager.find("iphdr", Kind.STRUCT)
    assert lazy.types == eager.types and len(lazy) == len(eager)


# --- the shipped BTF -----------------------------------------------------------------------------


def test_shipped_btf_has_the_network_types() -> None:
    btf = shipped_btf()
    sizes = {
        "ethhdr": 14,
        "vlan_hdr": 4,
        "iphdr": 20,
        "ipv6hdr": 40,
        "tcphdr": 20,
        "udphdr": 8,
        "icmphdr": 8,
        "icmp6hdr": 8,
        "xdp_md": 24,
        "__sk_buff": 192,
        "bpf_devmap_val": 8,
    }
    for name, size in sizes.items():
        t = btf.find(name, Kind.STRUCT)
        assert t is not None, name
        assert t.size == size, name
    ip = btf.find("iphdr", Kind.STRUCT)
    assert [(m.name, m.offset, m.bitfield_size) for m in ip.members[:2]] == [("ihl", 0, 4), ("version", 4, 4)]
    assert btf.find("xdp_action", Kind.ENUM).members[2].name == "XDP_PASS"


@needs_vmlinux
def test_shipped_btf_agrees_with_vmlinux() -> None:
    from xdpsim.btf.core import _find_member, target_btf

    kernel, _ = target_btf()
    mine = shipped_btf()
    for name in ("ethhdr", "iphdr", "ipv6hdr", "tcphdr", "udphdr", "icmphdr", "xdp_md", "__sk_buff"):
        a, b = mine.find(name, Kind.STRUCT), kernel.find(name, Kind.STRUCT)
        assert a.size == b.size, name
        for m in a.members:
            # the uapi header's tcphdr.res1 is 4 bits; kernels since 6.2 split off `ae` (res1 is 3 bits)
            if m.name and (name, m.name) != ("tcphdr", "res1"):
                assert _find_member(kernel, b, m.name)[0] == m.offset, (name, m.name)


@needs_clang
def test_shipped_btf_is_reproducible(tmp_path: Path) -> None:
    out = tmp_path / "core_types.o"
    src = ROOT / "xdpsim" / "data" / "core_types.c"
    subprocess.run(
        [
            CLANG,
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-Wall",
            f"-I/usr/include/{platform.machine()}-linux-gnu",
            "-c",
            str(src),
            "-o",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    fresh = BTF(section(out, ".BTF"))
    shipped = shipped_btf()
    assert [(t.kind, t.name, t.size) for t in fresh.types] == [
        (t.kind, t.name, t.size) for t in shipped.types
    ]


# --- BTF.ext --------------------------------------------------------------------------------------


def test_btf_ext_records() -> None:
    path = PROGRAMS / "calls.o"
    btf = BTF(section(path, ".BTF"))
    ext = parse_ext(section(path, ".BTF.ext"), btf)
    assert set(ext.func_info) == {"xdp", ".text"}
    text_funcs = {btf[f.type_id].name for f in ext.func_info[".text"]}
    assert text_funcs == {"summarize", "fold_sum", "mix", "loop_step"}
    assert all(li.file.endswith("calls.c") for li in ext.line_info["xdp"])
    assert any("bpf_loop" in li.text for li in ext.line_info["xdp"])
    core = parse_ext(section(PROGRAMS / "core.o", ".BTF.ext"), BTF(section(PROGRAMS / "core.o", ".BTF")))
    kinds = {r.kind for r in core.core_relos["xdp"]}
    assert {
        CoreKind.FIELD_BYTE_OFFSET,
        CoreKind.FIELD_BYTE_SIZE,
        CoreKind.FIELD_EXISTS,
        CoreKind.FIELD_SIGNED,
        CoreKind.FIELD_LSHIFT_U64,
        CoreKind.FIELD_RSHIFT_U64,
        CoreKind.TYPE_EXISTS,
        CoreKind.TYPE_SIZE,
        CoreKind.ENUMVAL_VALUE,
        CoreKind.ENUMVAL_EXISTS,
    } <= kinds


def test_btf_ext_truncated() -> None:
    path = PROGRAMS / "calls.o"
    btf = BTF(section(path, ".BTF"))
    raw = section(path, ".BTF.ext")
    for cut in (4, 31, len(raw) // 2, len(raw) - 4):
        with pytest.raises(BtfError):
            parse_ext(raw[:cut], btf)


def test_essential_name() -> None:
    assert essential_name("iphdr___old") == "iphdr"
    assert essential_name("iphdr") == "iphdr"
    assert essential_name("___x") == "___x"


# --- CO-RE against other layouts ---------------------------------------------------------------------

TARGET_SHIFTED = """
typedef unsigned char __u8; typedef unsigned short __u16; typedef unsigned int __u32;
typedef unsigned long long __u64;
struct ethhdr { unsigned char h_dest[6]; unsigned char h_source[6]; __u16 h_proto; };
struct iphdr {
    __u64 stamp;  /* a new field in front: everything moves by 8 */
    __u8 ihl:4, version:4; __u8 tos; __u16 tot_len; __u16 id; __u16 frag_off; __u8 ttl; __u8 protocol;
    __u16 check; union { struct { __u32 saddr; __u32 daddr; }; struct { __u32 saddr; __u32 daddr; } addrs; };
};
struct udphdr { __u16 dest; __u16 source; __u16 len; __u16 check; };  /* dest first */
struct xdp_md { __u32 data; __u32 data_end; __u32 data_meta; __u32 ingress_ifindex; __u32 rx_queue_index;
                __u32 egress_ifindex; };
enum xdp_action { XDP_ABORTED, XDP_DROP, XDP_TX = 3, XDP_PASS = 7 };
struct ethhdr a; struct iphdr b; struct udphdr c; struct xdp_md d; enum xdp_action e;
"""

TARGET_NO_DEST = TARGET_SHIFTED.replace(
    "struct udphdr { __u16 dest; __u16 source;", "struct udphdr { __u16 dst; __u16 source;"
)


def target_btf_file(tmp_path: Path, src: str) -> str:
    c = tmp_path / "target.c"
    c.write_text(src)
    o = tmp_path / "target.o"
    subprocess.run(
        [CLANG, "-O2", "-g", "-target", "bpf", "-c", str(c), "-o", str(o)], check=True, capture_output=True
    )
    out = tmp_path / "target.btf"
    out.write_bytes(section(o, ".BTF"))
    return str(out)


def _diff(a, b) -> dict[int, tuple]:
    return {pc: (x, y) for pc, (x, y) in enumerate(zip(a, b, strict=True)) if x != y}


@needs_clang
def test_core_relocates_to_another_layout(tmp_path: Path) -> None:
    path = PROGRAMS / "core.o"
    base = load_object(path, core_btf=str(ROOT / "xdpsim" / "data" / "core_types.btf")).programs["core_parse"]
    moved = load_object(path, core_btf=target_btf_file(tmp_path, TARGET_SHIFTED)).programs["core_parse"]
    d = _diff(base.insns, moved.insns)
    # iph->protocol: offset 9 -> 17; udp->dest: 2 -> 0
    loads = {(x.off, y.off) for x, y in d.values() if x.opcode in (0x71, 0x69)}
    assert (9, 17) in loads and (2, 0) in loads
    # bpf_core_enum_value(XDP_PASS): 2 -> 7 (an lddw)
    assert any(x.opcode == LDDW and x.imm == 2 and y.imm == 7 for x, y in d.values())
    # the bitfields now sit at byte 8: byte offsets 0 -> 8 on the ALU adds
    assert any(x.opcode == 0xB7 and x.imm == 0 and y.imm == 8 for x, y in d.values())


@needs_clang
def test_core_missing_field_poisons(tmp_path: Path) -> None:
    spec = load_object(PROGRAMS / "core.o", core_btf=target_btf_file(tmp_path, TARGET_NO_DEST))
    insns = spec.programs["core_parse"].insns
    assert any(ins.opcode == CALL and ins.imm == POISON_HELPER for ins in insns)
    assert any("not satisfied" in n and "FIELD_BYTE_OFFSET" in n for n in spec.notices)


@needs_vmlinux
def test_core_vmlinux_and_shipped_agree() -> None:
    a = load_object(PROGRAMS / "core.o", core_btf=VMLINUX).programs["core_parse"].insns
    b = load_object(PROGRAMS / "core.o", core_btf=str(ROOT / "xdpsim" / "data" / "core_types.btf"))
    assert a == b.programs["core_parse"].insns


def test_core_bad_target_is_load_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.btf"
    bad.write_bytes(b"\x00" * 40)
    with pytest.raises(LoadError, match="CO-RE"):
        load_object(PROGRAMS / "core.o", core_btf=str(bad))


# --- values by BTF type -------------------------------------------------------------------------------


def test_decode_encode_map_values() -> None:
    from xdpsim.btf import decode, encode

    spec = load_object(PROGRAMS / "parser.o")
    ps = spec.map_by_name("port_stats")
    key = encode(spec.btf, ps.btf_key_type_id, {"proto": 6, "port": 80})
    assert key == bytes([6, 0]) + (80).to_bytes(2, "little")
    assert decode(spec.btf, ps.btf_key_type_id, key) == {"proto": 6, "pad": 0, "port": 80}
    val = encode(spec.btf, ps.btf_value_type_id, {"packets": 3, "bytes": 180})
    assert decode(spec.btf, ps.btf_value_type_id, val) == {"packets": 3, "bytes": 180}
    with pytest.raises(BtfError, match="no member 'nope'"):
        encode(spec.btf, ps.btf_key_type_id, {"nope": 1})
    with pytest.raises(BtfError, match="does not fit"):
        encode(spec.btf, ps.btf_key_type_id, {"port": 70000})
    # global data: the DATASEC of .rodata decodes into its variables
    calls = load_object(PROGRAMS / "calls.o")
    ro = calls.map_by_name(".rodata")
    from xdpsim.btf import BTF

    fixed = BTF(calls.btf_raw)  # offsets filled in by the loader
    assert decode(fixed, ro.btf_value_type_id, ro.initial) == {
        "cfg": {"min_len": 60, "loop_rounds": 16, "seed": 0x9E3779B9}
    }


def test_decode_bitfields_arrays_and_signs() -> None:
    from xdpsim.btf import decode, encode

    btf = shipped_btf()
    ip = btf.find("iphdr", Kind.STRUCT).id
    hdr = bytes([0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2])
    d = decode(btf, ip, hdr)
    assert (d["ihl"], d["version"], d["ttl"], d["protocol"], d["saddr"]) == (5, 4, 64, 6, 0x0100000A)
    assert encode(btf, ip, d) == hdr
    eth = decode(btf, btf.find("ethhdr", Kind.STRUCT).id, bytes(range(14)))
    assert eth["h_dest"] == bytes(range(6))
    raw, ids = every_kind()
    b = BTF(raw)
    data = struct.pack("<i", -5) + bytes(range(6)) + bytes([0b101, 0])
    assert decode(b, ids["struct"], data) == {"a": -5, "mac": bytes(range(6)), "bits": 5}
    assert encode(b, ids["struct"], {"a": -5, "mac": bytes(range(6)), "bits": 5}) == data


@needs_clang
def test_core_type_matches(tmp_path: Path) -> None:
    from xdpsim.btf import CoreRelo
    from xdpsim.btf.core import resolve

    local = BTF(Path(target_btf_file(tmp_path, TARGET_SHIFTED)).read_bytes())
    kernel_like = shipped_btf()
    same = BTF(Path(target_btf_file(tmp_path, TARGET_SHIFTED)).read_bytes())

    def matches(name: str, kind: Kind, target: BTF) -> int:
        relo = CoreRelo(0, local.find(name, kind).id, "0", CoreKind.TYPE_MATCHES)
        return resolve(relo, local, target).target

    assert matches("iphdr", Kind.STRUCT, same) == 1
    assert matches("xdp_md", Kind.STRUCT, kernel_like) == 1  # same members, same types
    assert matches("iphdr", Kind.STRUCT, kernel_like) == 0  # `stamp` is not in the kernel's iphdr
    assert matches("xdp_action", Kind.ENUM, kernel_like) == 1  # every local enumerator exists there
    exists = CoreRelo(0, local.find("iphdr", Kind.STRUCT).id, "0", CoreKind.TYPE_EXISTS)
    assert resolve(exists, local, kernel_like).target == 1
