"""Statistics of a replay: every packet in comes out once, in exactly one outcome.

`packets == sum(outcomes.values())` is the invariant; each outcome also counts its reasons (why a
packet was dropped, aborted or ended in error), so every corner has a named bucket.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

OUTCOMES = ("pass", "tx", "redirect", "drop", "aborted", "error")

# Reasons, by outcome (the README lists them):
REASONS = {
    "pass": {
        "xdp_pass": "an XDP program returned XDP_PASS",
        "chain_end": "the last program's action was one of its chain_call_actions: off the end of the "
        "chain is XDP_PASS (libxdp's dispatcher)",
        "no_program": "the interface has no XDP program",
        "tc_pass": "reached the host after TC ingress (tcx PASS/NEXT, TC_ACT_OK, UNSPEC, ...)",
    },
    "tx": {"xdp_tx": "XDP_TX: sent back out of the interface it came in on",
           "host_tx": "sent by the host (host_pcap), passed TC egress: on the wire (wire-<iface>.pcap)"},
    "redirect": {
        "interface": "redirected out of an interface of the pipeline (bpf_redirect, devmap, devmap_hash)",
        "cpu": "redirected to a CPU through a cpumap",
        "xsk": "redirected to an AF_XDP socket through an xskmap",
        "target_unknown": "kernel engine: a redirect whose target its recording of the redirect helper calls "
        "cannot tell (the packet log's error says why)",
        "tc_redirect": "TC redirect to an interface's egress, passed its TC egress: out of that interface",
        "tc_clone": "a bpf_clone_redirect copy that passed its target's TC egress: out of that interface",
        "broadcast": "XDP broadcast (bpf_redirect_map with BPF_F_BROADCAST): sent as copies, one per "
        "device of the devmap (each copy counted as a packet of its own)",
        "broadcast_copy": "a broadcast copy out of one interface (after its devmap entry's program)",
    },
    "drop": {
        "xdp_drop": "an XDP program returned XDP_DROP",
        "redirect_failed": "XDP_REDIRECT to an ifindex that is not an interface of the pipeline "
        "(the kernel's xdp_do_redirect fails and drops it)",
        "redirect_mtu": "XDP_REDIRECT out of an interface (bpf_redirect, devmap, devmap_hash) of a frame "
        "longer than that interface's MTU + 14 + 4 bytes (the kernel's xdp_ok_fwd_dev: -EMSGSIZE, dropped)",
        "redirect_no_target": "XDP_REDIRECT without a successful bpf_redirect*() call "
        "(xdp_do_redirect fails)",
        "devmap_program": "the devmap entry's program (xdp/devmap) did not return XDP_PASS",
        "broadcast_empty": "XDP broadcast with no device to send a copy to (empty map, every entry "
        "excluded or too small an MTU): the kernel frees the frame",
        "cpumap_program": "the cpumap entry's program (xdp/cpumap) returned neither XDP_PASS nor "
        "XDP_REDIRECT",
        "frame_too_short": "a frame shorter than an Ethernet header (14 bytes): NICs drop runts, and "
        "BPF_PROG_TEST_RUN refuses them",
        "frame_too_long": "a frame longer than a single-buffer XDP frame (3520 bytes) for a program "
        "without xdp.frags, or longer than 17 fragments for one with",
        "no_interface": "a pcapng interface that no pipeline interface takes (capture_interface)",
        "tc_shot": "a TC program returned TC_ACT_SHOT (tcx: TCX_DROP)",
        "tc_stolen": "a TC filter returned TC_ACT_STOLEN or TC_ACT_TRAP: consumed",
        "tc_redirect_failed": "TC redirect to an ifindex that is not an interface of the pipeline",
        "tc_redirect_mtu": "a TC redirect (or bpf_clone_redirect copy) out of an interface's egress of a "
        "frame longer than that interface's MTU + 14 + 4 bytes: the link's far end drops it (veth: "
        "is_skb_forwardable); redirects to an ingress and bpf_redirect_peer check no MTU",
        "tc_redirect_no_target": "TC_ACT_REDIRECT without a successful bpf_redirect*() call",
        "tc_redirect_peer": "bpf_redirect_peer: the pipeline has no veth/netkit peers (the kernel drops it)",
        "tc_redirect_neigh": "bpf_redirect_neigh: neighbour resolution is not modelled by the pipeline",
        "redirect_loop": "TC redirects nested deeper than the kernel's limit of 8 (a redirect loop), or a "
        "frame cpumap programs redirected 8 times",
    },
    "aborted": {
        "xdp_aborted": "an XDP program returned XDP_ABORTED",
        "unknown_action": "an XDP program returned a value that is not an XDP action (the kernel "
        "warns and takes the XDP_ABORTED path)",
    },
    "error": {
        "program_fault": "the program faulted (bad memory access, runaway loop, bad helper argument)",
        "test_run_refused": "kernel engine: BPF_PROG_TEST_RUN refuses the frame for a TC program (IPv4 "
        "under 34 bytes, over 3712): no verdict to compare",
        "truncated_record": "the capture ends inside this record (damaged file): not run",
        "bad_record": "a pcapng packet block inconsistent inside (damaged file): not run",
        "unconvertible_record": "a record with no Ethernet form (e.g. raw IP version 5): not run",
        "damaged_record": "the record at which reading the capture stopped with an error: not run",
    },
}

# capture warning kind -> error reason of the record it cost
RECORD_REASONS = {"truncated": "truncated_record", "bad_record": "bad_record",
                  "unconvertible": "unconvertible_record"}


@dataclass
class Stats:
    packets: int = 0
    outcomes: Counter = field(default_factory=Counter)
    reasons: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    programs: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    interfaces: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    queues: Counter = field(default_factory=Counter)
    redirect_targets: Counter = field(default_factory=Counter)
    tail_calls: int = 0
    helper_calls: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # fault kind + reason text
    capture: dict = field(default_factory=dict)
    clamped_timestamps: int = 0
    engine: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what these statistics do not cover, and why
    clones: int = 0  # bpf_clone_redirect and XDP broadcast copies, each also counted as a packet
    stages: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # xdp, tc_* verdicts

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def count(self, outcome: str, reason: str, interface: str | None = None, n: int = 1) -> None:
        assert reason in REASONS[outcome], (outcome, reason)
        self.packets += n
        self.outcomes[outcome] += n
        self.reasons[outcome][reason] += n
        if interface is not None:
            self.interfaces[interface][outcome] += n

    def decision(self, d: Any, interface: str | None) -> None:
        """Count one packet's fate (a pipeline `Decision`): its outcome, the programs that ran, the one
        that decided, the redirect target and the error."""
        self.count(d.outcome, d.reason, interface)
        for prog in d.ran:
            self.programs[prog]["runs"] += 1
        if d.program:
            self.programs[d.program]["decided"] += 1
            self.programs[d.program][d.outcome] += 1
        if d.target:
            self.redirect_targets[d.target] += 1
        if d.error:
            self.errors[d.error] += 1

    def check(self) -> None:
        """The accounting invariant; a violation is a bug in xdpsim."""
        total = sum(self.outcomes.values())
        if total != self.packets:
            raise AssertionError(f"accounting: {self.packets} packets in, {total} out")

    def to_dict(self) -> dict:
        self.check()
        return {
            "packets": self.packets,
            "outcomes": {o: self.outcomes.get(o, 0) for o in OUTCOMES},
            "reasons": {o: dict(sorted(self.reasons[o].items())) for o in OUTCOMES if self.reasons.get(o)},
            "programs": {p: dict(c) for p, c in sorted(self.programs.items())},
            "interfaces": {i: {o: c.get(o, 0) for o in OUTCOMES} for i, c in self.interfaces.items()},
            "queues": {str(q): n for q, n in sorted(self.queues.items())},
            "redirect_targets": dict(sorted(self.redirect_targets.items())),
            "tail_calls": self.tail_calls,
            "helper_calls": dict(sorted(self.helper_calls.items())),
            "errors": dict(self.errors.most_common()),
            "capture": self.capture,
            "clamped_timestamps": self.clamped_timestamps,
            "engine": self.engine,
            "seconds": round(self.seconds, 6),
            "packets_per_second": round(self.packets / self.seconds) if self.seconds > 0 else None,
            "notes": self.notes,
            "clones": self.clones,
            "stages": {s: dict(c) for s, c in self.stages.items()},
        }
