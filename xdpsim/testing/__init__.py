"""Testing XDP programs with pytest: the plugin (xdpsim.testing.plugin, loaded through the `pytest11`
entry point) and what test modules import from here:

    from xdpsim.testing import XDP_DROP, XDP_PASS, packets_from, assert_matches_golden

Names resolve lazily so that the plugin's own import stays light (no llvmlite, numpy or scapy).
"""

from __future__ import annotations

from typing import Any

_ACTIONS = ("XDP_ABORTED", "XDP_DROP", "XDP_PASS", "XDP_TX", "XDP_REDIRECT")

__all__ = ["XDP_ABORTED", "XDP_DROP", "XDP_PASS", "XDP_REDIRECT", "XDP_TX", "CapturedPacket",  # noqa: F822
           "assert_matches_golden", "packets_from", "read_capture"]


def __getattr__(name: str) -> Any:
    if name in _ACTIONS or name == "XdpAction":
        from ..hooks.xdp import XdpAction

        return XdpAction if name == "XdpAction" else XdpAction[name]
    if name in ("packets_from", "read_capture", "CapturedPacket"):
        from . import packets

        return getattr(packets, name)
    if name in ("assert_matches_golden", "GoldenMismatch"):
        from .. import golden

        return getattr(golden, name)
    raise AttributeError(f"module 'xdpsim.testing' has no attribute {name!r}")
