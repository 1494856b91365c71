"""Render report sections as self-contained HTML, Markdown and rich terminal tables.

The HTML has inline CSS and its figures embedded as base64 ``data:`` URIs: it opens anywhere
(no network, no CDN, nothing outside its folder). The Markdown links the same PNG files in
``figures/`` beside it by relative paths.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table as RichTable

from avalanche_hpc.report.collect import Stat, Table, cell_text


@dataclass
class Figure:
    path: Path  # PNG inside the report folder
    caption: str


@dataclass
class Section:
    id: str
    title: str
    items: Sequence[Table | Figure | str] = field(default_factory=list)  # str = a plain-text paragraph
    bullets: bool = False  # render the str items as a bulleted list in normal text


CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;margin:0;color:#1d2329;background:#f6f7f9}
main{max-width:1300px;margin:0 auto;padding:24px 32px;background:#fff}
h1{font-size:1.6em;margin:0 0 4px} h2{font-size:1.25em;margin:28px 0 8px;border-bottom:2px solid #dde3ea;padding-bottom:4px}
h3{font-size:1.05em;margin:18px 0 6px}
p.sub{color:#5b6670;margin:0 0 12px}
nav{font-size:.9em;margin:8px 0 16px} nav a{margin-right:12px;color:#1f5fa8;text-decoration:none}
table{border-collapse:collapse;margin:6px 0 4px;font-size:.88em}
th,td{border:1px solid #d4dae1;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#eef2f6;font-weight:600;white-space:normal;vertical-align:bottom;min-width:5em} td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafbfc} td.txt,th.txt{text-align:left}
table.kv td{text-align:left;white-space:normal;word-break:break-all;max-width:1000px;font-family:monospace;font-size:.95em}
.note{color:#5b6670;font-size:.85em;margin:2px 0 14px;max-width:1100px}
.scroll{overflow-x:auto;max-width:100%}
.tall{max-height:360px;overflow-y:auto;display:inline-block}
.figs{display:flex;flex-wrap:wrap;gap:6px 22px;align-items:flex-start}
figure{margin:10px 0 18px;max-width:100%} figure img{max-width:100%;border:1px solid #e3e7ec}
figcaption{color:#5b6670;font-size:.85em}
ul.notes li{font-size:.85em;color:#8a4b00} ul.glance li{margin:3px 0}
"""


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


_NUMERIC = re.compile(r"[+-]?\d[\d.,]*( %)?|n/a")


def _numeric(c: Any) -> bool:
    return isinstance(c, Stat | int | float) or bool(_NUMERIC.fullmatch(cell_text(c)))


def _td(c: Any) -> str:
    cls = "" if _numeric(c) else ' class="txt"'
    return f"<td{cls}>{html.escape(cell_text(c))}</td>"


def html_table(t: Table) -> str:
    first = t.rows[0] if t.rows else []
    txt = ' class="txt"'
    head = "".join(f"<th{'' if j < len(first) and _numeric(first[j]) else txt}>{html.escape(c)}</th>"
                   for j, c in enumerate(t.columns))
    body = "\n".join("<tr>" + "".join(_td(c) for c in r) + "</tr>" for r in t.rows)
    tall = " tall" if len(t.rows) > 14 and t.style != "kv" else ""
    kv = ' class="kv"' if t.style == "kv" else ""
    out = (f'<h3>{html.escape(t.title)}</h3>\n<div class="scroll{tall}"><table id="{html.escape(t.id)}"{kv}>\n'
           f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table></div>\n")
    if t.note:
        out += f'<p class="note">{html.escape(t.note)}</p>\n'
    return out


def render_html(title: str, subtitle: str, sections: list[Section], notes: list[str],
                meta: dict[str, str] | None = None) -> str:
    """The self-contained page; ``meta``: extra ``<meta name content>`` tags (e.g. the inputs digest)."""
    nav = " ".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    tags = "".join(f'<meta name="{html.escape(k)}" content="{html.escape(v)}">\n' for k, v in (meta or {}).items())
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n{tags}<title>{html.escape(title)}</title>\n"
             f"<style>{CSS}</style></head>\n<body><main>\n<h1>{html.escape(title)}</h1>\n"
             f'<p class="sub">{html.escape(subtitle)}</p>\n<nav>{nav}</nav>\n']
    if notes:
        parts.append('<h2 id="checks">Checks</h2>\n<ul class="notes">'
                     + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>\n")
    for s in sections:
        parts.append(f'<h2 id="{s.id}">{html.escape(s.title)}</h2>\n')
        if s.bullets:
            parts.append('<ul class="glance">' + "".join(f"<li>{html.escape(str(i))}</li>" for i in s.items) + "</ul>\n")
            continue
        in_figs = False  # consecutive figures share a wrapping row
        for item in s.items:
            if isinstance(item, Figure) != in_figs:
                parts.append('<div class="figs">\n' if not in_figs else "</div>\n")
                in_figs = not in_figs
            if isinstance(item, Table):
                parts.append(html_table(item))
            elif isinstance(item, Figure):
                parts.append(f'<figure><img src="{data_uri(item.path)}" alt="{html.escape(item.caption)}">'
                             f"<figcaption>{html.escape(item.caption)}</figcaption></figure>\n")
            else:
                parts.append(f'<p class="note">{html.escape(item)}</p>\n')
        if in_figs:
            parts.append("</div>\n")
    parts.append("</main></body></html>\n")
    return "".join(parts)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def md_table(t: Table) -> str:
    lines = [f"### {t.title}", "", "| " + " | ".join(_md_cell(c) for c in t.columns) + " |",
             "|" + "|".join("---" for _ in t.columns) + "|"]
    lines += ["| " + " | ".join(_md_cell(cell_text(c)) for c in r) + " |" for r in t.rows]
    if t.note:
        lines += ["", f"*{t.note}*"]
    return "\n".join(lines) + "\n"


def render_markdown(title: str, subtitle: str, sections: list[Section], notes: list[str], folder: Path) -> str:
    out = [f"# {title}", "", subtitle, ""]
    if notes:
        out += ["## Checks", ""] + [f"- {n}" for n in notes] + [""]
    for s in sections:
        out += [f"## {s.title}", ""]
        if s.bullets:
            out += [f"- {i}" for i in s.items] + [""]
            continue
        for item in s.items:
            if isinstance(item, Table):
                out.append(md_table(item))
            elif isinstance(item, Figure):
                out += [f"![{item.caption}]({item.path.relative_to(folder).as_posix()})", "", f"*{item.caption}*", ""]
            else:
                out += [item, ""]
    return "\n".join(out) + "\n"


def rich_table(t: Table) -> RichTable:
    rt = RichTable(title=t.title, caption=t.note or None, caption_justify="left")
    for i, c in enumerate(t.columns):
        rt.add_column(c, justify="left" if i == 0 else "right")
    for r in t.rows:
        rt.add_row(*(cell_text(c) for c in r))
    return rt


def rich_table_from_json(t: dict[str, Any]) -> RichTable:
    """A terminal table from a table stored in summary.json (what the CLI prints)."""
    def cell(c: Any) -> Any:
        if isinstance(c, dict) and "mean" in c:
            return Stat(c["mean"], c["std"], c.get("n_values", 0), bool(c.get("integer", False)))
        return c

    return rich_table(Table(t.get("id", ""), t["title"], t["columns"], [[cell(c) for c in r] for r in t["rows"]],
                            t.get("note", "")))
