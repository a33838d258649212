"""Program section names -> program type, attach point and flags, as libbpf's section_defs has them.

Only the program types xdpsim runs are accepted (XDP, TC classifiers and actions, socket filters);
other libbpf section names (kprobe/, tracepoint/, ...) are refused by name. Legacy names that libbpf
1.0 dropped but old objects still use (`xdp_*`, `xdp_prog`, iproute2's `classifier/...`,
`action/...`) load with a notice.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import LoadError
from ..spec import ProgType


@dataclass(frozen=True)
class SectionKind:
    type: ProgType
    attach: str
    frags: bool = False
    notice: str | None = None


_EXACT: dict[str, SectionKind] = {
    "xdp": SectionKind(ProgType.XDP, "xdp"),
    "xdp.frags": SectionKind(ProgType.XDP, "xdp.frags", frags=True),
    "xdp/devmap": SectionKind(ProgType.XDP, "xdp/devmap"),
    "xdp.frags/devmap": SectionKind(ProgType.XDP, "xdp.frags/devmap", frags=True),
    "xdp/cpumap": SectionKind(ProgType.XDP, "xdp/cpumap"),
    "xdp.frags/cpumap": SectionKind(ProgType.XDP, "xdp.frags/cpumap", frags=True),
    "tc": SectionKind(ProgType.SCHED_CLS, "tc"),
    "classifier": SectionKind(ProgType.SCHED_CLS, "classifier"),
    "action": SectionKind(ProgType.SCHED_ACT, "action"),
    "tcx/ingress": SectionKind(ProgType.SCHED_CLS, "tcx/ingress"),
    "tcx/egress": SectionKind(ProgType.SCHED_CLS, "tcx/egress"),
    "tc/ingress": SectionKind(ProgType.SCHED_CLS, "tc/ingress"),
    "tc/egress": SectionKind(ProgType.SCHED_CLS, "tc/egress"),
    "socket": SectionKind(ProgType.SOCKET_FILTER, "socket"),
}

# libbpf prefixes of program types xdpsim does not run (refused with the type's name).
_OTHER = (
    "kprobe",
    "kretprobe",
    "uprobe",
    "uretprobe",
    "ksyscall",
    "kretsyscall",
    "usdt",
    "tracepoint",
    "tp",
    "raw_tracepoint",
    "raw_tp",
    "tp_btf",
    "fentry",
    "fexit",
    "fmod_ret",
    "freplace",
    "lsm",
    "iter",
    "syscall",
    "cgroup",
    "cgroup_skb",
    "sockops",
    "sk_skb",
    "sk_msg",
    "lirc_mode2",
    "flow_dissector",
    "perf_event",
    "lwt_in",
    "lwt_out",
    "lwt_xmit",
    "lwt_seg6local",
    "sk_lookup",
    "sk_reuseport",
    "struct_ops",
    "netfilter",
    "netkit",
    "seccomp",
)


def classify(section: str, prog_type: ProgType | None = None) -> SectionKind:
    """The program kind of an executable section; `prog_type` forces one (for unknown names)."""
    if section in _EXACT:
        kind = _EXACT[section]
        if prog_type is not None and prog_type != kind.type:
            return SectionKind(prog_type, section, kind.frags)
        return kind
    head = section.split("/", 1)[0]
    if head in ("xdp", "xdp.frags"):  # xdp/<anything>: libbpf's SEC_ATTACHABLE_OPT
        return SectionKind(ProgType.XDP, section, frags=head == "xdp.frags")
    if head in ("tc", "tcx", "classifier"):
        return SectionKind(ProgType.SCHED_CLS, section)
    if head == "action":
        return SectionKind(ProgType.SCHED_ACT, section)
    if head == "socket":
        return SectionKind(ProgType.SOCKET_FILTER, section)
    if prog_type is not None:
        return SectionKind(
            prog_type,
            section,
            notice=f"section {section!r}: loaded as {prog_type.name} "
            "as asked (libbpf does not know this name)",
        )
    if section.startswith("xdp_") or section == "xdpdrv" or section == "xdpgeneric":
        return SectionKind(
            ProgType.XDP,
            "xdp",
            notice=f"section {section!r} is a legacy name (libbpf 1.0 "
            'and later want SEC("xdp")): loaded as XDP',
        )
    if head in _OTHER or section.split(".", 1)[0] in _OTHER:
        raise LoadError(f"section {section!r}: a {head} program; xdpsim runs XDP and TC programs only")
    raise LoadError(
        f"section {section!r} holds code but is not a known program section (xdp, xdp.frags, "
        "tc, tcx/ingress, tcx/egress, classifier, ...); give the type with prog_type="
    )
