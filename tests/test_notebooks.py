"""Every chapter in _toc.yml follows the skeleton of DESIGN.md §4 and is stored executed and clean."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tools.book import COURSE_TABLE, ROOT, colab_url, course_csv, repository_url, toc_notebooks

NOTEBOOKS = toc_notebooks()
MACHINE_PATH = re.compile(r"/(root|home|work|tmp|Users)/[\w.-]+")


def _load(path: Path) -> dict:
    return json.loads((ROOT / path).read_text())


def _src(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_toc_names_notebooks():
    assert NOTEBOOKS, "_toc.yml names no notebook"
    assert all(re.fullmatch(r"nbs/\d\d-[a-z0-9-]+\.ipynb", str(p)) for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=str)
def test_summary_opens_with_short_takeaways(path: Path):
    """A Summary opens with 3-5 takeaways in plain words (at most 200 words), then the detail."""
    summary = next(_src(c) for c in _load(path)["cells"] if _src(c).startswith("## Summary"))
    body = summary.split("\n", 1)[1].strip()
    assert body.startswith("**Takeaways**"), "the Summary opens with **Takeaways**"
    takeaways = body.split("**In detail**")[0]
    bullets = re.findall(r"^- ", takeaways, flags=re.M)
    assert 3 <= len(bullets) <= 5, f"{len(bullets)} takeaways"
    words = len(re.sub(r"\*\*Takeaways\*\*", "", takeaways).split())
    assert words <= 200, f"the takeaways run to {words} words (at most 200)"


SOLUTION = re.compile(r"^:::\{dropdown\} Solution (\d+)\n(.*?)\n:::$", flags=re.S | re.M)
RUN_LINE = re.compile(r"\*\*Run:\*\* `papermill (nbs/[\w.-]+\.ipynb) \S+\.ipynb((?: -[py] [^`]+)+)`")


def _parameters(cells: list[dict]) -> set[str]:
    cell = next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
    return set(re.findall(r"^(\w+)\s*=", _src(cell), flags=re.M))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=str)
def test_exercises_have_collapsed_solutions(path: Path):
    """Right after the exercises, one collapsed solution per exercise, in order; at least two of them run by
    changing the chapter's parameters only (a papermill command whose every -p/-y name is a parameter)."""
    cells = _load(path)["cells"]
    at = next(i for i, c in enumerate(cells) if _src(c).startswith("## Exercises"))
    n_exercises = len(re.findall(r"^\d+\. ", _src(cells[at]), flags=re.M))
    solutions = _src(cells[at + 1])
    assert cells[at + 1]["cell_type"] == "markdown" and solutions.startswith("### Solutions"), \
        "a '### Solutions' cell follows the exercises"
    found = SOLUTION.findall(solutions)
    assert [int(n) for n, _ in found] == list(range(1, n_exercises + 1)), "one dropdown 'Solution N' per exercise"
    assert all(len(body.split()) >= 25 for _, body in found), "a solution is worked, not a hint"
    params, runnable = _parameters(cells), 0
    for _, body in found:
        for nb, args in RUN_LINE.findall(body):
            assert nb == str(path), f"a Run line of {path} runs {nb}"
            names = set(re.findall(r"-p (\w+) ", args)) | set(re.findall(r"-y \"?(\w+):", args))
            assert names and names <= params, f"not parameters of {path}: {sorted(names - params)}"
            runnable += 1
    assert runnable >= 2, f"{runnable} solutions run by parameters alone (at least 2)"


def test_course_table_is_made_from_the_stored_chapters():
    """The course page's table is what `python tools/book.py course` makes from the stored notebooks now."""
    assert (ROOT / COURSE_TABLE).read_text() == course_csv(), "run `python tools/book.py course` (make html does)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=str)
def test_skeleton(path: Path):
    nb = _load(path)
    cells = nb["cells"]
    number = path.name[:2]
    title = _src(cells[0])
    assert cells[0]["cell_type"] == "markdown"
    assert re.match(rf"# {number} · \S", title), "first cell must start with '# NN · Title'"
    assert f"]({colab_url(path)})" in title, "Open-in-Colab badge pointing at the repository of _config.yml"
    assert "**Learning goals**" in title
    headings = [line for c in cells if c["cell_type"] == "markdown" for line in _src(c).splitlines()
                if line.startswith("## ")]
    order = ["## Setup", "## Parameters", "## Data", "## Summary", "## Exercises", "## References"]
    found = [h for h in headings if h in order]
    assert found == [h for h in order if h in found] and set(found) == set(order), f"section order: {headings}"

    code = [c for c in cells if c["cell_type"] == "code"]
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one code cell tagged 'parameters'"
    names = re.findall(r"^(\w+)\s*=", _src(params[0]), flags=re.M)
    assert names and all(n.isupper() for n in names), f"parameters must be UPPER_CASE: {names}"
    assert {"PROFILE", "SEED"} <= set(names)
    assert any("print_config(" in _src(c) for c in code), "imports cell calls medmae_nb.print_config()"
    setup = next(c for c in code if "%pip install" in _src(c))
    assert "except ImportError" in _src(setup), "installs only when the import fails"
    assert f"git+{repository_url()}" in _src(setup), "Setup installs from the repository of _config.yml"

    exercises = next(i for i, c in enumerate(cells) if _src(c).startswith("## Exercises"))
    items = re.findall(r"^\d+\. ", _src(cells[exercises]), flags=re.M)
    assert 3 <= len(items) <= 5, "3-5 numbered exercises"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=str)
def test_stored_executed_and_clean(path: Path):
    nb = _load(path)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code), "every code cell executed (run `make book`)"
    counts = [c["execution_count"] for c in code]
    assert counts == sorted(counts), "executed top to bottom"
    for c in code:
        assert not any(o.get("output_type") == "error" for o in c.get("outputs", []))
        text = json.dumps(c.get("outputs", []))
        assert not MACHINE_PATH.search(text), f"an output shows a machine path: {MACHINE_PATH.search(text)[0]}"
        too_long = [line for line in _src(c).splitlines() if len(line) > 88]
        assert not too_long, f"code lines over 88 columns: {too_long[:2]}"
    injected = [c for c in code if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
    assert not injected, "no injected PROFILE cell: a new user (e.g. on Colab with a GPU) keeps the automatic choice"
    config = next(c for c in code if "print_config(" in _src(c))
    printed = "".join(_src({"source": o.get("text", "")}) for o in config.get("outputs", [])
                      if o.get("output_type") == "stream")
    assert re.search(r"^profile\s+cpu$", printed, flags=re.M), "stored as executed with the cpu profile"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=str)
def test_no_dead_widgets_in_the_book(path: Path):
    """The rendered book has no kernel: no saved widget state, and widget cells hide their output."""
    nb = _load(path)
    assert "widgets" not in nb.get("metadata", {}), "saved widget state (run `python tools/book.py execute`)"
    for c in nb["cells"]:
        if c["cell_type"] != "code":
            continue
        views = [o for o in c.get("outputs", []) if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        assert not views, "a widget view is stored; tools/book.py execute strips them"
        if "widgets.interactive" in _src(c):
            assert "remove-output" in c.get("metadata", {}).get("tags", []), "widget cell must be tagged remove-output"


def test_strip_widget_state(tmp_path: Path):
    from tools.book import WIDGET_VIEW, strip_widget_state

    nb = {"metadata": {"widgets": {"state": {}}, "kernelspec": {"name": "python3"}}, "cells": [
        {"cell_type": "code", "source": "", "outputs": [
            {"output_type": "display_data", "data": {WIDGET_VIEW: {"model_id": "x"}, "text/plain": ["interactive("]}},
            {"output_type": "stream", "name": "stdout", "text": ["kept\n"]}]}]}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb))
    strip_widget_state(path)
    out = json.loads(path.read_text())
    assert out["metadata"] == {"kernelspec": {"name": "python3"}}
    view, stream = out["cells"][0]["outputs"]
    assert WIDGET_VIEW not in view["data"] and "interactive explorer" in view["data"]["text/plain"][0]
    assert stream["text"] == ["kept\n"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=str)
def test_output_checks_are_cell_tags_nbval_reads(path: Path):
    """A cell whose outputs are meant to be compared says so with a cell tag nbval reads (``nbval-check-output``…),
    not with a comment in the code the book would show; every ``nbval-`` tag is one nbval knows, and a checked cell
    has output to compare."""
    from nbval.plugin import find_metadata_tags, metadata_tags

    checked = 0
    for c in _load(path)["cells"]:
        if c["cell_type"] != "code":
            continue
        assert "NBVAL" not in _src(c), f"an nbval marker in the code (make it a cell tag): {_src(c)[:80]!r}"
        tags = c.get("metadata", {}).get("tags", [])
        unknown = [t for t in tags if t.startswith("nbval") and t not in metadata_tags]
        assert not unknown, f"tags nbval does not read: {unknown}"
        if dict(find_metadata_tags(c.get("metadata", {}))).get("check"):
            checked += 1
            assert c.get("outputs"), f"nbval-check-output cell without output: {_src(c)[:80]!r}"
    assert checked >= 3, "deterministic cells (counts, shapes, configs, cards) are compared by nbval"


HIDDEN = {"remove-cell", "remove-input"}


def _shown_text(c: dict) -> str:
    """What the rendered book shows of a cell: its source unless removed, its outputs unless the cell is."""
    tags = set(c.get("metadata", {}).get("tags", []))
    if "remove-cell" in tags:
        return ""
    shown = [] if tags & HIDDEN else [_src(c)]
    if c["cell_type"] == "code" and "remove-output" not in tags:
        for o in c.get("outputs", []):
            text = o.get("text") or o.get("data", {}).get("text/plain") or o.get("data", {}).get("text/markdown", "")
            shown.append(text if isinstance(text, str) else "".join(text))
    return "\n".join(shown)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=str)
def test_checks_written_for_ci_are_hidden_in_the_book(path: Path):
    """nbval runs the checks, the reader does not see them: no visible cell of a chapter (source or output) says
    ``assert`` or ``NBVAL``; the teach-then-use comparisons print a line instead (``viz.same``)."""
    shown = [(i, _shown_text(c)) for i, c in enumerate(_load(path)["cells"]) if c["cell_type"] == "code"]
    bad = [(i, m.group(0)) for i, t in shown for m in [re.search(r"\bassert\w*|NBVAL\w*", t)] if m]
    assert not bad, f"cells the book shows with check code (tag them remove-cell, or print with viz.same): {bad}"


def test_nbval_sanitizer_masks_timings_only():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "tools" / "nbval_sanitize.cfg")
    assert "--nbval-sanitize-with tools/nbval_sanitize.cfg" in (ROOT / "Makefile").read_text()

    def sanitize(text: str) -> str:
        for section in cfg.sections():
            text = re.sub(cfg[section]["regex"], cfg[section]["replace"], text)
        return text

    assert sanitize("made or loaded in 0.4 s") == sanitize("made or loaded in 12.0 s")
    assert sanitize("MAE p8  2 budgets x 3 seeds: 60 s") == sanitize("MAE p8  2 budgets x 3 seeds: 7 s")
    for kept in ("3 seeds", "0.675 [0.645, 0.703]", "64 px", "40 epochs", "sha256 85b3a796c947", "1109 images"):
        assert sanitize(kept) == kept
