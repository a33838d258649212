"""XDP broadcast asked of the running kernel (skipped without root/BPF, with the reason).

A live-frames test run (BPF_F_TEST_XDP_LIVE_FRAMES) really redirects: the frame enters on a veth of a
throwaway namespace and bpf_redirect_map(BPF_F_BROADCAST) puts a copy on the transmit queue of every
device of the devmap. Each veth's peer runs `rx_count` (programs/broadcast.c), which counts what
arrives and keeps its first bytes; an XDP program on the peer is also what makes the veth a valid
broadcast destination (NETDEV_XDP_ACT_NDO_XMIT). Whether xdp_do_redirect succeeded is read from the
xdp_redirect / xdp_redirect_err tracepoints with a raw-tracepoint program (no tracefs needed), filtered
on the devmap's id. The answers are compared with what xdpsim's pipeline decides for the same map.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kernel_fixtures import kernel  # noqa: F401 - the fixture
from test_broadcast import EXAMPLE, FRAME, MIXED, PROGRAMS, TOML, entry, sink, stamped

from xdpsim.errors import KernelError
from xdpsim.isa import Instruction, encode, lddw
from xdpsim.loader import load_object
from xdpsim.pipeline.config import parse_spec
from xdpsim.pipeline.pipeline import Pipeline
from xdpsim.pipeline.replay import replay_to_dir

BPF_LINK_CREATE, BPF_XDP = 28, 37
BPF_RAW_TRACEPOINT_OPEN, BPF_PROG_TYPE_RAW_TRACEPOINT = 17, 17
DEVICES = [("xs2", 2, 1), ("xs3", 3, 1), ("xs4", 4, 1)]


class _LinkAttr(ctypes.Structure):  # union bpf_attr, link_create
    _fields_ = [("prog_fd", ctypes.c_uint32), ("target_ifindex", ctypes.c_uint32),
                ("attach_type", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("rest", ctypes.c_uint64 * 6)]


class _RawTpAttr(ctypes.Structure):  # union bpf_attr, raw_tracepoint
    _fields_ = [("name", ctypes.c_uint64), ("prog_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32),
                ("cookie", ctypes.c_uint64)]


# --- the live namespace ------------------------------------------------------------------------------


class Live:
    """broadcast.o in the kernel with devices xs2..xs4, rx_count on each one's veth peer."""

    def __init__(self, coll: Any, peers: dict[int, int]):
        self.c = coll
        self.peers = peers  # device ifindex -> its peer's rx_seen key (peer ifindex % 8)

    def set_entries(self, map_name: str, entries: dict[int, tuple[int, str | None]]) -> None:
        m = self.c.maps[map_name]
        with self.c.netns.entered():
            for k in list(m.keys()):
                with contextlib.suppress(KeyError, KernelError):
                    m.delete(k)
            for key, (ifindex, prog) in entries.items():
                fd = self.c.programs[prog].fd.fd if prog else 0
                m.update(key, struct.pack("<II", ifindex, fd))

    def received(self) -> dict[int, int]:
        """Frames each device has sent so far (counted at its peer)."""
        raw = self.c.read_map("rx_seen").items()
        seen = {int.from_bytes(k, "little"): int.from_bytes(v, "little") for k, v in raw}
        return {dev: seen.get(key, 0) for dev, key in self.peers.items()}

    def heads(self) -> dict[int, bytes]:
        raw = {int.from_bytes(k, "little"): bytes(v) for k, v in self.c.read_map("rx_head").items()}
        return {dev: raw[key] for dev, key in self.peers.items()}

    def run(self, prog: str, ingress: int = 2, frame: bytes = FRAME) -> dict[int, int]:
        """One live-frames run; the frames each device sent because of it."""
        from xdpsim.engines.kernel import XDP_MD
        from xdpsim.kernel import bpf

        before = self.received()
        ctx = XDP_MD.pack(0, len(frame), 0, ingress, 0, 0)
        with self.c.netns.entered():
            bpf.prog_test_run(self.c.programs[prog].fd.fd, frame, ctx_in=ctx, data_out_size=0,
                              flags=bpf.BPF_F_TEST_XDP_LIVE_FRAMES)
        for _ in range(50):  # the copies are flushed at the end of the run; the peers' NAPI may lag
            after = self.received()
            if after != before:
                time.sleep(0.02)
                after = self.received()
                break
            time.sleep(0.01)
        return {dev: after[dev] - before[dev] for dev in after if after[dev] != before[dev]}


@pytest.fixture(scope="module")
def live(kernel: str) -> Iterator[Live]:  # noqa: F811
    from xdpsim.engines.kernel import KernelCollection
    from xdpsim.kernel import bpf

    try:
        coll = KernelCollection(load_object(str(PROGRAMS / "broadcast.o")), interfaces=DEVICES)
    except KernelError as e:
        pytest.skip(f"cannot make the test namespace with veth devices: {e}")
    links: list[int] = []
    try:
        ns = coll.netns
        by_name = {ln["ifname"]: ln for ln in ns.links()}
        peers = {}
        with ns.entered():
            for name, ifindex, _q in DEVICES:
                peer = by_name[by_name[name]["link"]]["ifindex"]
                attr = _LinkAttr(coll.programs["rx_count"].fd.fd, peer, BPF_XDP, 0)
                fd = bpf.sys_bpf(BPF_LINK_CREATE, attr)
                if fd < 0:
                    pytest.skip(f"cannot attach XDP to the veth peer {peer}: {os.strerror(-fd)}")
                links.append(fd)
                peers[ifindex] = peer % 8
        assert len(set(peers.values())) == len(peers), peers
        yield Live(coll, peers)
    finally:
        for fd in links:
            os.close(fd)
        coll.close()


@contextlib.contextmanager
def redirect_events(map_fd: int) -> Iterator[Callable[[], dict[str, int]]]:
    """Counts of the xdp_redirect and xdp_redirect_err tracepoints for one map (args: dev, xdp, tgt,
    err, map_type, map_id, index), and the last error; skips where raw tracepoints cannot be used."""
    from xdpsim.kernel import bpf

    map_id = bpf.map_info(map_fd)["id"]
    counts = bpf.map_create(2, 4, 8, 4, name="xs_bcast_tp")  # ARRAY
    fds: list[int] = []
    progs = []
    try:
        for slot, event in ((0, b"xdp_redirect"), (2, b"xdp_redirect_err")):
            try:
                p = bpf.prog_load(BPF_PROG_TYPE_RAW_TRACEPOINT, encode(_counter(counts.fd, map_id, slot)),
                                  name="xs_bcast_tp")
            except KernelError as e:
                pytest.skip(f"raw tracepoint programs cannot be loaded here: {e}")
            progs.append(p.fd)
            name = ctypes.create_string_buffer(event)
            fd = bpf.sys_bpf(BPF_RAW_TRACEPOINT_OPEN, _RawTpAttr(ctypes.addressof(name), p.fd.fd, 0, 0))
            if fd < 0:
                pytest.skip(f"cannot attach to the {event.decode()} tracepoint: {os.strerror(-fd)}")
            fds.append(fd)

        def read() -> dict[str, int]:
            v = [int.from_bytes(bpf.map_lookup(counts.fd, i.to_bytes(4, "little"), 8) or bytes(8), "little",
                                signed=True) for i in range(4)]
            last = v[3] & 0xFFFF_FFFF  # an int argument: its 32 bits, as the tracepoint's u64 slot holds it
            return {"ok": v[0], "err": v[2], "last_err": last - (1 << 32) if last >> 31 else last}

        yield read
    finally:
        for fd in fds:
            os.close(fd)
        for p in progs:
            p.close()
        counts.close()


def _counter(map_fd: int, map_id: int, slot: int) -> list[Instruction]:
    """if (args[5] == map_id) { counts[slot] += 1; counts[slot + 1] = args[3]; } return 0;"""
    def lookup(key: int) -> list[Instruction]:
        return [Instruction(0x62, 10, 0, -4, key), *lddw(1, map_fd, src=1), Instruction(0xBF, 2, 10, 0, 0),
                Instruction(0x07, 2, 0, 0, -4), Instruction(0x85, 0, 0, 0, 1)]

    count = [*lookup(slot), Instruction(0x15, 0, 0, 3, 0), Instruction(0xB7, 1, 0, 0, 1),
             Instruction(0xDB, 0, 1, 0, 0)]  # lock *(u64 *)(r0 + 0) += r1
    last = [*lookup(slot + 1), Instruction(0x15, 0, 0, 1, 0), Instruction(0x7B, 0, 7, 0, 0)]
    body = count + last
    head = [Instruction(0x79, 6, 1, 40, 0), Instruction(0x79, 7, 1, 24, 0),  # r6 = map_id, r7 = err
            Instruction(0x55, 6, 0, len(body), map_id)]
    return [*head, *body, Instruction(0xB7, 0, 0, 0, 0), Instruction(0x95, 0, 0, 0, 0)]


# --- what xdpsim decides for the same map --------------------------------------------------------------


def sim_copies(tmp_path: Path, prog: str, map_name: str, entries: dict[int, tuple[int, str | None]],
               ingress: int = 2) -> tuple[str, dict[int, list[bytes]]]:
    """The interpreter pipeline's reason for FRAME entering on `ingress`, and the bytes each device sends."""
    ents = [entry(map_name, k, i, p) for k, (i, p) in entries.items()]
    path = tmp_path / "p.toml"
    path.write_text(TOML.format(obj=PROGRAMS / "broadcast.o", prog=prog, entries="\n".join(ents)))
    with Pipeline(parse_spec(str(path)), engine="interp") as p:
        iface = p.by_ifindex[ingress]
        d = p.process(iface, FRAME, 0)
        sent: dict[int, list[bytes]] = {}
        for c in d.clones:
            if c.outcome == "redirect":
                sent.setdefault(p.interfaces[[i.name for i in p.interfaces].index(c.target)].ifindex,
                                []).append(c.data)
    return d.reason, sent


CASES = {
    "every port, the ingress one too": ("flood", "ports", {0: (2, None), 1: (3, None), 5: (4, None)}),
    "exclude ingress": ("flood_others", "ports", {0: (2, None), 1: (3, None), 5: (4, None)}),
    "two entries, one device": ("flood_others", "ports", {0: (3, None), 7: (3, None)}),
    "devmap programs per copy": ("flood", "ports", {0: (2, "split_horizon"), 1: (3, "split_horizon"),
                                                    2: (4, None)}),
    "devmap_hash": ("flood_hash", "hports", {9: (3, None), 14: (4, None), 3: (2, None)}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_live_broadcast_matches_the_pipeline(live: Live, tmp_path: Path, case: str) -> None:
    prog, map_name, entries = CASES[case]
    reason, sent = sim_copies(tmp_path, prog, map_name, entries)
    assert reason == "broadcast"
    live.set_entries(map_name, entries)
    got = live.run(prog)
    assert got == {dev: len(frames) for dev, frames in sent.items()}
    heads = live.heads()
    for dev, frames in sent.items():
        assert heads[dev] == frames[-1][:16]  # the bytes the device sent (stamped by split_horizon)
    if case == "devmap programs per copy":
        assert set(got) == {3, 4} and heads[3] == stamped(FRAME, 3)[:16]


@pytest.mark.parametrize("case", ["empty map", "every entry excluded"])
def test_live_empty_broadcast_is_a_successful_redirect_that_sends_nothing(live: Live, tmp_path: Path,
                                                                         case: str) -> None:
    """dev_map_enqueue_multi frees the frame and returns 0: the xdp_redirect tracepoint fires with err 0
    (not xdp_redirect_err) though no device sends anything; xdpsim drops it as `broadcast_empty`."""
    prog, entries = ("flood", {}) if case == "empty map" else ("flood_others", {4: (2, None)})
    reason, sent = sim_copies(tmp_path, prog, "ports", entries)
    assert (reason, sent) == ("broadcast_empty", {})
    live.set_entries("ports", entries)
    with redirect_events(live.c.maps["ports"].fd.fd) as events:
        got = live.run(prog)
        assert events() == {"ok": 1, "err": 0, "last_err": 0}
        # the same probe sees a failing redirect: a broadcast is never one, a unicast to a device that
        # cannot transmit XDP frames (the loopback) is
        live.set_entries("ports", {0: (1, None)})
        assert live.run("flood") == {}
        assert events() == {"ok": 2, "err": 0, "last_err": 0}
    assert got == {}


def test_live_unicast_failure_is_seen_by_the_probe(live: Live) -> None:
    """The probe of the test above can tell a failure: redirect.o's unicast bpf_redirect_map to the
    loopback (no ndo_xdp_xmit) fails with -EOPNOTSUPP in xdp_do_redirect."""
    import errno

    from xdpsim.engines.kernel import XDP_MD, KernelCollection
    from xdpsim.kernel import bpf

    with KernelCollection(load_object(str(PROGRAMS / "redirect.o")), netns=live.c.netns) as c:
        with c.netns.entered():
            c.maps["tx_ports"].update(0, 1)
        with redirect_events(c.maps["tx_ports"].fd.fd) as events, c.netns.entered():
            bpf.prog_test_run(c.programs["redirect_map"].fd.fd, FRAME, data_out_size=0,
                              ctx_in=XDP_MD.pack(0, len(FRAME), 0, 2, 0, 0),
                              flags=bpf.BPF_F_TEST_XDP_LIVE_FRAMES)
            assert events() == {"ok": 0, "err": 1, "last_err": -errno.EOPNOTSUPP}


# --- the pipeline on the kernel engine -----------------------------------------------------------------


def test_kernel_pipeline_broadcasts_like_interp(kernel: str, tmp_path: Path) -> None:  # noqa: F811
    """programs/broadcast.toml on the kernel engine (the target recorded from the helper call, the map
    read back from the kernel, split_horizon run as its plain-XDP twin): the same packets, reasons,
    copies and sink bytes as the interpreter."""
    got = {}
    for engine in ("interp", "kernel"):
        out = tmp_path / engine
        stats = replay_to_dir(str(EXAMPLE), MIXED, out, engine=engine, log=True)
        rows = [(r["outcome"], r["reason"], r["target"])
                for r in map(json.loads, (out / "packets.jsonl").read_text().splitlines())]
        files = sorted(str(p.relative_to(out)) for p in out.rglob("*.pcap"))
        got[engine] = (rows, stats["packets"], stats["reasons"], stats["clones"], stats["redirect_targets"],
                       [(f, sink(out, f)) for f in files])
    assert got["kernel"] == got["interp"]
    assert got["kernel"][2]["redirect"]["broadcast_copy"] > 0


def test_api_runs_give_the_same_broadcast_target(kernel: str) -> None:  # noqa: F811
    """Program.run: kind "broadcast", the map, and the call's flags, in every engine."""
    import xdpsim

    obj = xdpsim.load(str(PROGRAMS / "broadcast.o"))
    try:
        prog = obj.programs["flood_others"]
        got = {e: prog.run(FRAME, engine=e).redirect for e in ("interp", "jit", "kernel")}
    finally:
        obj.close()
    assert got["kernel"] == got["interp"] == got["jit"]
    assert (got["kernel"].kind, got["kernel"].flags) == ("broadcast", (1 << 3) | (1 << 4))
