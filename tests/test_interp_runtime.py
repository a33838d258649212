"""The Runtime: relocation, global data, maps of maps, several objects in one runtime, load refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from kernel_fixtures import ld_map, ld_map_value

from xdpsim import isa
from xdpsim.asm import assemble
from xdpsim.engines.interp import Interpreter
from xdpsim.errors import LoadError
from xdpsim.hooks.xdp import run_xdp
from xdpsim.loader import load_object
from xdpsim.memory import MAP_HANDLES
from xdpsim.runtime import Runtime
from xdpsim.spec import MapSpec, MapType, ObjectSpec, ProgramSpec, ProgType

PACKET = bytes(64)


def prog(name: str, *parts: str | list[isa.Instruction]) -> ProgramSpec:
    insns: list[isa.Instruction] = []
    for p in parts:
        insns += assemble(p) if isinstance(p, str) else p
    return ProgramSpec(name, "xdp", ProgType.XDP, "xdp", insns, license="GPL")


def objspec(progs: list[ProgramSpec], maps: list[MapSpec], path: str = "<t>") -> ObjectSpec:
    return ObjectSpec(path, {p.name: p for p in progs}, maps, license="GPL")


def rodata(initial: bytes) -> MapSpec:
    return MapSpec(".rodata", MapType.ARRAY, 4, len(initial), 1, initial=initial, frozen=True,
                   section=".rodata")


def data(initial: bytes) -> MapSpec:
    return MapSpec(".data", MapType.ARRAY, 4, len(initial), 1, initial=initial, section=".data")


def test_relocation_gives_handles_value_addresses_and_code_addresses() -> None:
    rt = Runtime()
    func = isa.Instruction(isa.LDDW, 3, isa.PSEUDO_FUNC, 0, 4, 0)
    p = prog("p", ld_map(1, 0), ld_map_value(2, 1, 8), [func, isa.Instruction(0)],
             "r0 = 0\nexit\nr0 = 1\nexit")
    coll = rt.load(objspec([p], [MapSpec("h", MapType.HASH, 4, 4, 8), data(bytes(16))]))
    loaded = rt.programs[coll.programs["p"]]
    h, d = coll.maps["h"], coll.maps[".data"]
    assert loaded.insns[0].imm64 == h.handle == (MAP_HANDLES << 32) | h.id
    assert loaded.insns[2].imm64 == (d.values_region << 32) | 8
    assert all(i.src == 0 for i in loaded.insns if i.opcode == isa.LDDW)
    code = loaded.insns[4].imm64
    assert rt.split_code_address(code) == (loaded.id, 9) and code >> 32 == rt.code_region == 5
    assert rt.split_code_address(h.handle) is None
    assert loaded.spec.insns[0].src == isa.PSEUDO_MAP_FD  # the original stays for disassembly


def test_global_data_read_and_write() -> None:
    p = prog("p", ld_map_value(1, 0, 4), "r0 = *(u32 *)(r1 + 0)\nr0 += 1\n*(u32 *)(r1 + 0) = r0",
             ld_map_value(2, 1, 0), "r2 = *(u32 *)(r2 + 0)\nr0 += r2\nexit")
    rt = Runtime()
    coll = rt.load(objspec([p], [data(b"\0\0\0\0\x29\0\0\0"), rodata(b"\x64\0\0\0")]))
    res = run_xdp(rt, Interpreter(), coll.programs["p"], PACKET)
    assert res.error is None and res.retval == 42 + 100
    assert coll.maps[".data"][0] == b"\0\0\0\0\x2a\0\0\0"


def test_rodata_write_faults() -> None:
    p = prog("p", ld_map_value(1, 0, 0), "r2 = 7\n*(u32 *)(r1 + 0) = r2\nr0 = 2\nexit")
    rt = Runtime()
    coll = rt.load(objspec([p], [rodata(b"\x64\0\0\0")]))
    res = run_xdp(rt, Interpreter(), coll.programs["p"], PACKET)
    e = res.error
    assert e is not None and e.kind == "memory" and e.pc == 3
    assert "to read-only region .rodata" in str(e)
    assert coll.maps[".rodata"][0] == b"\x64\0\0\0"


def test_maps_of_maps_init_slots_and_lookups() -> None:
    inner = MapSpec("inner", MapType.ARRAY, 4, 8, 2)
    outer = MapSpec("outer", MapType.ARRAY_OF_MAPS, 4, 4, 4, inner=MapSpec("", MapType.ARRAY, 4, 8, 2),
                    init_slots={1: "inner"})
    # r0 = *(u64 *)lookup(lookup(outer, 1), 0)
    p = prog("p", "*(u32 *)(r10 - 4) = 1", ld_map(1, 1), "r2 = r10\nr2 += -4\ncall 1\nif r0 == 0 goto +7",
             "*(u32 *)(r10 - 4) = 0\nr1 = r0\nr2 = r10\nr2 += -4\ncall 1\nif r0 == 0 goto +2",
             "r0 = *(u64 *)(r0 + 0)\nexit\nr0 = 99\nexit")
    rt = Runtime()
    coll = rt.load(objspec([p], [inner, outer]))
    assert coll.maps["outer"][1] == coll.maps["inner"].id
    coll.maps["inner"][0] = (5).to_bytes(8, "little")
    res = run_xdp(rt, Interpreter(), coll.programs["p"], PACKET)
    assert res.error is None and res.retval == 5


def test_several_objects_in_one_runtime() -> None:
    def one(path: str, verdict: int) -> ObjectSpec:
        entry = prog("entry", ld_map(2, 0), "r3 = 0\ncall 12\nr0 = 2\nexit")
        target = prog("target", f"r0 = {verdict}\nexit")
        jmp = MapSpec("jmp", MapType.PROG_ARRAY, 4, 4, 1, init_slots={0: "target"})
        return objspec([entry, target], [jmp], path)

    rt = Runtime()
    a = rt.load(one("a.o", 1))
    b = rt.load(one("b.o", 3))
    assert a.programs["target"] != b.programs["target"]
    assert a.maps["jmp"].id != b.maps["jmp"].id
    assert b.maps["jmp"][0] == b.programs["target"]  # names resolve within the object first
    eng = Interpreter()
    assert run_xdp(rt, eng, a.programs["entry"], PACKET).retval == 1
    assert run_xdp(rt, eng, b.programs["entry"], PACKET).retval == 3
    a.maps["jmp"][0] = b.programs["target"]  # prog arrays may point anywhere in the runtime
    assert run_xdp(rt, eng, a.programs["entry"], PACKET).retval == 3
    assert rt.prog_id("target") == b.programs["target"]


@pytest.mark.parametrize("insns, maps, message", [
    ([*ld_map(1, 3), *assemble("r0 = 0\nexit")], [], "lddw refers to map index 3"),
    ([isa.Instruction(isa.LDDW, 1, isa.PSEUDO_BTF_ID, 0, 7, 0), isa.Instruction(0), *assemble("exit")], [],
     "lddw with source 3"),
    ([isa.Instruction(0x30, 0, 0, 0, 12), *assemble("exit")], [], "legacy packet access"),
    (assemble("call 999\nexit"), [], "unknown helper 999"),
])
def test_load_refusals(insns: list[isa.Instruction], maps: list[MapSpec], message: str) -> None:
    spec = objspec([ProgramSpec("p", "xdp", ProgType.XDP, "xdp", insns)], maps)
    with pytest.raises(LoadError, match=message) as e:
        Runtime().load(spec)
    assert "program p" in str(e.value)


def test_init_slot_naming_a_missing_program_is_refused() -> None:
    spec = objspec([prog("p", "r0 = 2\nexit")],
                   [MapSpec("jmp", MapType.PROG_ARRAY, 4, 4, 2, init_slots={0: "nowhere"})])
    with pytest.raises(LoadError, match=r"map jmp slot 0.*nowhere"):
        Runtime().load(spec)


def test_runtime_validates_cpus() -> None:
    with pytest.raises(ValueError):
        Runtime(cpus=0)


_PROGRAMS = sorted((Path(__file__).resolve().parent.parent / "programs").glob("*.o"))


@pytest.mark.parametrize("path", _PROGRAMS, ids=lambda p: p.name)
def test_relocated_code_encodes_to_what_the_engines_run(path: Path) -> None:
    """Each relocated lddw's filler slot carries the new high half, so encode/decode round-trips."""
    rt = Runtime()
    coll = rt.load(load_object(str(path)))
    for pid in coll.programs.values():
        insns = rt.programs[pid].insns
        again = isa.decode(isa.encode(insns))
        assert len(again) == len(insns)
        for pc, (a, b) in enumerate(zip(insns, again, strict=True)):
            if a.opcode == isa.LDDW:
                assert b.imm64 == a.imm64, f"{path.name}: {rt.programs[pid].name} insn {pc}"
                assert insns[pc + 1].imm == a.next_imm


def test_relocated_map_lddw_filler_holds_the_handle_high_half() -> None:
    rt = Runtime()
    coll = rt.load(objspec([prog("p", ld_map(1, 0), "r0 = 0\nexit")], [MapSpec("h", MapType.HASH, 4, 4, 8)]))
    insns = rt.programs[coll.programs["p"]].insns
    assert insns[1].imm == MAP_HANDLES and isa.decode(isa.encode(insns))[0].imm64 == coll.maps["h"].handle
