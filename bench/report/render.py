"""Write a report: ``report.md``, a self-contained ``report.html`` (figures inlined as data URIs, no external
resources, no scripts), and every table as ``tables/NAME.csv`` (numbers in the unit the table shows, named in each
header) and ``tables/NAME.tex``."""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.report.tables import Table

MISSING = "—"


@dataclass
class FigureFile:
    name: str
    caption: str
    path: Path


@dataclass
class Section:
    title: str
    text: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[FigureFile] = field(default_factory=list)


# -- pieces shared by the formats ---------------------------------------------------------------------------------

def level_text(level: str, value: str, alpha: str = "α") -> str:
    return f"{alpha}={value}" if level == "alpha" else str(value)


def header_spans(columns: pd.MultiIndex) -> list[list[tuple[str, int]]]:
    """Per column level: (label, span) runs of equal consecutive labels (a label spans its sub-columns)."""
    spans = []
    for depth in range(columns.nlevels):
        runs: list[tuple[tuple, int]] = []
        for column in columns:
            prefix = column[: depth + 1]
            if runs and runs[-1][0] == prefix:
                runs[-1] = (prefix, runs[-1][1] + 1)
            else:
                runs.append((prefix, 1))
        spans.append([(prefix[-1], span) for prefix, span in runs])
    return spans


def cell_parts(table: Table, row: object, column: object) -> tuple[str, str | None] | None:
    """(mean, interval half-width or None) as display strings (the table's text, where given), or None for a
    missing cell."""
    if table.text is not None:
        text = table.text.at[row, column]
        return (str(text), None) if isinstance(text, str) and text else None
    mean = table.mean.at[row, column]
    half = math.nan if table.ci is None else table.ci.at[row, column]
    if pd.isna(mean):
        return None
    fmt = table.column_format(column)
    return format(mean * table.scale, fmt), None if pd.isna(half) else format(half * table.scale, fmt)


def row_blocks(table: Table) -> list[tuple[str | None, list]]:
    """Rows in order, cut into (group label or None, rows) blocks."""
    blocks: list[tuple[str | None, list]] = []
    for row in table.mean.index:
        group = None if table.groups is None else table.groups[row]
        if not blocks or blocks[-1][0] != group:
            blocks.append((group, []))
        blocks[-1][1].append(row)
    return blocks


# -- CSV ---------------------------------------------------------------------------------------------------------

def table_csv(table: Table) -> pd.DataFrame:
    """Wide CSV: ``DATASET/ALPHA[/SUB]/mean_UNIT``, ``.../std_UNIT`` and ``.../ci95_UNIT`` (half-width of the 95%
    interval) columns per table column, in the unit the table shows (``acc_pct``, ``mmacs``, ...; no suffix for a
    unitless number such as a p-value), and ``.../text`` where the table has display text; missing = empty. A table
    of text leaves out the number columns that hold no number."""
    out = pd.DataFrame(index=table.mean.index)
    if table.groups is not None:
        out["group"] = table.groups.reindex(out.index)
    for column in table.mean.columns:
        label = "/".join(str(v) for v in column)
        unit = table.unit_of(column)
        numbers = {"mean": table.mean[column], "std": table.std[column],
                   **({"ci95": table.ci[column]} if table.ci is not None else {})}
        for stat, values in numbers.items():
            if table.text is None or values.notna().any():
                out[f"{label}/{stat}_{unit}" if unit else f"{label}/{stat}"] = values * table.scale
        if table.text is not None:
            out[f"{label}/text"] = table.text[column]
    return out


# -- Markdown ----------------------------------------------------------------------------------------------------

def table_markdown(table: Table) -> str:
    levels = table.mean.columns.names
    headers = [" ".join(level_text(lv, v) for lv, v in zip(levels, column, strict=True))
               for column in table.mean.columns]
    best = table.best()
    lines = [f"| {table.mean.index.name} | " + " | ".join(headers) + " |",
             "|---|" + ("---|" if table.text is not None else "---:|") * len(headers)]  # text left, numbers right
    for group, rows in row_blocks(table):
        if group is not None:
            lines.append(f"| **{group}** |" + " |" * len(headers))
        for row in rows:
            cells = []
            for column in table.mean.columns:
                parts = cell_parts(table, row, column)
                text = MISSING if parts is None else parts[0] + ("" if parts[1] is None else f" ± {parts[1]}")
                cells.append(f"**{text}**" if parts is not None and best.at[row, column] else text)
            lines.append(f"| {str(row).replace('|', '/')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_document(title: str, intro: str, sections: list[Section]) -> str:
    parts = [f"# {title}", intro]
    for section in sections:
        parts.append(f"## {section.title}")
        if section.text:
            parts.append(section.text)
        for table in section.tables:
            parts += [f"**{table.title}** (`tables/{table.name}.csv`, `.tex`)", table_markdown(table)]
            if table.note:
                parts.append(f"*{table.note}*")
        for figure in section.figures:
            parts.append(f"![{figure.caption}](figures/{figure.path.name})\n\n*{figure.caption}*")
    return "\n\n".join(parts) + "\n"


# -- HTML --------------------------------------------------------------------------------------------------------

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0 0.3em; font-size: 0.86em; }
th, td { padding: 0.25em 0.6em; border-bottom: 1px solid #ddd; }
td { text-align: right; white-space: nowrap; }
td.row, th.row { text-align: left; }
thead th { border-bottom: 2px solid #444; text-align: center; }
tr.group th { text-align: left; font-style: italic; background: #f3f3f3; }
td.missing { color: #999; }
td.text { text-align: left; white-space: normal; min-width: 6em; max-width: 28em; }
p.note, figcaption { color: #555; font-size: 0.86em; }
.scroll { overflow-x: auto; }
img { max-width: 100%; }
figure { margin: 1em 0; }
.figures { display: flex; flex-wrap: wrap; gap: 0 2em; align-items: flex-start; }
"""


def table_html(table: Table) -> str:
    levels = list(table.mean.columns.names)
    best = table.best()
    spans = header_spans(table.mean.columns)
    head = []
    for depth, level_spans in enumerate(spans):
        first = (f'<th class="row" rowspan="{len(spans)}">{html.escape(str(table.mean.index.name))}</th>'
                 if depth == 0 else "")
        cells = "".join(f'<th colspan="{span}">{html.escape(level_text(levels[depth], label))}</th>'
                        for label, span in level_spans)
        head.append(f"<tr>{first}{cells}</tr>")
    body = []
    width = len(table.mean.columns) + 1
    for group, rows in row_blocks(table):
        if group is not None:
            body.append(f'<tr class="group"><th colspan="{width}">{html.escape(group)}</th></tr>')
        for row in rows:
            cells = [f'<td class="row">{html.escape(str(row))}</td>']
            for column in table.mean.columns:
                parts = cell_parts(table, row, column)
                if parts is None:
                    cells.append(f'<td class="missing">{MISSING}</td>')
                    continue
                text = html.escape(parts[0] + ("" if parts[1] is None else f" ± {parts[1]}"))
                kind = ' class="text"' if table.text is not None else ""
                cells.append(f"<td{kind}><b>{text}</b></td>" if best.at[row, column] else f"<td{kind}>{text}</td>")
            body.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<div class="scroll"><table id="{html.escape(table.name)}"><thead>{"".join(head)}</thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def html_document(title: str, intro: str, sections: list[Section]) -> str:
    parts = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(intro)}</p>"]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.text:
            parts.append(f"<p>{html.escape(section.text)}</p>")
        for table in section.tables:
            parts += [f"<h3>{html.escape(table.title)}</h3>", table_html(table)]
            if table.note:
                parts.append(f'<p class="note">{html.escape(table.note)}</p>')
        figures = [f'<figure><img src="{data_uri(figure.path)}" alt="{html.escape(figure.caption)}">'
                   f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>" for figure in section.figures]
        if figures:
            parts.append(f'<div class="figures">{"".join(figures)}</div>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


# -- LaTeX -------------------------------------------------------------------------------------------------------

TEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    return "".join(TEX_SPECIALS.get(ch, ch) for ch in text)


def tex_header(level: str, label: str) -> str:
    return r"$\alpha=" + label + "$" if level == "alpha" else tex_escape(str(label))


def table_tex(table: Table) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    levels = list(table.mean.columns.names)
    best = table.best()
    width = len(table.mean.columns) + 1
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{tex_escape(table.title)}}}",
             rf"\label{{tab:{table.name}}}", r"\begin{tabular}{l" + "r" * (width - 1) + "}", r"\toprule"]
    spans = header_spans(table.mean.columns)
    for depth, level_spans in enumerate(spans):
        first = tex_escape(str(table.mean.index.name)) if depth == len(spans) - 1 else ""
        cells, rules, start = [], [], 2
        for label, span in level_spans:
            text = tex_header(levels[depth], label)
            cells.append(text if span == 1 else rf"\multicolumn{{{span}}}{{c}}{{{text}}}")
            if span > 1:
                rules.append(rf"\cmidrule(lr){{{start}-{start + span - 1}}}")
            start += span
        lines.append(" & ".join([first, *cells]) + r" \\")
        lines += rules
    lines.append(r"\midrule")
    for group, rows in row_blocks(table):
        if group is not None:
            lines.append(rf"\multicolumn{{{width}}}{{l}}{{\textit{{{tex_escape(group)}}}}} \\")
        for row in rows:
            cells = [tex_escape(str(row))]
            for column in table.mean.columns:
                parts = cell_parts(table, row, column)
                if parts is None:
                    cells.append("---")
                    continue
                text = (tex_escape(parts[0]) if table.text is not None
                        else parts[0] + ("" if parts[1] is None else rf" $\pm$ {parts[1]}"))
                cells.append(rf"\textbf{{{text}}}" if best.at[row, column] else text)
            lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# -- the report --------------------------------------------------------------------------------------------------

def write_report(out_dir: Path, title: str, intro: str, sections: list[Section]) -> Path:
    """Write the report files into ``out_dir`` (figures must already be in ``out_dir/figures``); returns the
    path of ``report.html``."""
    tables_dir = out_dir / "tables"
    tables_dir.mkdir(parents=True, exist_ok=True)
    for section in sections:
        for table in section.tables:
            table_csv(table).to_csv(tables_dir / f"{table.name}.csv")
            (tables_dir / f"{table.name}.tex").write_text(table_tex(table))
    (out_dir / "report.md").write_text(markdown_document(title, intro, sections))
    path = out_dir / "report.html"
    path.write_text(html_document(title, intro, sections))
    return path
