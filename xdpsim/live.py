"""`xdpsim live`: the pipeline in the path of real packets, on TAP devices or existing interfaces.

Each pipeline interface is bound to a "wire" endpoint (a tap: frames the kernel sends into it are what
arrives from the wire, and TX/redirected frames are written back into it; or an AF_PACKET socket on an
existing interface, which sees copies: observe and mirror, not filter) and optionally to a "host" tap
(PASS frames, and cpumap redirects, are written into it so a real host stack receives them; what that
stack sends is forwarded to the wire side). Without a host tap PASS frames are counted only.

A wire device that goes down or is deleted (rtnetlink events, or EIO/EBADFD on a read) ends that
interface's source while the others keep running; a host tap that goes away only stops PASS delivery.

Accounting: every frame read is counted once in `Stats` (`packets == sum(outcomes)`); frames the
kernel dropped because xdpsim fell behind (a tap's `tx_dropped`, an AF_PACKET socket's queue drops)
are added as outcome "drop", reason "kernel_backlog", and frames whose write failed become "drop"
with reason "<outcome>_write_failed", so nothing is lost silently.
"""

from __future__ import annotations

import argparse
import errno
import json
import select
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .io.live import GONE_ERRNOS, IFF_UP, Endpoint, LinkWatcher, LiveError, PacketSocket, RtnlQuery, TapDevice
from .pipeline.config import PipelineSpec, parse_spec
from .pipeline.stats import REASONS, Stats

BATCH = 256  # frames read from one endpoint before looking at the others
LIVE_REASONS = {
    "kernel_backlog": "the kernel dropped the frame before xdpsim read it (xdpsim fell behind)",
    "pass_write_failed": "PASS frame whose write into the host tap failed",
    "redirect_write_failed": "redirected frame (interface or cpumap) whose write failed",
    "tx_write_failed": "XDP_TX frame whose write back to the wire failed",
    "target_gone": "redirected to an interface whose device has gone",
}
# redirect reasons whose frame leaves through the wire side of the target interface
OUT_OF_INTERFACE = frozenset({"interface", "broadcast_copy", "tc_redirect", "tc_clone"})
for _reason, _why in LIVE_REASONS.items():  # live mode's own drop reasons join the pipeline's table
    REASONS["drop"].setdefault(_reason, _why)


@dataclass
class LivePort:
    """One pipeline interface and its live devices."""

    name: str
    wire: Endpoint | None
    host: TapDevice | None = None
    ended: str | None = None  # why the source ended, once it has
    dropped_base: int = 0  # the kernel's drop counter when we started
    dropped_seen: int = 0  # kernel drops already counted
    host_out: int = 0  # frames from the host tap forwarded to the wire
    host_out_failed: int = 0
    host_gone: str | None = None  # why the host tap stopped working, if it did


@dataclass
class Binding:
    """What a pipeline interface is bound to: a tap (created or attached) or an existing device."""

    kind: str  # "tap" | "device"
    name: str
    host_tap: str | None = None


def _gone_reason(name: str, e: OSError) -> str:
    """A read error that ends a source, in the words the link watcher uses (whichever comes first)."""
    if e.errno in (errno.EBADFD, errno.ENODEV, errno.ENXIO):
        return f"{name} was removed"
    if e.errno in (errno.EIO, errno.ENETDOWN):
        return f"{name} went down"
    return f"{name}: {e.strerror}"


def _kernel_dropped(q: RtnlQuery, ep: Endpoint) -> int | None:
    if isinstance(ep, TapDevice):
        st = q.stats(ep.ifindex)
        return None if st is None else st.tx_dropped
    return None


class LiveRunner:
    """Run a pipeline on live devices. `open()` binds the devices (in the calling thread's network
    namespace), `run()` loops until `stop()`, a signal, `count` frames, `duration` seconds or every
    source has ended, then returns the statistics dict (also written with maps.json into `out`)."""

    def __init__(self, spec: PipelineSpec, bindings: dict[str, Binding], *, engine: str = "jit",
                 out: Path | None = None, seed: int = 0, budget: int | None = None,
                 count: int | None = None, duration: float | None = None, status: bool = False,
                 messages=None):
        bindings = {**bindings_from_args(spec, [], [], []), **bindings}  # the file's tap/device keys
        missing = [i.name for i in spec.interfaces if i.name not in bindings]
        if missing:
            raise LiveError(f"interface(s) {', '.join(missing)} not bound to a device: give --tap or "
                            f"--iface, or `tap =`/`device =` in the pipeline file")
        self.spec = spec
        self.bindings = bindings
        from .live_chain import make_processor  # heavy (loader, engines): not at CLI start

        self.chains, engine_name = make_processor(spec, engine, seed=seed, budget=budget)
        self.stats = Stats(engine=engine_name)
        self.out = Path(out) if out else None
        self.count = count
        self.duration = duration
        self.status = status
        self.messages: list[str] = []
        self._say = messages or (lambda m: print(f"xdpsim live: {m}", file=sys.stderr))
        self.ports: dict[str, LivePort] = {}
        self._stop = threading.Event()
        self._stop_reason = ""
        self._sinks = None
        self._watch: LinkWatcher | None = None
        self._rtnl: RtnlQuery | None = None
        self.write_errors: Counter = Counter()

    # --- setup -------------------------------------------------------------------------------------

    def open(self) -> LiveRunner:
        try:
            self._watch = LinkWatcher()
            self._rtnl = RtnlQuery()
            for iface in self.spec.interfaces:
                b = self.bindings[iface.name]
                wire: Endpoint = TapDevice(b.name) if b.kind == "tap" else PacketSocket(b.name)
                port = self.ports[iface.name] = LivePort(iface.name, wire)
                if b.host_tap:
                    port.host = TapDevice(b.host_tap)
                port.dropped_base = _kernel_dropped(self._rtnl, wire) or 0
            self._watch.events()  # what happened while we set the devices up is not news
        except BaseException:
            self.close()
            raise
        if self.out is not None:
            from .pipeline.sinks import Sinks

            self._sinks = Sinks(self.out, per_interface=len(self.ports) > 1)
        return self

    def stop(self, reason: str = "stopped") -> None:
        """Ask the loop to finish (thread- and signal-safe)."""
        if not self._stop.is_set():
            self._stop_reason = reason
        self._stop.set()

    # --- the loop ----------------------------------------------------------------------------------

    def run(self) -> dict:
        if not self.ports:
            self.open()
        poller = select.poll()
        fds: dict[int, tuple[LivePort, str]] = {}
        for port in self.ports.values():
            for role, ep in (("wire", port.wire), ("host", port.host)):
                if ep is not None:
                    fds[ep.fileno()] = (port, role)
                    poller.register(ep.fileno(), select.POLLIN)
        assert self._watch is not None
        poller.register(self._watch.fileno(), select.POLLIN)
        start = time.monotonic()
        deadline = start + self.duration if self.duration is not None else None
        display = self._status_display()
        next_status = start
        try:
            while not self._stop.is_set():
                timeout = 100
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self.stop(f"--duration {self.duration:g}s reached")
                        break
                    timeout = max(1, min(timeout, int(left * 1000) + 1))
                for fd, _ev in poller.poll(timeout):
                    if fd == self._watch.fileno():
                        self._link_events(poller)
                        continue
                    entry = fds.get(fd)
                    if entry is None:
                        continue
                    port, role = entry
                    if port.ended is None:
                        self._drain(port, role, poller)
                    if self._stop.is_set():
                        break
                if all(p.ended for p in self.ports.values()):
                    self.stop("every source has ended")
                now = time.monotonic()
                if now >= next_status:  # the kernel's drop counters feed the status line as they grow
                    next_status = now + 0.5
                    self._account_kernel_drops()
                    if display is not None:
                        display.update(self._status_text(now - start))
        finally:
            self.stats.seconds = time.monotonic() - start
            self._account_kernel_drops()
            if display is not None:
                display.update(self._status_text(self.stats.seconds))
                display.stop()
        if self._stop_reason:
            self._say(self._stop_reason)
        return self.finish()

    def _drain(self, port: LivePort, role: str, poller: select.poll) -> None:
        """Read what is waiting (at most BATCH frames, or what --count still allows), then run the
        wire frames through the pipeline together."""
        ep = port.wire if role == "wire" else port.host
        assert ep is not None
        limit = BATCH if self.count is None else max(0, min(BATCH, self.count - self.stats.packets))
        frames: list[bytes] = []
        gone: OSError | None = None
        while len(frames) < limit:
            try:
                frame = ep.recv()
            except OSError as e:
                if e.errno not in GONE_ERRNOS:
                    raise LiveError(f"reading {ep.name}: {e.strerror}") from e
                gone = e
                break
            if frame is None:
                break
            if role == "host":
                self._host_out(port, frame)
            else:
                frames.append(frame)
        if frames:
            ts = time.time_ns()
            for v in self.chains.process_batch(port.name, frames, time.monotonic_ns(), self.stats):
                self._deliver(port, v, ts)
        if gone is not None and role == "host":
            self._host_gone(port, _gone_reason(ep.name, gone), poller)
        elif gone is not None:
            self._end(port, _gone_reason(ep.name, gone), poller)
        if self.count is not None and self.stats.packets >= self.count:
            self.stop(f"--count {self.count} reached")

    def _deliver(self, port: LivePort, v, ts: int) -> None:
        """Write one verdict's frame where it goes (wire, redirect target, host tap) and to --out; then
        its copies (broadcast, bpf_clone_redirect), each where it goes."""
        self._deliver_one(port, v, ts)
        for c in v.clones:
            self._deliver(port, c, ts)

    def _deliver_one(self, port: LivePort, v, ts: int) -> None:
        dest: Endpoint | None = None
        counted = v.interface or port.name  # a copy is counted where it ended (see live_chain)
        if v.outcome == "tx":
            dest = port.wire
        elif v.outcome == "redirect" and v.reason in OUT_OF_INTERFACE and v.target in self.ports:
            tport = self.ports[v.target]
            if tport.ended is not None:
                self._recount(v.outcome, v.reason, counted, "target_gone")
                return
            dest = tport.wire
        elif v.outcome == "pass" or (v.outcome == "redirect" and v.reason == "cpu"):
            dest = port.host  # a cpumap redirect ends in the host stack too (on that CPU)
        if dest is not None:
            try:
                dest.send(v.data)
            except OSError as e:
                self.write_errors[f"{dest.name}: {e.strerror}"] += 1
                self._recount(v.outcome, v.reason, counted, f"{v.outcome}_write_failed")
                return
        if self._sinks is not None:
            self._sinks.write(counted, v.outcome, v.target, v.data, ts)

    def _recount(self, outcome: str, reason: str, iface: str, new_reason: str) -> None:
        """Move one counted frame from `outcome` to drop (its write failed): the invariant holds."""
        s = self.stats
        s.packets -= 1
        s.outcomes[outcome] -= 1
        s.reasons[outcome][reason] -= 1
        s.interfaces[iface][outcome] -= 1
        s.count("drop", new_reason, iface)

    def _host_out(self, port: LivePort, frame: bytes) -> None:
        """The host stack transmitted on the host tap: that goes out of the wire side."""
        if port.wire is None or port.ended is not None:
            port.host_out_failed += 1
            return
        try:
            port.wire.send(frame)
            port.host_out += 1
        except OSError as e:
            self.write_errors[f"{port.wire.name}: {e.strerror}"] += 1
            port.host_out_failed += 1

    def _end(self, port: LivePort, why: str, poller: select.poll | None) -> None:
        if port.ended is not None:
            return
        self._account_kernel_drops(port)
        port.ended = why
        msg = f"interface {port.name}: source ended ({why})"
        self.messages.append(msg)
        self._say(msg)
        for ep in (port.wire, port.host):
            if ep is not None and poller is not None:
                try:
                    poller.unregister(ep.fileno())
                except (KeyError, ValueError, OSError):
                    pass

    def _link_events(self, poller: select.poll) -> None:
        assert self._watch is not None and self._rtnl is not None
        for ev in self._watch.events():
            for port in self.ports.values():
                for role, ep in (("wire", port.wire), ("host", port.host)):
                    if ep is None or (ev.ifindex and ev.ifindex != ep.ifindex) or port.ended is not None:
                        continue
                    if role == "host" and port.host_gone is not None:
                        continue
                    # Events can be stale (queued before the device came up): ask for the state now.
                    now = self._rtnl.stats(ep.ifindex)
                    why = (f"{ep.name} was removed" if now is None
                           else f"{ep.name} went down" if not now.flags & IFF_UP else None)
                    if why is None:
                        continue
                    if role == "wire":
                        self._end(port, why, poller)
                    else:
                        self._host_gone(port, why, poller)

    def _host_gone(self, port: LivePort, why: str, poller: select.poll | None) -> None:
        """The host tap is down or gone: the wire side keeps running; PASS frames whose write then
        fails are counted as drops (pass_write_failed)."""
        if port.host_gone is not None:
            return
        port.host_gone = why
        msg = f"interface {port.name}: host side unavailable ({why}); PASS frames are dropped and counted"
        self.messages.append(msg)
        self._say(msg)
        if port.host is not None and poller is not None:
            try:
                poller.unregister(port.host.fileno())
            except (KeyError, ValueError, OSError):
                pass

    def _account_kernel_drops(self, only: LivePort | None = None) -> None:
        """Frames the kernel dropped because we were behind: counted as drops, never lost silently."""
        if self._rtnl is None:
            return
        for port in [only] if only is not None else list(self.ports.values()):
            if port.ended is not None or port.wire is None:
                continue
            n = port.wire.socket_drops()
            cur = _kernel_dropped(self._rtnl, port.wire)
            if cur is not None:
                n += max(0, cur - port.dropped_base - port.dropped_seen)
                port.dropped_seen = max(port.dropped_seen, cur - port.dropped_base)
            for _ in range(n):
                self.stats.count("drop", "kernel_backlog", port.name)

    # --- output ------------------------------------------------------------------------------------

    def _status_display(self):
        if not self.status:
            return None
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        live = Live(console=Console(stderr=True), auto_refresh=False, transient=False)
        live.start()

        class _Display:
            def update(self, text: str) -> None:
                live.update(Text(text), refresh=True)  # plain: no number highlighting

            def stop(self) -> None:
                live.stop()

        return _Display()

    def _status_text(self, seconds: float) -> str:
        s = self.stats
        pps = s.packets / seconds if seconds > 0 else 0.0
        outs = "  ".join(f"{o} {n}" for o, n in s.outcomes.items() if n)
        own = s.reasons["drop"].get("kernel_backlog", 0) + sum(
            n for r, n in s.reasons["drop"].items() if r.endswith("_write_failed") or r == "target_gone")
        ended = [p.name for p in self.ports.values() if p.ended]
        tail = f"  [ended: {', '.join(ended)}]" if ended else ""
        return (f"{seconds:6.1f}s  {s.packets} packets  {pps:,.0f} pps  {outs or '-'}  "
                f"xdpsim drops {own}{tail}")

    def finish(self) -> dict:
        """Close the devices, write stats.json and maps.json (with --out); return the statistics."""
        stats = self.stats.to_dict()
        stats["live"] = {
            "stop": self._stop_reason,
            "ended": {p.name: p.ended for p in self.ports.values() if p.ended},
            "host_gone": {p.name: p.host_gone for p in self.ports.values() if p.host_gone},
            "host_out": {p.name: p.host_out for p in self.ports.values() if p.host is not None},
            "host_out_failed": sum(p.host_out_failed for p in self.ports.values()),
            "write_errors": dict(self.write_errors),
            "devices": {p.name: {"wire": p.wire.name if p.wire else None,
                                 "kind": p.wire.kind if p.wire else None,
                                 "host": p.host.name if p.host else None} for p in self.ports.values()},
        }
        if self._sinks is not None:
            self._sinks.write_json("stats.json", stats)
            self._sinks.write_json("maps.json", self.chains.maps_json())
            self._sinks.close()
            self._sinks = None
        self.close()
        return stats

    def close(self) -> None:
        for port in self.ports.values():
            for ep in (port.wire, port.host):
                if ep is not None:
                    ep.close()
        for h in (self._watch, self._rtnl):
            if h is not None:
                h.close()
        self._watch = self._rtnl = None
        close = getattr(self.chains, "close", None)
        if close is not None:
            close()


# --- the command -------------------------------------------------------------------------------------


def _pairs(values: list[str], spec: PipelineSpec, flag: str) -> dict[str, str]:
    """`--tap NAME` (single-interface SPEC) or `--tap IFACE=NAME`, repeatable."""
    out: dict[str, str] = {}
    for v in values or []:
        if "=" in v:
            iface, dev = v.split("=", 1)
            spec.interface(iface)  # raises naming the interface
        elif len(spec.interfaces) == 1:
            iface, dev = spec.interfaces[0].name, v
        else:
            raise LiveError(f"{flag} {v}: the pipeline has several interfaces; write {flag} IFACE={v}")
        out[iface] = dev
    return out


def bindings_from_args(spec: PipelineSpec, taps: list[str], ifaces: list[str],
                       host_taps: list[str]) -> dict[str, Binding]:
    b: dict[str, Binding] = {}
    for i in spec.interfaces:
        if i.tap:
            b[i.name] = Binding("tap", i.tap)
        elif i.device:
            b[i.name] = Binding("device", i.device)
    for iface, dev in _pairs(taps, spec, "--tap").items():
        b[iface] = Binding("tap", dev)
    for iface, dev in _pairs(ifaces, spec, "--iface").items():
        b[iface] = Binding("device", dev)
    for iface, dev in _pairs(host_taps, spec, "--host-tap").items():
        if iface not in b:
            raise LiveError(f"--host-tap for {iface}, which has no wire device")
        b[iface].host_tap = dev
    return b


def add_commands(sub: argparse._SubParsersAction):
    """Add `live` to the CLI's subparsers; returns its handler (the CLI registers it)."""
    p = sub.add_parser("live", help="run a program or pipeline on a tap device or a live interface")
    p.add_argument("spec", help="object file (prog.o or prog.o:PROGRAM) or pipeline file (.toml)")
    p.add_argument("--tap", action="append", default=[], metavar="[IFACE=]NAME",
                   help="create (or attach to) tap NAME as the wire side of IFACE")
    p.add_argument("--iface", action="append", default=[], metavar="[IFACE=]NAME",
                   help="existing interface NAME through AF_PACKET (sees copies: observes and mirrors)")
    p.add_argument("--host-tap", action="append", default=[], metavar="[IFACE=]NAME",
                   help="tap that receives IFACE's PASS frames (a host stack); default: PASS is counted")
    p.add_argument("--engine", default="jit", choices=["interp", "jit"], help="engine (default: jit)")
    p.add_argument("--out", help="directory for per-outcome pcaps, stats.json and maps.json")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--count", type=int, help="stop after this many frames")
    p.add_argument("--queues", type=int, default=None, help="rx queues (simulated CPUs) per interface")
    p.add_argument("--seed", type=int, default=0, help="seed of bpf_get_prandom_u32")
    p.add_argument("--budget", type=int, default=None, help="instruction budget per program run")
    p.add_argument("--json", action="store_true", help="print the final statistics as JSON")
    p.add_argument("--quiet", action="store_true", help="no live status line")
    return cmd_live


def cmd_live(args: argparse.Namespace) -> int:
    spec = parse_spec(args.spec, queues=args.queues)
    bindings = bindings_from_args(spec, args.tap, args.iface, args.host_tap)
    runner = LiveRunner(spec, bindings, engine=args.engine, out=Path(args.out) if args.out else None,
                        seed=args.seed, budget=args.budget, count=args.count, duration=args.duration,
                        status=not args.quiet and not args.json and sys.stderr.isatty())
    runner.open()
    old = {s: signal.signal(s, lambda n, _f: runner.stop(f"{signal.Signals(n).name}: stopping"))
           for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        stats = runner.run()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        _print_summary(stats, args.out)
    return 0


def _print_summary(stats: dict, out: str | None) -> None:
    outs = ", ".join(f"{o} {n}" for o, n in stats["outcomes"].items() if n) or "none"
    print(f"{stats['packets']} packets in {stats['seconds']:.1f}s: {outs}")
    for o, reasons in stats.get("reasons", {}).items():
        for r, n in reasons.items():
            if n:
                print(f"  {o:9} {r:24} {n}")
    for name, why in stats["live"]["ended"].items():
        print(f"  interface {name} ended: {why}")
    if out:
        print(f"written to {out}/")


__all__ = ["Binding", "LivePort", "LiveRunner", "add_commands", "bindings_from_args", "cmd_live",
           "LIVE_REASONS"]
