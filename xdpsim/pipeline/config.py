"""The pipeline file (TOML) and the `prog.o[:NAME]` shorthand, parsed into plain data.

```toml
[[interface]]
name = "eth0"                  # ifindex 1, 2, ... in order unless `ifindex` is given
queues = 4                     # rx queues (one simulated CPU each); default 1 or --queues
xdp = [{ object = "fw.o", program = "fw_main", priority = 10, chain_call_actions = ["pass"] }]
capture_interface = 0          # which pcapng interface id feeds it (default: its position)
tcx_ingress = [{ object = "tc.o", program = "guard" }]        # tcx programs, in this order, before clsact
tc_ingress = [{ object = "tc.o", program = "classify", priority = 1, handle = 1, protocol = "ip" }]
tc_egress = ["tc.o:mark_egress"]   # clsact filters; priority/handle: the kernel's automatic ones
tcx_egress = []
host_pcap = "sent.pcap"        # packets the host sends out of this interface (through TC egress)

[[map_entries]]                # initial map contents, raw bytes in hex
map = "blocklist"              # a map of an object above, or "fw.o:blocklist"
key = "0a000001"
value = "01000000"             # or: program = "parse_tcp" for a prog array slot
                               # devmap/cpumap: value = ifindex (qsize) and program = its xdp/devmap program

[[route]]                      # for bpf_fib_lookup
prefix = "10.1.0.0/16"
interface = "eth1"
gateway = "10.0.0.254"         # optional
[[neighbour]]
address = "10.0.0.254"
mac = "02:00:00:00:00:fe"
interface = "eth1"
```

Paths inside the file are relative to the file. Nothing here loads objects: that is the pipeline's job.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import XdpsimError

XDP_ACTION_NAMES = ["aborted", "drop", "pass", "tx", "redirect"]
DEFAULT_PRIORITY = 50
DEFAULT_CHAIN_CALL_ACTIONS = ("pass",)


class PipelineError(XdpsimError):
    """A pipeline file or SPEC that cannot be used; says which key and why."""


@dataclass
class ProgramRef:
    object: Path
    program: str | None  # None: the object's only XDP entry program
    priority: int | None = None  # None: from the object's XDP_RUN_CONFIG, else 50
    chain_call_actions: list[str] | None = None  # None: from XDP_RUN_CONFIG, else ["pass"]


#: protocol names of a TC filter (`tc filter add ... protocol NAME`), host order
TC_PROTOCOLS = {"all": 0x0003, "ip": 0x0800, "ipv4": 0x0800, "ipv6": 0x86DD, "arp": 0x0806,
                "802.1q": 0x8100, "802.1ad": 0x88A8}
TC_KEYS = ("tcx_ingress", "tc_ingress", "tcx_egress", "tc_egress")


@dataclass
class TcRef:
    """One TC program of an interface: a clsact filter (priority, handle, protocol; None: the kernel's
    automatic priority and handle) or, under a tcx_* key, a tcx program (run in the listed order)."""

    object: Path
    program: str | None  # None: the object's only TC entry program
    priority: int | None = None
    handle: int | None = None
    protocol: int = 0x0003  # ETH_P_ALL


@dataclass
class InterfaceSpec:
    name: str
    ifindex: int
    queues: int = 1
    xdp: list[ProgramRef] = field(default_factory=list)
    capture_interface: int | None = None
    tap: str | None = None  # live mode
    device: str | None = None  # live mode (AF_PACKET)
    mac: str | None = None
    mtu: int = 1500
    tcx_ingress: list[TcRef] = field(default_factory=list)
    tc_ingress: list[TcRef] = field(default_factory=list)
    tcx_egress: list[TcRef] = field(default_factory=list)
    tc_egress: list[TcRef] = field(default_factory=list)
    host_pcap: Path | None = None  # a capture "sent by the host" out of this interface

    def tc_refs(self) -> list[TcRef]:
        return [r for key in TC_KEYS for r in getattr(self, key)]


@dataclass
class MapEntry:
    map: str  # "name" or "object.o:name"
    key: bytes
    value: bytes | None = None
    program: str | None = None  # prog arrays: the program to put in the slot
    cpu: int | None = None  # per-CPU maps: one CPU's value (default: all CPUs)


@dataclass
class Route:
    prefix: ipaddress.IPv4Network | ipaddress.IPv6Network
    interface: str
    gateway: str | None = None


@dataclass
class Neighbour:
    address: str
    mac: str
    interface: str


@dataclass
class PipelineSpec:
    interfaces: list[InterfaceSpec]
    map_entries: list[MapEntry] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    neighbours: list[Neighbour] = field(default_factory=list)
    source: str = ""  # the file or SPEC it came from

    def interface(self, name: str) -> InterfaceSpec:
        for i in self.interfaces:
            if i.name == name:
                return i
        raise PipelineError(f"no interface named {name!r}")

    def objects(self) -> list[Path]:
        seen: list[Path] = []
        for iface in self.interfaces:
            for ref in [*iface.xdp, *iface.tc_refs()]:
                if ref.object not in seen:
                    seen.append(ref.object)
        return seen


def _hex(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise PipelineError(f"{where}: expected a hex string, got {value!r}")
    text = value.replace(" ", "").replace(":", "")
    if text.startswith("0x"):
        text = text[2:]
    try:
        return bytes.fromhex(text)
    except ValueError as e:
        raise PipelineError(f"{where}: {value!r} is not hex bytes") from e


def _actions(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise PipelineError(f"{where}: chain_call_actions must be a list of action names")
    out = []
    for a in value:
        name = a.lower().removeprefix("xdp_")
        if name not in XDP_ACTION_NAMES:
            raise PipelineError(f"{where}: unknown XDP action {a!r} (known: {', '.join(XDP_ACTION_NAMES)})")
        out.append(name)
    return out


def _program_ref(entry: object, base: Path, where: str) -> ProgramRef:
    if isinstance(entry, str):
        entry = {"object": entry}
    if not isinstance(entry, dict) or "object" not in entry:
        raise PipelineError(f"{where}: each XDP entry needs `object` (and usually `program`)")
    unknown = set(entry) - {"object", "program", "priority", "chain_call_actions"}
    if unknown:
        raise PipelineError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    obj = entry["object"]
    program = None
    if ":" in obj and "program" not in entry:
        obj, program = obj.rsplit(":", 1)
    program = entry.get("program", program)
    prio = entry.get("priority")
    if prio is not None and not isinstance(prio, int):
        raise PipelineError(f"{where}: priority must be an integer")
    cca = entry.get("chain_call_actions")
    return ProgramRef(
        object=(base / obj).resolve(),
        program=program,
        priority=prio,
        chain_call_actions=_actions(cca, where) if cca is not None else None,
    )


def _protocol(value: object, where: str) -> int:
    if isinstance(value, int) and 0 <= value <= 0xFFFF:
        return value
    if isinstance(value, str):
        name = value.lower()
        if name in TC_PROTOCOLS:
            return TC_PROTOCOLS[name]
        try:
            n = int(name, 0)
        except ValueError:
            n = -1
        if 0 <= n <= 0xFFFF:
            return n
    raise PipelineError(f"{where}: protocol {value!r}: an ethertype (0..0xffff) or one of "
                        f"{', '.join(TC_PROTOCOLS)}")


def _tc_ref(entry: object, base: Path, where: str, tcx: bool) -> TcRef:
    if isinstance(entry, str):
        entry = {"object": entry}
    if not isinstance(entry, dict) or "object" not in entry:
        raise PipelineError(f"{where}: each TC entry needs `object` (and usually `program`)")
    allowed = {"object", "program"} if tcx else {"object", "program", "priority", "handle", "protocol"}
    unknown = set(entry) - allowed
    if unknown:
        extra = " (tcx programs run in the listed order: no priority, handle or protocol)" if tcx else ""
        raise PipelineError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}{extra}")
    obj = entry["object"]
    program = None
    if ":" in obj and "program" not in entry:
        obj, program = obj.rsplit(":", 1)
    for key, hi in (("priority", 0xFFFF), ("handle", 0xFFFF_FFFF)):
        v = entry.get(key)
        if v is not None and (not isinstance(v, int) or not 1 <= v <= hi):
            raise PipelineError(f"{where}: {key} must be an integer 1..{hi}")
    return TcRef(object=(base / obj).resolve(), program=entry.get("program", program),
                 priority=entry.get("priority"), handle=entry.get("handle"),
                 protocol=_protocol(entry.get("protocol", "all"), where))


def _tc_lists(raw: dict, base: Path, where: str) -> dict[str, list[TcRef]]:
    out = {}
    for key in TC_KEYS:
        value = raw.get(key, [])
        if isinstance(value, dict | str):
            value = [value]
        if not isinstance(value, list):
            raise PipelineError(f"{where}: {key} must be a list of programs")
        tcx = key.startswith("tcx")
        out[key] = [_tc_ref(e, base, f"{where} {key}[{i}]", tcx) for i, e in enumerate(value)]
    return out


def parse_pipeline(
    text: str, base: Path, source: str = "<pipeline>", queues: int | None = None
) -> PipelineSpec:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PipelineError(f"{source}: not valid TOML: {e}") from e
    unknown = set(doc) - {"interface", "map_entries", "route", "neighbour"}
    if unknown:
        raise PipelineError(f"{source}: unknown top-level key(s) {', '.join(sorted(unknown))}")
    ifaces_raw = doc.get("interface", [])
    if not isinstance(ifaces_raw, list) or not ifaces_raw:
        raise PipelineError(f"{source}: needs at least one [[interface]]")
    interfaces: list[InterfaceSpec] = []
    used: set[int] = set()
    for pos, raw in enumerate(ifaces_raw):
        where = f"{source}: interface #{pos + 1}"
        if "name" not in raw:
            raise PipelineError(f"{where}: needs a name")
        known = {"name", "ifindex", "queues", "xdp", "capture_interface", "tap", "device", "mac", "mtu",
                 *TC_KEYS, "host_pcap"}
        unknown = set(raw) - known
        if unknown:
            raise PipelineError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        host_pcap = raw.get("host_pcap")
        if host_pcap is not None and not isinstance(host_pcap, str):
            raise PipelineError(f"{where}: host_pcap must be a file name")
        ifindex = raw.get("ifindex")
        if ifindex is None:
            ifindex = 1
            while ifindex in used:
                ifindex += 1
        if not isinstance(ifindex, int) or ifindex < 1 or ifindex in used:
            raise PipelineError(f"{where}: ifindex {ifindex!r} is invalid or already used")
        used.add(ifindex)
        xdp = raw.get("xdp", [])
        if isinstance(xdp, dict | str):
            xdp = [xdp]
        interfaces.append(
            InterfaceSpec(
                name=raw["name"],
                ifindex=ifindex,
                queues=int(raw.get("queues", queues or 1)),
                xdp=[_program_ref(e, base, f"{where} xdp[{i}]") for i, e in enumerate(xdp)],
                capture_interface=raw.get("capture_interface"),
                tap=raw.get("tap"),
                device=raw.get("device"),
                mac=raw.get("mac"),
                mtu=int(raw.get("mtu", 1500)),
                host_pcap=(base / host_pcap).resolve() if host_pcap else None,
                **_tc_lists(raw, base, where),
            )
        )
    names = [i.name for i in interfaces]
    if len(set(names)) != len(names):
        raise PipelineError(f"{source}: interface names must be unique")
    entries = []
    for pos, raw in enumerate(doc.get("map_entries", [])):
        where = f"{source}: map_entries #{pos + 1}"
        if "map" not in raw or "key" not in raw:
            raise PipelineError(f"{where}: needs `map` and `key`")
        if "value" not in raw and "program" not in raw:
            raise PipelineError(f"{where}: needs `value` or `program` (both: a devmap/cpumap entry's "
                                "ifindex or queue size and its program)")
        m = raw["map"]
        if ":" in m:
            obj, name = m.rsplit(":", 1)
            m = f"{(base / obj).resolve()}:{name}"
        entries.append(
            MapEntry(
                map=m,
                key=_hex(raw["key"], f"{where} key"),
                value=_hex(raw["value"], f"{where} value") if "value" in raw else None,
                program=raw.get("program"),
                cpu=raw.get("cpu"),
            )
        )
    routes = []
    for pos, raw in enumerate(doc.get("route", [])):
        where = f"{source}: route #{pos + 1}"
        try:
            prefix = ipaddress.ip_network(raw["prefix"], strict=False)
        except (KeyError, ValueError) as e:
            raise PipelineError(f"{where}: needs a valid `prefix`") from e
        if raw.get("interface") not in names:
            raise PipelineError(f"{where}: `interface` must name one of {names}")
        routes.append(Route(prefix, raw["interface"], raw.get("gateway")))
    neighbours = []
    for pos, raw in enumerate(doc.get("neighbour", [])):
        where = f"{source}: neighbour #{pos + 1}"
        if not {"address", "mac", "interface"} <= set(raw):
            raise PipelineError(f"{where}: needs `address`, `mac` and `interface`")
        neighbours.append(Neighbour(raw["address"], raw["mac"], raw["interface"]))
    return PipelineSpec(interfaces, entries, routes, neighbours, source=source)


def parse_spec(spec: str, queues: int | None = None) -> PipelineSpec:
    """SPEC is a pipeline file (.toml) or `object.o[:PROGRAM]` (one interface, eth0)."""
    if spec.endswith(".toml"):
        path = Path(spec)
        try:
            text = path.read_text()
        except OSError as e:
            raise PipelineError(f"cannot read pipeline file {spec}: {e.strerror}") from e
        return parse_pipeline(text, path.parent, source=spec, queues=queues)
    obj, program = spec, None
    if ":" in spec and not Path(spec).exists():
        obj, program = spec.rsplit(":", 1)
    path = Path(obj)
    if not path.exists():
        raise PipelineError(f"{obj}: no such file")
    iface = InterfaceSpec(name="eth0", ifindex=1, queues=queues or 1,
                          xdp=[ProgramRef(object=path.resolve(), program=program)])
    return PipelineSpec([iface], source=spec)
