#!/usr/bin/python3
"""Checks a report directory and an OTLP export written from a hostile capture
(tests/hostile_input.rs), with Python's own parsers (nothing of retrace's):

- index.html (html.parser): no element or attribute that markup in captured strings could
  inject (script, img, iframe, on* attributes...), and every marker given on the command line
  shown as text;
- every *.csv (csv module): one header, the same number of columns in every row, and no cell
  that a spreadsheet would take for a formula (starting with = + - @ tab or CR, unless it is a
  number), that is, formula cells carry the usual `'` prefix;
- summary.json and the OTLP file (json module): valid JSON, markers found in decoded strings.

Exact strings (`--exact S`, repeatable: the hostile service names) must come back unchanged
from both JSON files, and as a CSV cell (with the `'` prefix when S starts like a formula).

Usage: check_outputs.py REPORT_DIR OTLP_JSON [--exact S]... MARKER...
Prints JSON figures on stdout; exits 1 with the failures on stderr.
"""
import csv
import glob
import html.parser
import json
import os
import sys

# Elements the report never writes itself (it has no script at all), and below, attributes.
FOREIGN_TAGS = {"script", "img", "iframe", "object", "embed", "link", "base", "form",
                "input", "video", "audio", "math"}
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

failures = []
figures = {}


def fail(msg):
    failures.append(msg)


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.text = []
        self.tags = {}
        self.svg_depth = 0

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag in FOREIGN_TAGS:
            fail(f"index.html: injected element <{tag} {attrs}>")
        for name, value in attrs:
            if name.startswith("on"):
                fail(f"index.html: event handler attribute {name}={value!r} on <{tag}>")
            if value and value.strip().lower().startswith("javascript:"):
                fail(f"index.html: javascript: URL in {name} of <{tag}>")

    def handle_data(self, data):
        self.text.append(data)


def check_html(report, markers):
    page = Page()
    with open(os.path.join(report, "index.html"), encoding="utf-8") as f:
        page.feed(f.read())
    page.close()
    text = "".join(page.text)
    shown = 0
    for m in markers:
        if m in text:
            shown += 1
        else:
            fail(f"index.html: marker {m} is not shown as text")
    # The markup around the markers survives as text (escaped, not interpreted).
    hostile = text.count("<script>") + text.count("<img") + text.count("<svg onload")
    figures["html_markers_as_text"] = shown
    figures["html_hostile_texts"] = hostile
    figures["html_elements"] = sum(page.tags.values())


def is_number(cell):
    try:
        float(cell)
        return True
    except ValueError:
        return False


def check_csvs(report, exact):
    files = sorted(glob.glob(os.path.join(report, "*.csv")))
    figures["csv_files"] = len(files)
    rows_total = cells_total = neutralised = 0
    want = {("'" + e if e.startswith(FORMULA_START) else e) for e in exact}
    seen = set()
    for path in files:
        name = os.path.basename(path)
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f, strict=True))
        if not rows:
            fail(f"{name}: empty (no header)")
            continue
        width = len(rows[0])
        for i, row in enumerate(rows, 1):
            if len(row) != width:
                fail(f"{name}: row {i} has {len(row)} columns, the header {width}")
            for cell in row:
                cells_total += 1
                if cell in want:
                    seen.add(cell)
                if cell.startswith("'") and cell[1:].startswith(FORMULA_START):
                    neutralised += 1
                elif cell.startswith(FORMULA_START) and not is_number(cell):
                    fail(f"{name}: row {i}: a spreadsheet formula cell {cell[:60]!r}")
        rows_total += len(rows)
    figures["csv_rows"] = rows_total
    figures["csv_cells"] = cells_total
    figures["csv_formula_cells_neutralised"] = neutralised
    for w in want - seen:
        fail(f"no CSV cell is {w!r}")
    figures["csv_exact"] = len(seen)


def strings(v):
    if isinstance(v, str):
        yield v
    elif isinstance(v, dict):
        for k, x in v.items():
            yield k
            yield from strings(x)
    elif isinstance(v, list):
        for x in v:
            yield from strings(x)


def check_json(path, key, markers, exact, lines=False):
    try:
        with open(path, encoding="utf-8") as f:
            docs = [json.loads(l) for l in f if l.strip()] if lines else [json.load(f)]
    except (ValueError, OSError) as e:
        fail(f"{os.path.basename(path)}: not valid JSON: {e}")
        figures[key] = 0
        return
    found = 0
    decoded = set()
    for s in (s for d in docs for s in strings(d)):
        decoded.add(s)
        if any(m in s for m in markers):
            found += 1
    figures[key] = found
    for e in exact:
        if e not in decoded:
            fail(f"{os.path.basename(path)}: {e!r} does not come back unchanged")
    figures[key + "_exact"] = sum(1 for e in exact if e in decoded)


def main():
    report, otlp, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
    exact, markers = [], []
    while rest:
        if rest[0] == "--exact":
            exact.append(rest[1])
            rest = rest[2:]
        else:
            markers.append(rest.pop(0))
    check_html(report, markers)
    check_csvs(report, exact)
    check_json(os.path.join(report, "summary.json"), "json_hostile_strings", markers, exact)
    with open(otlp, encoding="utf-8") as f:
        first = f.read(1)
    check_json(otlp, "otlp_hostile_strings", markers, exact, lines=first != "{")
    print(json.dumps(figures, sort_keys=True))
    for m in failures[:40]:
        print(m, file=sys.stderr)
    if len(failures) > 40:
        print(f"... and {len(failures) - 40} more", file=sys.stderr)
    sys.exit(1 if failures else 0)


main()
