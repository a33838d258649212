"""An HTML report in the manner of coverage.py: `index.html` (one row per source file: lines,
branches, percentages) and one page per file with the source, each line's count, executed lines
green, never executed red, partly executed (a branch direction never taken) yellow with the missing
directions spelled out. Plain HTML and CSS, no scripts; sources are read from the paths in the BTF
line info, or rebuilt from the line-info text when the file is not there."""

from __future__ import annotations

import hashlib
import html
import os
from pathlib import Path

from .report import CoverageReport, FileReport, percent

CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table.index { border-collapse: collapse; }
table.index td, table.index th { padding: 0.2em 0.8em; border-bottom: 1px solid #ddd; text-align: right; }
table.index td.name, table.index th.name { text-align: left; }
table.source { border-collapse: collapse; font-family: monospace; font-size: 90%; width: 100%; }
table.source td { padding: 0 0.5em; white-space: pre; vertical-align: top; }
td.n { color: #999; text-align: right; } td.c { text-align: right; color: #555; }
tr.run td.t { background: #dfd; } tr.mis td.t { background: #fdd; } tr.par td.t { background: #ffa; }
span.annotate { color: #a60; font-style: italic; margin-left: 2em; }
.pc { font-weight: bold; }
"""


def _page_name(path: str) -> str:
    digest = hashlib.sha1(path.encode()).hexdigest()[:8]
    return f"{Path(path).name.replace('.', '_')}_{digest}.html"


def _source_lines(f: FileReport) -> list[str]:
    try:
        return Path(f.path).read_text(errors="replace").splitlines()
    except OSError:
        last = max(f.lines, default=0)
        return [f.lines[n].text if n in f.lines else "" for n in range(1, last + 1)]


def _file_page(f: FileReport, title: str) -> str:
    rows = []
    for n, text in enumerate(_source_lines(f), start=1):
        st = f.lines.get(n)
        missed = f.missed_branches(n)
        cls, count, note = "", "", ""
        if st is not None:
            count = str(st.count)
            cls = "mis" if st.count == 0 else "par" if missed else "run"
        if missed and st is not None and st.count:
            parts = [f"insn {b.block} ({', '.join(sorted(set(b.programs)))}): "
                     f"{'never taken' if b.direction else 'never fell through'}" for b in missed]
            note = f'<span class="annotate">{html.escape("; ".join(parts))}</span>'
        rows.append(f'<tr class="{cls}"><td class="n" id="l{n}">{n}</td><td class="c">{count}</td>'
                    f'<td class="t">{html.escape(text)}{note}</td></tr>')
    nl, nb = len(f.lines), len(f.branches)
    head = (f"<h1>{html.escape(title)}</h1><p class=\"pc\">lines {f.lines_hit}/{nl} "
            f"({percent(f.lines_hit, nl):.1f}%), branches {f.branches_hit}/{nb} "
            f"({percent(f.branches_hit, nb):.1f}%)</p><p><a href=\"index.html\">index</a></p>")
    return _doc(title, head + '<table class="source">' + "\n".join(rows) + "</table>")


def _doc(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n")


def write_html(report: CoverageReport, directory: str | os.PathLike[str],
               title: str = "xdpsim coverage") -> Path:
    """Write the report into `directory` (created); returns the index page's path."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path, f in report.files.items():
        page = _page_name(path)
        (out / page).write_text(_file_page(f, path))
        nl, nb = len(f.lines), len(f.branches)
        rows.append(f'<tr><td class="name"><a href="{page}">{html.escape(path)}</a></td><td>{nl}</td>'
                    f"<td>{nl - f.lines_hit}</td><td>{nb}</td><td>{nb - f.branches_hit}</td>"
                    f"<td>{percent(f.lines_hit + f.branches_hit, nl + nb):.0f}%</td></tr>")
    lines, hit, br, bhit = report.totals()
    prog_rows = [f'<tr><td class="name">{html.escape(os.path.basename(p.object))}:{html.escape(p.name)}</td>'
                 f"<td>{p.lines}</td><td>{p.lines - p.lines_hit}</td><td>{p.branches}</td>"
                 f"<td>{p.branches - p.branches_hit}</td>"
                 f"<td>{percent(p.lines_hit + p.branches_hit, p.lines + p.branches):.0f}%</td></tr>"
                 for p in report.programs]
    header = ("<tr><th class=\"name\">{}</th><th>lines</th><th>missing</th><th>branch directions</th>"
              "<th>never taken</th><th>coverage</th></tr>")
    body = (f"<h1>{html.escape(title)}</h1>"
            f"<p class=\"pc\">total: lines {hit}/{lines} ({percent(hit, lines):.1f}%), "
            f"branches {bhit}/{br} ({percent(bhit, br):.1f}%)</p>"
            f"<h2>Files</h2><table class=\"index\" id=\"files\">{header.format('file')}{''.join(rows)}"
            f"<tr class=\"total\"><td class=\"name\">Total</td><td>{lines}</td><td>{lines - hit}</td>"
            f"<td>{br}</td><td>{br - bhit}</td><td>{percent(hit + bhit, lines + br):.0f}%</td></tr></table>"
            f"<h2>Programs</h2><table class=\"index\" id=\"programs\">{header.format('program')}"
            f"{''.join(prog_rows)}</table>")
    index = out / "index.html"
    index.write_text(_doc(title, body))
    return index
