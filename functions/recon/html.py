"""One self-contained HTML page for a reconciliation report (external and internal): inline CSS, an inline SVG bar
chart of the categories' counts with their amounts, no script and nothing fetched from the network."""

from __future__ import annotations

from html import escape
from typing import IO, Any

from functions.shared.money import Money

_CSS = ("body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin-top:1em}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
        ".bar{fill:#3b6ea5}.zero{fill:#ccc}svg text{font-size:12px}")
_BAR_W, _ROW_H, _LABEL_W = 300, 22, 330


def _amounts_text(amounts: dict[str, int]) -> str:
    return ", ".join(f"{Money(minor, cur).to_major()} {cur}" for cur, minor in sorted(amounts.items())) or "-"


def render(out: IO[str], title: str, header: dict[str, Any], categories: dict[str, dict[str, Any]]) -> None:
    """`header`: name -> value shown above (totals); `categories`: name -> {count, amounts: {currency: minor}}."""
    rows = list(categories.items())
    top = max((int(values["count"]) for _, values in rows), default=0) or 1
    height = _ROW_H * len(rows) + 10
    out.write(f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
              f"<style>{_CSS}</style></head><body>\n<h1>{escape(title)}</h1>\n<dl id=\"totals\">\n")
    for name, value in header.items():
        out.write(f'<dt>{escape(str(name))}</dt><dd data-total="{escape(str(name))}">{escape(str(value))}</dd>\n')
    out.write(f'</dl>\n<svg xmlns="http://www.w3.org/2000/svg" width="{_LABEL_W + _BAR_W + 260}" '
              f'height="{height}" role="img" aria-label="findings per category">\n')
    for i, (name, values) in enumerate(rows):
        count, y = int(values["count"]), i * _ROW_H + 5
        width = max(1, round(_BAR_W * count / top))
        klass = "bar" if count else "zero"
        out.write(f'<text x="0" y="{y + 14}">{escape(name)}</text>'
                  f'<rect class="{klass}" x="{_LABEL_W}" y="{y}" width="{width}" height="{_ROW_H - 6}"/>'
                  f'<text x="{_LABEL_W + width + 6}" y="{y + 14}">{count} ({escape(_amounts_text(values["amounts"]))})'
                  "</text>\n")
    out.write('</svg>\n<table id="categories"><thead><tr><th>category</th><th>count</th><th>amounts</th></tr></thead>'
              "<tbody>\n")
    for name, values in rows:
        out.write(f'<tr data-category="{escape(name)}"><td>{escape(name)}</td><td class="count">{int(values["count"])}'
                  f'</td><td class="amounts">{escape(_amounts_text(values["amounts"]))}</td></tr>\n')
    out.write("</tbody></table>\n</body></html>\n")
