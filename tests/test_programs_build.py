"""programs/ rebuilds from its sources with the committed Makefile, and what it builds loads."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from xdpsim.loader import load_object

PROGRAMS = Path(__file__).resolve().parent.parent / "programs"
CLANG = shutil.which("clang-19")
MAKE = shutil.which("make")


@pytest.mark.skipif(CLANG is None or MAKE is None, reason="clang-19 or make not installed")
def test_rebuild_and_load(tmp_path: Path) -> None:
    res = subprocess.run([MAKE, "-s", "-C", str(PROGRAMS), f"OUT={tmp_path}"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    sources = sorted(p.stem for p in PROGRAMS.glob("*.c"))
    built = sorted(p.stem for p in tmp_path.glob("*.o"))
    assert built == sources
    for stem in built:
        fresh = load_object(tmp_path / f"{stem}.o")
        committed = load_object(PROGRAMS / f"{stem}.o")
        # the committed objects are up to date with their sources
        assert {n: p.insns for n, p in fresh.programs.items()} == {
            n: p.insns for n, p in committed.programs.items()
        }, f"programs/{stem}.o is stale: run make -C programs"
        assert [m.name for m in fresh.maps] == [m.name for m in committed.maps]


def test_every_source_has_a_readme_comment_and_an_object() -> None:
    readme = (PROGRAMS / "README.md").read_text()
    for c in PROGRAMS.glob("*.c"):
        text = c.read_text()
        assert text.startswith("/*\n * " + c.name + ":"), f"{c.name} lacks its header comment"
        assert (PROGRAMS / f"{c.stem}.o").exists(), f"{c.stem}.o not committed"
        assert f"`{c.name}`" in readme, f"{c.name} missing from programs/README.md"
