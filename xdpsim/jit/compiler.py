"""LLVM module -> optimised native object code -> loaded into the process-wide MCJIT engine.

Compiled code depends only on its `ProgramInput` (instructions, resolved lddw constants, proofs,
native helper set): runtime addresses (region table, map descriptors, entry points) come through
`env` at run time. So the object code of a program is cached on disk
(`$XDG_CACHE_HOME/xdpsim/jit/` or `~/.cache/xdpsim/jit/`) under a key made of its inputs, the
xdpsim version and the llvmlite/LLVM versions, and loaded with `add_object_file`: a cached program
costs no IR building and no LLVM pass at all. In memory, one entry address per key is kept for the
process (two runtimes loading the same object share the machine code).

Set XDPSIM_JIT_CACHE=0 to disable the disk cache.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import llvmlite
import llvmlite.binding as llvm

from .. import isa
from .cfg import function_entries
from .lower import ModuleLowering, NativeHelpers, ProgramInput, function_name

CACHE_FORMAT = 3


def _xdpsim_version() -> str:
    try:
        from importlib.metadata import version

        return version("xdpsim")
    except Exception:  # noqa: BLE001 - an uninstalled tree still works
        return "0+unknown"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xdpsim" / "jit"


def cache_key(prog: ProgramInput) -> str:
    h = hashlib.sha256()
    h.update(f"xdpsim-jit {CACHE_FORMAT} {_xdpsim_version()} llvmlite {llvmlite.__version__} "
             f"llvm {llvm.llvm_version_info} {llvm.get_process_triple()}\n".encode())
    h.update(isa.encode(prog.insns))
    payload = (
        sorted(prog.lddw.items()),
        prog.xdp,
        sorted((pc, p.kind, p.offset) for pc, p in prog.proofs.items()),
        sorted(prog.native_helpers),
        prog.budget_per_block,
        prog.conformance,
        prog.code_region,
        prog.entries,
    )
    h.update(pickle.dumps(payload, protocol=4))
    return h.hexdigest()[:32]


@dataclass
class Compiled:
    key: str
    address: int
    seconds: float  # time spent here (0 when already in memory)
    source: str  # "compiled", "disk", "memory"


class Compiler:
    """The process-wide MCJIT engine that holds every compiled program."""

    def __init__(self) -> None:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        target = llvm.Target.from_default_triple()
        self.tm = target.create_target_machine(opt=3, codemodel="jitdefault", jit=True)
        # the engine needs a module to start with: an empty one
        empty = llvm.parse_assembly("")
        empty.triple = self.tm.triple
        self.engine = llvm.create_mcjit_compiler(empty, self.tm)
        self.loaded: dict[str, int] = {}
        self.lock = threading.Lock()
        self.use_disk = os.environ.get("XDPSIM_JIT_CACHE", "1") != "0"

    def compile(self, prog: ProgramInput, natives: NativeHelpers | None = None) -> Compiled:
        key = cache_key(prog)
        with self.lock:
            if key in self.loaded:
                return Compiled(key, self.loaded[key], 0.0, "memory")
            t0 = time.perf_counter()
            name = f"xdpsim_prog_{key}"
            obj = self._read_cache(key)
            source = "disk"
            if obj is None:
                obj = self._build(prog, name, natives)
                self._write_cache(key, obj)
                source = "compiled"
            self.engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
            self.engine.finalize_object()
            addr = self.engine.get_function_address(name)
            if not addr:
                raise RuntimeError(f"JIT: {name} missing after loading its object code")
            self.loaded[key] = addr
            return Compiled(key, addr, time.perf_counter() - t0, source)

    def function_addresses(self, c: Compiled, prog: ProgramInput) -> dict[int, int]:
        """insn -> native address of every function of the program (entry and subprograms)."""
        out = {}
        with self.lock:
            for start in function_entries(prog.insns, prog.entries):
                addr = self.engine.get_function_address(function_name(f"xdpsim_prog_{c.key}", start))
                if addr:
                    out[start] = addr
        return out

    def ir_text(self, prog: ProgramInput, natives: NativeHelpers | None = None) -> str:
        return str(ModuleLowering(prog, "xdpsim_prog", natives).lower())

    def _build(self, prog: ProgramInput, name: str, natives: NativeHelpers | None) -> bytes:
        module = ModuleLowering(prog, name, natives).lower()
        parsed = llvm.parse_assembly(str(module))
        parsed.triple = self.tm.triple
        parsed.data_layout = str(self.tm.target_data)
        parsed.verify()
        pto = llvm.create_pipeline_tuning_options(speed_level=2)
        pb = llvm.create_pass_builder(self.tm, pto)
        pb.getModulePassManager().run(parsed, pb)
        return self.tm.emit_object(parsed)

    def _read_cache(self, key: str) -> bytes | None:
        if not self.use_disk:
            return None
        try:
            return (cache_dir() / f"{key}.o").read_bytes()
        except OSError:
            return None

    def _write_cache(self, key: str, obj: bytes) -> None:
        if not self.use_disk:
            return
        d = cache_dir()
        try:
            d.mkdir(parents=True, exist_ok=True)
            # write then rename: a concurrent reader never sees half a file
            fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(obj)
            os.replace(tmp, d / f"{key}.o")
        except OSError:
            pass  # a read-only home is no reason to fail a run


_compiler: Compiler | None = None
_lock = threading.Lock()


def compiler() -> Compiler:
    global _compiler
    if _compiler is None:
        with _lock:
            if _compiler is None:
                _compiler = Compiler()
    return _compiler
