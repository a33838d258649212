"""Where packets go after the programs: one pcap per outcome, in input order, plus the side files.

Files are created on first use, so an output directory lists only the outcomes that happened, and
with several interfaces each interface has its own subdirectory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..io.pcap import PcapWriter

# pcap's seconds are 32 bits: timestamps outside [0, 2**32 s) are clamped when written
MAX_TS_NS = (1 << 32) * 1_000_000_000 - 1


def sink_name(outcome: str, target: str | None = None) -> str:
    """The pcap file name of an outcome: pass.pcap, redirect-eth1.pcap, redirect-cpu3.pcap, ..."""
    if outcome == "redirect" and target:
        if target.startswith("xsk-"):
            return f"{target}.pcap"
        return f"redirect-{target}.pcap"
    if outcome == "tx" and target:  # sent by the host out of `target` (TC egress passed)
        return f"wire-{target}.pcap"
    return f"{outcome}.pcap"


class Sinks:
    def __init__(self, out: Path, per_interface: bool = False):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.per_interface = per_interface
        self._writers: dict[Path, PcapWriter] = {}
        self._by_key: dict[tuple[str, str, str | None], PcapWriter] = {}
        self._log = None
        self._events = None
        self._trace = open(self.out / "trace.log", "w")  # noqa: SIM115 - closed in close()

    def _dir(self, interface: str) -> Path:
        d = self.out / interface if self.per_interface else self.out
        d.mkdir(parents=True, exist_ok=True)
        return d

    def writer(self, interface: str, outcome: str, target: str | None) -> PcapWriter:
        key = (interface if self.per_interface else "", outcome, target)
        w = self._by_key.get(key)  # a dict hit per packet: building paths costs more than the write
        if w is None:
            path = self._dir(interface) / sink_name(outcome, target)
            w = self._writers.get(path)
            if w is None:
                w = self._writers[path] = PcapWriter(path)
            self._by_key[key] = w
        return w

    def write(self, interface: str, outcome: str, target: str | None, data: bytes, ts_ns: int) -> None:
        self.writer(interface, outcome, target).write(data, min(max(ts_ns, 0), MAX_TS_NS))

    def trace(self, lines: list[str]) -> None:
        """bpf_trace_printk output, one line each, in packet order."""
        for line in lines:
            self._trace.write(line if line.endswith("\n") else line + "\n")

    def log_packet(self, record: dict[str, Any]) -> None:
        """--log: one JSON line per packet."""
        if self._log is None:
            self._log = open(self.out / "packets.jsonl", "w")  # noqa: SIM115 - closed in close()
        self._log.write(json.dumps(record, separators=(",", ":")) + "\n")

    def event(self, record: dict[str, Any]) -> None:
        """Ring buffer and perf event records, as JSON lines."""
        if self._events is None:
            self._events = open(self.out / "events.jsonl", "w")  # noqa: SIM115 - closed in close()
        self._events.write(json.dumps(record, separators=(",", ":")) + "\n")

    def write_json(self, name: str, obj: Any) -> None:
        (self.out / name).write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")

    def write_text(self, name: str, text: str) -> None:
        (self.out / name).write_text(text)

    def files(self) -> list[Path]:
        return sorted(self._writers)

    def close(self) -> None:
        for w in self._writers.values():
            w.close()
        for f in (self._log, self._events, self._trace):
            if f is not None:
                f.close()
