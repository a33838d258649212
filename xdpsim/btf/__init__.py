"""BTF and BTF.ext: types, func info, line info, CO-RE relocations (and the small BTF xdpsim ships).

`BTF(raw)` parses a `.BTF` blob (every kind); `parse_ext(raw, btf)` parses `.BTF.ext`; `core` resolves
CO-RE relocations against the running kernel's BTF or `xdpsim/data/core_types.btf`;
`decode`/`encode` turn map keys and values into Python values and back by their BTF types.
"""

from .core import CoreError, CoreResult, shipped_btf, target_btf
from .ext import BtfExt, CoreKind, CoreRelo, ExtFuncInfo, ExtLineInfo, parse_ext
from .types import BTF, BtfError, BtfType, Kind, Member, essential_name
from .values import decode, encode

__all__ = [
    "BTF",
    "BtfError",
    "BtfExt",
    "BtfType",
    "CoreError",
    "CoreKind",
    "CoreRelo",
    "CoreResult",
    "ExtFuncInfo",
    "ExtLineInfo",
    "Kind",
    "Member",
    "decode",
    "encode",
    "essential_name",
    "parse_ext",
    "shipped_btf",
    "target_btf",
]
