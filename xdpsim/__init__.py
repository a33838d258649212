"""xdpsim: run real eBPF XDP and TC programs outside the kernel.

`xdpsim.load(path, engine="interp"|"jit"|"kernel")` -> Object (see xdpsim.api); imported lazily so
that `import xdpsim` stays cheap for tools that need only part of the package.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("load", "Object", "Program", "RunResult"):
        from . import api

        return getattr(api, name)
    if name == "XdpAction":
        from .hooks.xdp import XdpAction

        return XdpAction
    raise AttributeError(f"module 'xdpsim' has no attribute {name!r}")
