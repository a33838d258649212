"""Expected verdicts of the bundled programs, derived from the packet bytes (and scapy's dissection),
independently of xdpsim's engines: the pipeline tests compare a replay against these."""

from __future__ import annotations

import json
import struct
from collections import Counter
from pathlib import Path

import scapy.layers.inet6  # noqa: F401 - binds IPv6 to Ethernet
from scapy.layers.inet import TCP, UDP
from scapy.layers.l2 import Ether

from xdpsim.io import open_capture

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "programs"
PCAPS = ROOT / "pcaps"


def frames(path: Path) -> list[bytes]:
    return [p.data for p in open_capture(path)]


def l3(frame: bytes) -> tuple[str, int, int]:
    """common.h's parse_l3 on raw bytes: ("ip", proto, l4 offset) | ("nonip", 0, 0) | ("bad", 0, 0)."""
    if len(frame) < 14:
        return "bad", 0, 0
    etype = struct.unpack_from("!H", frame, 12)[0]
    off = 14
    if etype in (0x8100, 0x88A8):
        if len(frame) < 18:
            return "bad", 0, 0
        etype = struct.unpack_from("!H", frame, 16)[0]
        off = 18
    if etype == 0x0800:
        if len(frame) < off + 20:
            return "bad", 0, 0
        ver, ihl = frame[off] >> 4, (frame[off] & 15) * 4
        if ver != 4 or ihl < 20:
            return "bad", 0, 0
        return "ip", frame[off + 9], off + ihl
    if etype == 0x86DD:
        if len(frame) < off + 40:
            return "bad", 0, 0
        return "ip", frame[off + 6], off + 40
    return "nonip", 0, 0


def parser_verdict(frame: bytes) -> tuple[str, str]:
    """(outcome, reason) of programs/parser.o for one frame."""
    if len(frame) < 14:
        return "drop", "frame_too_short"
    kind, proto, l4 = l3(frame)
    if kind == "bad":
        return "drop", "xdp_drop"
    if kind == "nonip" or proto not in (6, 17):
        return "pass", "xdp_pass"
    hdr = 20 if proto == 6 else 8
    if l4 > 128 or len(frame) < l4 + hdr:
        return "drop", "xdp_drop"
    dport = struct.unpack_from("!H", frame, l4 + 2)[0]
    _check_with_scapy(frame, proto, dport)
    if (proto, dport) in ((6, 23), (17, 19)):
        return "drop", "xdp_drop"
    return "pass", "xdp_pass"


def _check_with_scapy(frame: bytes, proto: int, dport: int) -> None:
    """scapy's dissection agrees on the port for the frames it dissects as TCP/UDP at the top."""
    pkt = Ether(frame)
    layer = TCP if proto == 6 else UDP
    if layer in pkt and pkt[layer].underlayer is not None and pkt[layer].underlayer.name in ("IP", "IPv6"):
        assert pkt[layer].dport == dport, (pkt.summary(), dport)


def parser_maps(frames_: list[bytes]) -> tuple[Counter, dict[tuple[int, int], list[int]]]:
    """Expected proto_count (proto -> packets) and port_stats ((proto, port) -> [packets, bytes])."""
    protos: Counter = Counter()
    ports: dict[tuple[int, int], list[int]] = {}
    for f in frames_:
        kind, proto, l4 = l3(f)
        if kind != "ip":
            continue
        protos[proto] += 1
        hdr = {6: 20, 17: 8}.get(proto)
        if hdr is None or l4 > 128 or len(f) < l4 + hdr:
            continue
        dport = struct.unpack_from("!H", f, l4 + 2)[0]
        st = ports.setdefault((proto, dport), [0, 0])
        st[0] += 1
        st[1] += len(f)
    return protos, ports


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "packets.jsonl").read_text().splitlines()]


def decode_parser_maps(maps: dict) -> tuple[Counter, dict[tuple[int, int], list[int]]]:
    protos: Counter = Counter()
    for k, v in maps["proto_count"]["entries"].items():
        total = sum(int.from_bytes(bytes.fromhex(c), "little") for c in v)
        if total:
            protos[int.from_bytes(bytes.fromhex(k), "little")] = total
    ports = {}
    for k, v in maps["port_stats"]["entries"].items():
        kb, vb = bytes.fromhex(k), bytes.fromhex(v)
        ports[(kb[0], struct.unpack_from("<H", kb, 2)[0])] = list(struct.unpack("<QQ", vb))
    return protos, ports
