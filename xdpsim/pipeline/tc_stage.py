"""TC in the pipeline: each interface's tcx and clsact hooks, and where a packet goes after them.

- wire -> XDP -> PASS -> TC ingress (tcx, then clsact) -> host: outcome `pass`, reason `tc_pass`
  (pass.pcap: the packet reached the host); SHOT, STOLEN/TRAP, faults: `drop`/`error` with a reason;
- host (`host_pcap`, `Pipeline.send`) -> TC egress -> wire: outcome `tx`, reason `host_tx`, sink
  `wire-<iface>.pcap`;
- TC redirect to an interface's egress runs its TC egress (passing it, the packet leaves there:
  `redirect`, reason `tc_redirect`, sink `redirect-<iface>.pcap`); with BPF_F_INGRESS it runs the
  target's TC ingress, not its XDP; nested redirects stop after the kernel's limit of 8
  (tc_chain.XMIT_RECURSION_LIMIT): `drop`, reason `redirect_loop`; a frame leaving an egress longer
  than the interface's MTU + 18 is dropped as the link's far end does (`tc_redirect_mtu`,
  `xmit_mtu_exceeded`); redirects to an ingress check no MTU, as in the kernel;
- bpf_clone_redirect: each copy is a packet of its own (`Decision.clones`, counted in stats `clones`),
  run at its target as a redirect would be, its depth counting towards the same limit;
- XDP_TX and XDP_REDIRECT leave through the XDP transmit path: no TC egress runs on them.

The skb metadata (mark, priority, cb, tc_index, the VLAN offload tag, ...) travels with the packet
through every stage; a VLAN tag in the offload metadata is put back into the bytes written to a sink.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import XdpsimError
from ..helpers.skbuff import Clone, SkbState
from ..hooks.tc import TcAction, host_skb, wire_skb
from .broadcast import frame_limit
from .config import InterfaceSpec, PipelineError
from .dispatcher import choose_tc_program
from .routing import Decision
from .tc_chain import RECURSION_OUTCOME, XMIT_RECURSION_LIMIT, FilterList, StageResult, follow_redirects

if TYPE_CHECKING:
    from ..spec import ObjectSpec
    from .pipeline import Interface, Pipeline
    from .replay import Replay

ETH_HLEN = 14


@dataclass(frozen=True)
class TcProg:
    """One attached TC program: its object, name and runtime id (None on the kernel backend)."""

    object: str
    program: str
    prog_id: int | None = None

    def __str__(self) -> str:
        return self.program


@dataclass
class TcHooks:
    """An interface's TC attachments: tcx programs (in order) and clsact filters, per direction."""

    tcx_ingress: list[TcProg] = field(default_factory=list)
    ingress: FilterList = field(default_factory=FilterList)
    tcx_egress: list[TcProg] = field(default_factory=list)
    egress: FilterList = field(default_factory=FilterList)

    def has(self, where: str) -> bool:
        tcx = self.tcx_ingress if where == "ingress" else self.tcx_egress
        return bool(tcx) or bool(len(self.ingress if where == "ingress" else self.egress))

    def __bool__(self) -> bool:
        return self.has("ingress") or self.has("egress")


def build_hooks(ispec: InterfaceSpec, objects: dict[str, ObjectSpec], prog_id: Any,
                targets: set[str]) -> TcHooks:
    """The hooks of one interface spec; `prog_id(path, name)` gives a runtime id (or None)."""
    hooks = TcHooks()
    for key in ("tcx_ingress", "tc_ingress", "tcx_egress", "tc_egress"):
        for ref in getattr(ispec, key):
            path = str(ref.object)
            name = choose_tc_program(objects[path], ref.program, key, targets)
            prog = TcProg(path, name, prog_id(path, name))
            if key.startswith("tcx"):
                getattr(hooks, key).append(prog)
                continue
            fl = hooks.ingress if key == "tc_ingress" else hooks.egress
            try:
                fl.add(prog, priority=ref.priority, handle=ref.handle, protocol=ref.protocol, name=name)
            except XdpsimError as e:
                raise PipelineError(f"interface {ispec.name} {key} {name}: {e}") from e
    return hooks


def mac_bytes(mac: str | None) -> bytes:
    return bytes.fromhex(mac.replace(":", "")) if mac else bytes(6)


def with_vlan(data: bytes, st: SkbState) -> bytes:
    """The bytes on a wire or in a capture: an offload VLAN tag goes back in after the MAC addresses
    (what validate_xmit_vlan does for a device without VLAN offload, and what tcpdump shows)."""
    if not st.vlan_present or len(data) < 12:
        return data
    tag = (st.vlan_proto & 0xFFFF).to_bytes(2, "little")  # a __be16 as stored: little-endian is wire order
    return data[:12] + tag + (st.vlan_tci & 0xFFFF).to_bytes(2, "big") + data[12:]


class TcFlow:
    """The TC part of a Pipeline: runs stages and follows redirects and clones to a Decision."""

    def __init__(self, pipeline: Pipeline):
        self.p = pipeline
        self.limit = XMIT_RECURSION_LIMIT

    # ------------------------------------------------------------------ entry points

    def after_xdp(self, iface: Interface, d: Decision, now_ns: int, cpu: int) -> Decision:
        """A wire packet's XDP decision (pass or not) continued through TC ingress when it passed."""
        if d.outcome != "pass" or not iface.tc.has("ingress"):
            if iface.chain:
                d.stages.insert(0, ("xdp", d.outcome))
            return d
        data, st = wire_skb(d.data, iface.ifindex, dev_addr=mac_bytes(iface.spec.mac))
        meta = d.result.meta if d.result is not None else b""  # TC sees XDP's metadata as data_meta
        t = self.walk(iface, "ingress", data, meta, st, "wire", now_ns, cpu, 0)
        if iface.chain:
            t.stages.insert(0, ("xdp", d.outcome))
        t.ran = d.ran + t.ran
        if d.result is not None:
            t.result = merged([d.result], t.result) if t.result is not None else d.result
        return t

    def send(self, iface: Interface, data: bytes, now_ns: int) -> Decision:
        """A frame the host sends out of `iface`: TC egress, then the wire."""
        if len(data) < ETH_HLEN:
            return Decision("drop", "frame_too_short", data)
        data, st = host_skb(data, iface.ifindex)
        return self.walk(iface, "egress", data, b"", st, "host", now_ns, 0, 0)

    # ------------------------------------------------------------------ stages and redirects

    def stage(self, iface: Interface, where: str, data: bytes, meta: bytes, skb: SkbState, now_ns: int,
              cpu: int) -> StageResult:
        from .tc_chain import run_stage

        backend = self.p.backend
        dev = mac_bytes(iface.spec.mac)

        def runner(prog: TcProg, data: bytes, meta: bytes, skb: SkbState) -> Any:
            return backend.run_tc(prog.object, prog.program, data, meta, skb, now_ns=now_ns, cpu=cpu,
                                  prog_id=prog.prog_id, dev_addr=dev)

        h = iface.tc
        if where == "ingress":
            return run_stage(runner, data, meta, skb, tcx=h.tcx_ingress, filters=h.ingress)
        return run_stage(runner, data, meta, skb, tcx=h.tcx_egress, filters=h.egress)

    def walk(self, iface: Interface, where: str, data: bytes, meta: bytes, skb: SkbState, origin: str,
             now_ns: int, cpu: int, depth: int) -> Decision:
        """Run `where` at `iface`, follow the redirects, and decide; clones become Decisions of their own.
        `origin`: "wire", "host" or "clone"; `depth`: redirects already behind this packet."""
        stages: list[tuple[str, str]] = []
        copies: list[tuple[Clone, int]] = []
        ran: list[str] = []
        results: list[Any] = []
        failed: list[int] = []
        at = [iface, where]

        def record(res: StageResult, w: str, hops: int) -> StageResult:
            if res.runs:
                stages.append((f"tc_{w}", res.verdict))
                ran.extend(str(prog) for prog, _ in res.runs)
                results.extend(r for _, r in res.runs)
            copies.extend((c, depth + hops + 1) for c in res.clones)
            return res

        first = record(self.stage(iface, where, data, meta, skb, now_ns, cpu), where, 0)
        hops = [0]

        def run_at(ifindex: int, w: str, prev: StageResult) -> StageResult:
            hops[0] += 1
            target = self.p.by_ifindex.get(ifindex)
            if target is None:
                failed.append(ifindex)
                return StageResult("drop", int(TcAction.TC_ACT_SHOT), "none", prev.data, prev.meta, prev.skb)
            at[:] = [target, w]
            data, st = moved(prev.data, prev.skb, target, w)
            return record(self.stage(target, w, data, b"", st, now_ns, cpu), w, hops[0])

        walk = follow_redirects(first, run_at, limit=max(self.limit - depth, 0))
        d = self.decide(walk.result, walk.outcome, walk.hops, failed, at[0], at[1], origin)
        d.stages, d.ran = stages, ran
        if d.result is not None:
            d.result = merged(results[:-1], d.result)
        for c, cdepth in copies:
            d.clones.append(self.clone(c, now_ns, cpu, cdepth))
        return d

    def clone(self, c: Clone, now_ns: int, cpu: int, depth: int) -> Decision:
        """A bpf_clone_redirect copy, run at its target (the helper accepted only pipeline ifindexes)."""
        target = self.p.by_ifindex[c.ifindex]
        where = "ingress" if c.ingress else "egress"
        if depth > self.limit:
            d = Decision("drop", "redirect_loop", c.data, error=f"clone to {target.name} {where}: "
                         f"more than {self.limit} nested redirects (the kernel's recursion limit)")
        else:
            data, st = moved(c.data, c.meta["state"], target, where)
            d = self.walk(target, where, data, bytes(c.meta.get("meta", b"")) if not c.ingress else b"",
                          st, "clone", now_ns, cpu, depth)
        d.interface = target.name
        return d

    def decide(self, res: StageResult, outcome: str, hops: int, failed: list[int], iface: Interface,
               where: str, origin: str) -> Decision:
        data = with_vlan(res.data, res.skb)
        program = str(res.runs[-1][0]) if res.runs else ""
        result = res.runs[-1][1] if res.runs else None

        def dec(outcome: str, reason: str, target: str | None = None, error: str | None = None) -> Decision:
            return Decision(outcome, reason, data, target=target, program=program, error=error,
                            result=result)  # type: ignore[arg-type] - a TcResult has the fields used

        if outcome == RECURSION_OUTCOME:
            return dec("drop", "redirect_loop", error=f"stopped after {hops} TC redirects (the kernel "
                       f"bounds nested redirects at {XMIT_RECURSION_LIMIT})")
        if failed:
            return dec("drop", "tc_redirect_failed", error=f"TC redirect to ifindex {failed[0]}, which is "
                       "not an interface of the pipeline")
        if res.error is not None:
            refused = res.error.kind == "frame"  # only the kernel backend's test run gives these
            return dec("error", "test_run_refused" if refused else "program_fault", error=str(res.error))
        v = res.verdict
        if v == "drop":
            return dec("drop", "tc_redirect_no_target" if res.code == TcAction.TC_ACT_REDIRECT else "tc_shot")
        if v == "stolen":
            return dec("drop", "tc_stolen")
        if v == "redirect":
            kind = res.redirect.kind
            if kind == "unknown":  # the kernel engine could not tell; its notes say why
                why = next((n for n in getattr(result, "notes", []) if n.startswith("redirect target")), None)
                return dec("redirect", "target_unknown", error=why)
            return dec("drop", f"tc_redirect_{kind}", error=f"bpf_redirect_{kind} to ifindex "
                       f"{res.redirect.index}: not modelled by the pipeline (no veth peers or neighbours)")
        if where == "ingress":
            return dec("pass", "tc_pass")
        if origin == "host" and hops == 0:
            return dec("tx", "host_tx", target=iface.name)
        too_long = xmit_mtu_exceeded(len(res.data), iface, origin)
        if too_long is not None:
            return dec("drop", "tc_redirect_mtu", error=too_long)
        return dec("redirect", "tc_clone" if origin == "clone" else "tc_redirect", target=iface.name)


def xmit_mtu_exceeded(length: int, out: Interface, origin: str) -> str | None:
    """Why a TC-redirected frame of `length` bytes (skb->len: an offload VLAN tag not counted) does not
    leave through `out`'s egress, or None. The kernel's redirect code (__bpf_tx_skb -> dev_queue_xmit)
    checks no MTU; the device's transmit does: veth_xmit hands the skb to its peer through
    __dev_forward_skb, whose is_skb_forwardable drops it when longer than the peer's MTU + 14 + 4
    (GSO skbs excepted; xdpsim's frames are not GSO). A pipeline interface stands for such a link whose
    far end has the interface's `mtu`. Redirects to an ingress (BPF_F_INGRESS: __bpf_rx_skb forwards
    with check_mtu false) and bpf_redirect_peer check no MTU at all, so they never come here. Asked of
    the kernel on veths: tests/test_tc_redirect_mtu_kernel.py."""
    limit = frame_limit(out.spec.mtu)
    if length <= limit:
        return None
    what = "bpf_clone_redirect copy" if origin == "clone" else "TC redirect"
    return (f"{what} of a {length}-byte frame out of {out.name}: over its MTU {out.spec.mtu} (at most "
            f"{limit} bytes: MTU + 14 + 4; the link's receiving end, is_skb_forwardable, drops it)")


def merged(before: list[Any], last: Any) -> Any:
    """`last` (the deciding run's result) carrying the helper counts, tail calls and trace lines of
    every run of the packet before it, which is what the replay's statistics read."""
    if not before:
        return last
    counts: dict[str, int] = {}
    for r in [*before, last]:
        for name, n in r.helper_counts.items():
            counts[name] = counts.get(name, 0) + n
    last.helper_counts = counts
    last.tail_calls = sum(r.tail_calls for r in before) + last.tail_calls
    last.trace = [line for r in before for line in r.trace] + list(last.trace)
    return last


def moved(data: bytes, skb: SkbState, target: Interface, where: str) -> tuple[bytes, SkbState]:
    """The packet as it arrives at `target`'s `where` hook after a redirect: same metadata (same
    namespace: skb_scrub_packet keeps the mark), the new device; at ingress eth_type_trans and VLAN
    untagging run again (dev_forward_skb, __netif_receive_skb_core)."""
    st = skb.copy()
    st.ifindex = target.ifindex
    if where == "egress":
        return data, st
    data = with_vlan(data, st)
    data, fresh = wire_skb(data, target.ifindex, dev_addr=mac_bytes(target.spec.mac))
    st.ingress_ifindex, st.protocol, st.pkt_type = fresh.ingress_ifindex, fresh.protocol, fresh.pkt_type
    st.vlan_present, st.vlan_proto, st.vlan_tci = fresh.vlan_present, fresh.vlan_proto, fresh.vlan_tci
    return data, st


# ---------------------------------------------------------------------- accounting (replay.py calls these)


def account_extra(replay: Replay, d: Decision, ts: int) -> None:
    """Per-stage counts of a decision and its clones, each clone a packet of its own."""
    st = replay.stats
    for stage, verdict in d.stages:
        st.stages[stage][verdict] += 1
    for c in d.clones:
        st.clones += 1
        st.decision(c, c.interface)
        replay.sinks.write(c.interface or "", c.outcome, c.target, c.data, ts)
        account_extra(replay, c, ts)


def feed_hosts(replay: Replay) -> None:
    """Every interface's `host_pcap`: packets sent by the host out of that interface."""
    for iface in replay.p.interfaces:
        if iface.spec.host_pcap is not None:
            feed_host(replay, iface, str(iface.spec.host_pcap))


def feed_host(replay: Replay, iface: Interface, path: str) -> None:
    """Send each frame of capture `path` out of `iface` (TC egress, then the wire); one outcome each."""
    from ..io import read_batches
    from .pipeline import copy_records

    st = replay.stats
    reader = read_batches(path, 4096)
    n = 0
    for b in reader:
        times = replay.clock.times(b.ts_ns)
        for i in range(len(b)):
            data = b.packet(i)
            ts = int(b.ts_ns[i])
            d = replay.p.send(iface, data, int(times[i]))
            n += 1
            st.decision(d, iface.name)
            replay.sinks.write(iface.name, d.outcome, d.target, d.data, ts)
            account_extra(replay, d, ts)
            if replay.log:
                replay.sinks.log_packet({"host": True, "index": b.index + i, "interface": iface.name,
                                         "outcome": d.outcome, "reason": d.reason, "program": d.program,
                                         "length": len(d.data), "target": d.target, "error": d.error})
                for rec in copy_records(d, b.index + i):
                    replay.sinks.log_packet({"host": True, **rec})
    if reader.skipped:
        st.count("error", "damaged_record", iface.name, n=reader.skipped)
    st.capture.setdefault("host", {})[iface.name] = {"path": path, "packets": n, "skipped": reader.skipped}
