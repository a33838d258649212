"""The kernel backend reads a broadcast devmap's entries once, not two syscalls a slot per packet: BPF
programs cannot write a devmap (asked here: the kernel creates devmaps BPF_F_RDONLY_PROG, the verifier
says "write into map forbidden"), so only `[[map_entries]]` (apply) changes them, and apply forgets what
was read. Skipped without root/BPF, with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from kernel_fixtures import kernel  # noqa: F401 - the fixture

from xdpsim.errors import KernelError
from xdpsim.isa import Instruction as I  # noqa: N817 - the instruction builder reads best short
from xdpsim.isa import encode, lddw
from xdpsim.pipeline.config import MapEntry, parse_spec
from xdpsim.pipeline.pipeline import Pipeline
from xdpsim.spec import MapType

EXAMPLE = Path(__file__).resolve().parent.parent / "programs" / "broadcast.toml"
FRAME = bytes.fromhex("ffffffffffff02000000000108004500001c0001000040017cdd0a0000010a000002") + bytes(20)
KEY = [I(0x62, 10, 0, -4, 0), I(0xBF, 2, 10), I(0x07, 2, 0, 0, -4)]  # *(u32 *)(r10 - 4) = 0; r2 = &key


@pytest.mark.parametrize("map_type", [MapType.DEVMAP, MapType.DEVMAP_HASH])
@pytest.mark.parametrize("helper", ["update", "delete"])
def test_programs_cannot_write_a_devmap(kernel: str, map_type: MapType, helper: str) -> None:  # noqa: F811
    from xdpsim.kernel import bpf

    m = bpf.map_create(int(map_type), 4, 4, 8, name="xs_dm_ro")
    try:
        load = [*lddw(1, m.fd, src=1)]
        if helper == "update":  # bpf_map_update_elem(&map, &key, &value (the key's slot), 0)
            body = KEY + load + [I(0xBF, 3, 2), I(0xB7, 4, 0, 0, 0), I(0x85, 0, 0, 0, 2)]
        else:  # bpf_map_delete_elem(&map, &key)
            body = KEY + load + [I(0x85, 0, 0, 0, 3)]
        with pytest.raises(KernelError, match="write into map forbidden"):
            bpf.prog_load(6, encode(body + [I(0xB7, 0, 0, 0, 2), I(0x95)]), name="xs_dm_write")
    finally:
        m.close()


def test_ports_read_once_and_again_after_apply(kernel: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    with Pipeline(parse_spec(str(EXAMPLE)), engine="kernel") as p:
        eth0 = p.by_ifindex[2]
        first = [(c.outcome, c.reason, c.target) for c in p.process(eth0, FRAME, 0).clones]
        assert [t for _o, _r, t in first] == [None, "eth1", "eth2"]  # eth0's copy: dropped by split_horizon
        ports = p.backend.collections[str(EXAMPLE.parent / "broadcast.o")].maps["ports"]  # type: ignore[union-attr]
        cls = type(ports)

        def no_reads(self: object) -> None:
            raise AssertionError("the devmap was read again")

        monkeypatch.setattr(cls, "items", no_reads)
        again = [(c.outcome, c.reason, c.target) for c in p.process(eth0, FRAME, 0).clones]
        assert again == first
        monkeypatch.undo()
        # eth2's entry (key 3) now names eth1: read anew after apply
        value = bytes.fromhex("0300000000000000")
        p.backend.apply(MapEntry(map="ports", key=(3).to_bytes(4, "little"), value=value))
        after = [c.target for c in p.process(eth0, FRAME, 0).clones]
    assert after == [None, "eth1", "eth1"]
