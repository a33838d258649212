"""Golden outcomes: the verdict of every packet of a capture, written once by a trusted engine and
checked on every test run.

File format (JSON lines, one object per line, reviewable in a diff):

    {"xdpsim_golden": 1, "spec": "parser.o", "pcap": "mixed.pcap", "pcap_sha256": "...",
     "engine": "kernel", "hash": "sha256", "packets": 442, "maps": false}
    {"packet": 0, "action": "XDP_DROP", "program": "parse_udp", "len": 130, "sha256": "...",
     "redirect": null, "error": null}
    ...

`action` is spelled as a name, `sha256` is the hash of the output bytes (`hash` in the header names
the algorithm), `program` the deciding program (the last of a tail-call chain), `redirect`
"kind:index" or null, `error` a fault's "kind: reason" or null, `maps` (only when asked) the map
entries the packet changed: {map: {key hex: [before, after]}} with null for absent (per-CPU values
summed over CPUs word by word: the kernel runs each test on whichever CPU it is on).
The kernel cannot tell which program of a tail-call chain returned, nor a redirect target: a kernel
recording takes those two from an interpreter run of the same packet when the interpreter agrees with
the kernel on action and bytes, and leaves them null (with a "note") otherwise. Null fields are not
compared; every other field of the golden record is.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import KernelError, XdpsimError

GOLDEN_VERSION = 1
COMPARED = ("action", "program", "len", "sha256", "redirect", "error", "maps")
MAX_LISTED = 50  # changed packets listed in full in a mismatch message


class GoldenMismatch(AssertionError):
    """Raised by assert_matches_golden; `changes` lists every changed packet."""

    def __init__(self, message: str, changes: list[Change]):
        super().__init__(message)
        self.changes = changes


@dataclass
class Change:
    packet: int
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # name -> (golden, now)


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _redirect(r: Any) -> str | None:
    return None if r is None else f"{r.kind}:{r.index}"


def _percpu_sum(values: list[str]) -> str:
    """Per-CPU values summed word by word (u64, wrapping): the kernel runs a test on whichever CPU it
    is on, so only the sum over CPUs is comparable between engines."""
    raw = [bytes.fromhex(v) for v in values]
    n = max(len(r) for r in raw)
    words = []
    for off in range(0, n - n % 8, 8):
        words.append(sum(int.from_bytes(r[off:off + 8], "little") for r in raw) & ((1 << 64) - 1))
    return b"".join(w.to_bytes(8, "little") for w in words).hex() + raw[0][n - n % 8:].hex()


def _raw_state(obj: Any) -> dict[str, dict[str, Any]]:
    """Map name -> {key hex: value hex | [per-CPU value hex]} (maps of programs and maps left out)."""
    from .spec import MapType

    out = {}
    for name, m in obj.maps.items():
        if m.spec.type in (MapType.PROG_ARRAY, MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS):
            continue
        out[name] = dict(m.to_json().get("entries", {}))
    return out


def _map_state(obj: Any) -> dict[str, dict[str, Any]]:
    return {name: {k: _percpu_sum(v) if isinstance(v, list) else v for k, v in entries.items()}
            for name, entries in _raw_state(obj).items()}


def _add_words(base: bytes, new: bytes, old: bytes) -> bytes:
    """base + (new - old), word by word (u64, wrapping); trailing bytes taken from new."""
    out = bytearray(base)
    for off in range(0, len(new) - len(new) % 8, 8):
        v = (int.from_bytes(base[off:off + 8], "little") + int.from_bytes(new[off:off + 8], "little")
             - int.from_bytes(old[off:off + 8], "little")) & ((1 << 64) - 1)
        out[off:off + 8] = v.to_bytes(8, "little")
    return bytes(out)


def _carry_over(target: Any, before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> None:
    """Apply the changes between two raw states of one object's maps to another object's maps (per-CPU
    values: the change added to CPU 0's value)."""
    for name, entries in after.items():
        m = target.maps[name]
        old_entries = before.get(name, {})
        for k in set(old_entries) | set(entries):
            old, new = old_entries.get(k), entries.get(k)
            if old == new:
                continue
            key = bytes.fromhex(k)
            if new is None:
                m.delete(key)
            elif isinstance(new, list):
                cur = [bytes(v) for v in m.lookup(key)]
                prev = bytes.fromhex(old[0]) if old else bytes(len(cur[0]))
                cur[0] = _add_words(cur[0], bytes.fromhex(new[0]), prev)
                m.update(key, cur)
            else:
                m.update(key, bytes.fromhex(new))


def _delta(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in after:
        a, b = before.get(name, {}), after[name]
        changed = {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
        if changed:
            out[name] = changed
    return out


def record_of(index: int, run: Any) -> dict[str, Any]:
    """The golden record of one testing.runner.Run."""
    r = run.result
    err = None if r.error is None else f"{r.error.kind}: {r.error.reason}"
    return {"packet": index, "action": r.action.name, "program": r.program, "len": len(r.data),
            "sha256": hashlib.sha256(r.data).hexdigest(), "redirect": _redirect(r.redirect), "error": err}


def outcomes(spec: str, pcap: str | os.PathLike[str], *, engine: str, maps: bool = False,
             coverage: Any = None) -> Iterator[dict[str, Any]]:
    """The golden record of every packet of `pcap` run through `spec` on `engine` (packets in order,
    maps carried from one to the next as in a replay). `coverage`: a CoverageData to count into (on
    the JIT with counters compiled in when `engine` is "jit", else on the interpreter)."""
    from .io import open_capture
    from .testing.runner import make_runner

    runner = make_runner(spec, engine=engine)
    shadow = make_runner(spec, engine="interp") if engine == "kernel" else None
    tracer = coverage.tracer(runner.obj.runtime) if coverage is not None and engine != "kernel" else None
    cov_jit = None
    if tracer is not None and engine == "jit":  # counters compiled in (the tracer sees declined programs)
        from .cover.jit import coverage_engine, gather, install

        cov_jit = coverage_engine()
        install(runner, cov_jit)
    try:
        for pkt in open_capture(pcap):
            before = _map_state(runner.obj) if maps else None
            try:
                run = runner.run(pkt.data, now_ns=pkt.ts_ns,
                                 engine="interp" if tracer and not cov_jit else None, tracer=tracer)
            except KernelError as e:
                # BPF_PROG_TEST_RUN refuses some frames (shorter than 14 bytes: EINVAL): the
                # interpreter stands in, its map changes carried into the kernel's maps so that the
                # packets after it see the state they would have seen; the record says so
                assert shadow is not None
                shadow_before = _raw_state(shadow.obj)
                rec = record_of(pkt.index, shadow.run(pkt.data, now_ns=pkt.ts_ns))
                _carry_over(runner.obj, shadow_before, _raw_state(shadow.obj))
                rec["note"] = f"the kernel refused to run this frame ({e}); outcome from the interpreter"
                if before is not None:
                    rec["maps"] = _delta(before, _map_state(runner.obj))
                yield rec
                continue
            if tracer is not None:
                tracer.end_run()
            rec = record_of(pkt.index, run)
            if shadow is not None:
                rec["program"], rec["redirect"] = None, None
                ref = record_of(pkt.index, shadow.run(pkt.data, now_ns=pkt.ts_ns))
                if (ref["action"], ref["sha256"]) == (rec["action"], rec["sha256"]):
                    rec["program"], rec["redirect"] = ref["program"], ref["redirect"]
                else:
                    rec["note"] = (f"the interpreter disagrees with the kernel ({ref['action']}, "
                                   f"{ref['len']} bytes): deciding program unknown")
            if before is not None:
                rec["maps"] = _delta(before, _map_state(runner.obj))
            yield rec
    finally:
        if cov_jit is not None:
            gather(cov_jit, runner.obj.runtime, coverage)
        runner.close()
        if shadow is not None:
            shadow.close()


def resolve_record_engine(engine: str, spec: str | None = None) -> str:
    """"auto": the kernel where this process can load and run BPF, else the interpreter (XDP chains of
    pipeline files: the interpreter, which runs libxdp's dispatcher here)."""
    if engine != "auto":
        return engine
    from .testing.runner import is_chain

    if spec is not None and is_chain(spec):
        return "interp"
    try:
        from .kernel.bpf import kernel_available

        return "kernel" if kernel_available()[0] else "interp"
    except Exception:  # not Linux, no bpf(): the interpreter is the reference then
        return "interp"


def record(spec: str, pcap: str | os.PathLike[str], golden: str | os.PathLike[str], *,
           engine: str = "auto", maps: bool = False) -> dict[str, Any]:
    """Write the golden file; returns its header."""
    engine = resolve_record_engine(engine, os.fspath(spec))
    recs = list(outcomes(spec, pcap, engine=engine, maps=maps))
    header = {"xdpsim_golden": GOLDEN_VERSION, "spec": os.path.basename(str(spec)),
              "pcap": os.path.basename(os.fspath(pcap)), "pcap_sha256": file_sha256(pcap), "engine": engine,
              "hash": "sha256", "packets": len(recs), "maps": maps}
    with open(golden, "w") as f:
        f.write(json.dumps(header) + "\n")
        for rec in recs:
            f.write(json.dumps(rec) + "\n")
    return header


def load_golden(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    try:
        with open(path) as f:
            lines = [ln for ln in f.read().splitlines() if ln.strip()]
    except OSError as e:
        raise XdpsimError(f"cannot read golden file {os.fspath(path)}: {e.strerror} (write it with "
                          "`xdpsim record SPEC --pcap IN --golden FILE` or --xdpsim-update-golden)") from e
    try:
        docs = [json.loads(ln) for ln in lines]
    except json.JSONDecodeError as e:
        raise XdpsimError(f"{os.fspath(path)}: not a golden file (line {e.lineno}: {e.msg})") from e
    if not docs or docs[0].get("xdpsim_golden") != GOLDEN_VERSION:
        raise XdpsimError(f"{os.fspath(path)}: not an xdpsim golden file "
                          f"(version {GOLDEN_VERSION} header missing)")
    return docs[0], docs[1:]


def compare(golden: list[dict[str, Any]], now: list[dict[str, Any]]) -> list[Change]:
    """Every packet whose outcome changed, with the changed fields (null golden fields not compared);
    packets present on one side only are changes too."""
    changes = []
    by_index = {r["packet"]: r for r in now}
    for g in golden:
        n = by_index.pop(g["packet"], None)
        if n is None:
            changes.append(Change(g["packet"], {"packet": ("present", "missing")}))
            continue
        diff = {k: (g[k], n.get(k)) for k in COMPARED if k in g and g[k] is not None and g[k] != n.get(k)}
        if diff:
            changes.append(Change(g["packet"], diff))
    for idx in sorted(by_index):
        changes.append(Change(idx, {"packet": ("missing", "present")}))
    return changes


def _summaries(pcap: str | os.PathLike[str], wanted: set[int]) -> dict[int, str]:
    from .io import open_capture
    from .testing.packets import summary

    out = {}
    for pkt in open_capture(pcap):
        if pkt.index in wanted:
            out[pkt.index] = summary(pkt.data)
    return out


def _fmt(field_name: str, old: Any, new: Any) -> list[str]:
    if field_name == "maps":
        return [f"    maps: {json.dumps(old, sort_keys=True)} -> {json.dumps(new, sort_keys=True)}"]
    if field_name == "sha256":
        return [f"    sha256: {str(old)[:16]}... -> {str(new)[:16]}..."]
    return [f"    {field_name}: {old} -> {new}"]


def format_changes(changes: list[Change], golden: str, pcap: str | os.PathLike[str], total: int,
                   engine: str, recorded_by: str) -> str:
    shown = changes[:MAX_LISTED]
    names = _summaries(pcap, {c.packet for c in shown})
    out = [f"golden file {golden}: {len(changes)} of {total} packets changed "
           f"(now on {engine}; recorded on {recorded_by})"]
    for c in shown:
        out.append(f"  packet {c.packet} ({names.get(c.packet, '?')}):")
        for k, (old, new) in c.fields.items():
            out.extend(_fmt(k, old, new))
    if len(changes) > len(shown):
        out.append(f"  ... and {len(changes) - len(shown)} more: "
                   + ", ".join(str(c.packet) for c in changes[len(shown):len(shown) + 40]))
    out.append("(if the change is intended, rewrite the file with pytest --xdpsim-update-golden "
               "or `xdpsim record`)")
    return "\n".join(out)


def assert_matches_golden(spec: str | os.PathLike[str], pcap: str | os.PathLike[str],
                          golden: str | os.PathLike[str], *, engine: str | None = None,
                          update: bool | None = None, coverage: Any = None) -> int:
    """Replay `pcap` through `spec` and compare with `golden`; raise GoldenMismatch listing every
    changed packet with a per-field diff. `update=True` (pytest --xdpsim-update-golden) rewrites the
    file instead (on the recording engine "auto"). Returns the number of packets checked."""
    __tracebackhide__ = True  # pytest: the mismatch message is the report, not this function's source
    from .testing import state

    spec, golden = os.fspath(spec), os.fspath(golden)
    if update is None:
        update = state.update_golden
    if coverage is None:
        coverage = state.coverage
    if update:
        maps = False
        if os.path.exists(golden):
            maps = bool(load_golden(golden)[0].get("maps"))
        return record(spec, pcap, golden, maps=maps)["packets"]
    header, expected = load_golden(golden)
    if engine is None:
        from .testing.runner import default_engine

        engine = state.engine or default_engine()
    now = list(outcomes(spec, pcap, engine=engine, maps=bool(header.get("maps")), coverage=coverage))
    changes = compare(expected, now)
    if header.get("pcap_sha256") not in (None, file_sha256(pcap)):
        changes.insert(0, Change(-1, {"pcap_sha256": (header["pcap_sha256"], file_sha256(pcap))}))
    if changes:
        raise GoldenMismatch(format_changes(changes, golden, pcap, len(expected), engine,
                                            header.get("engine", "?")), changes)
    return len(now)
