"""The errors xdpsim raises. Each says what and where; wrapped causes stay in __cause__."""

from __future__ import annotations


class XdpsimError(Exception):
    """Base of every error xdpsim raises on purpose."""


class EncodingError(XdpsimError):
    """An instruction that cannot be decoded or is invalid (load time). Carries the instruction index."""

    def __init__(self, message: str, index: int | None = None):
        self.index = index
        super().__init__(f"instruction {index}: {message}" if index is not None else message)


class AsmError(XdpsimError):
    """Assembler input that cannot be assembled; carries the source line number."""

    def __init__(self, message: str, lineno: int | None = None):
        self.lineno = lineno
        super().__init__(f"line {lineno}: {message}" if lineno is not None else message)


class LoadError(XdpsimError):
    """A malformed or unsupported ELF object, BTF, relocation, section or program."""


class MapError(XdpsimError):
    """A user-space map operation refused as the kernel refuses it; `errno` is the kernel's errno."""

    def __init__(self, message: str, errno: int):
        self.errno = errno
        super().__init__(message)


class ProgramFault(XdpsimError):
    """A program run that ended in a fault: bad memory access, runaway loop, bad helper argument...

    A fault is an outcome of the packet, not an exception the user sees from `Program.run` (the result
    carries it in `.error`); engines raise it internally. Fields say where: program, instruction index,
    the instruction's text, the C source line when BTF has it, and for memory faults the address,
    access size and region.
    """

    def __init__(
        self,
        reason: str,
        *,
        kind: str = "fault",
        program: str | None = None,
        pc: int | None = None,
        insn: str | None = None,
        source: str | None = None,
        address: int | None = None,
        size: int | None = None,
        region: str | None = None,
    ):
        self.reason = reason
        self.kind = kind  # "memory", "budget", "helper", "call-depth", "stack", "ctx", "division", ...
        self.program = program
        self.pc = pc
        self.insn = insn
        self.source = source
        self.address = address
        self.size = size
        self.region = region
        super().__init__(self.describe())

    def describe(self) -> str:
        where = []
        if self.program is not None:
            where.append(f"program {self.program}")
        if self.pc is not None:
            where.append(f"insn {self.pc}")
        if self.insn:
            where.append(f"`{self.insn}`")
        msg = self.reason
        if where:
            msg = f"{', '.join(where)}: {msg}"
        if self.source:
            msg += f" (at {self.source})"
        return msg

    def __str__(self) -> str:
        return self.describe()

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "reason": self.reason,
            "program": self.program,
            "pc": self.pc,
            "insn": self.insn,
            "source": self.source,
            "address": self.address,
            "size": self.size,
            "region": self.region,
        }


class CaptureError(XdpsimError):
    """A damaged or unsupported capture file; names the file and the byte offset."""

    def __init__(self, message: str, path: str | None = None, offset: int | None = None):
        self.path = path
        self.offset = offset
        where = ""
        if path is not None:
            where = f"{path}"
            if offset is not None:
                where += f" at offset {offset}"
            where += ": "
        super().__init__(where + message)


class KernelError(XdpsimError):
    """The running kernel refused something (bpf() errno, verifier log attached)."""

    def __init__(self, message: str, errno: int = 0, log: str = ""):
        self.errno = errno
        self.log = log
        super().__init__(message + (f"\n{log}" if log else ""))


class KernelUnavailable(XdpsimError):
    """The kernel engine cannot run here (not Linux, not root, bpf() not permitted); says why."""
