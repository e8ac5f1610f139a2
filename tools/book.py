"""Book tooling: list the chapters in ``_toc.yml``, execute them with papermill, fetch MathJax for offline math.

Run from the repository root::

    python tools/book.py notebooks            # the notebooks in _toc.yml, in book order
    python tools/book.py execute --profile cpu  # execute each one in place (atomically)
    python tools/book.py mathjax              # a local MathJax 3 copy under _static/mathjax

These commands are what ``make book`` runs; they are build tooling, kept out of the installed package.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MATHJAX_VERSION = "3.2.2"


def _toc_files(node: object) -> list[str]:
    files: list[str] = []
    if isinstance(node, dict):
        if "file" in node:
            files.append(str(node["file"]))
        for key in ("root",):
            if key in node:
                files.append(str(node[key]))
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key, []) or []:
                files.extend(_toc_files(child))
    return files


def toc_notebooks(root: Path = ROOT) -> list[Path]:
    """The notebooks named in ``_toc.yml``, in book order (paths relative to ``root``)."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    out = []
    for name in _toc_files(toc):
        path = Path(name if name.endswith(".ipynb") else name + ".ipynb")
        if (root / path).exists():
            out.append(path)
    return out


def repository_url(root: Path = ROOT) -> str:
    """The public repository address: the one setting ``repository.url`` in ``_config.yml``."""
    import yaml

    return str(yaml.safe_load((root / "_config.yml").read_text())["repository"]["url"]).rstrip("/")


def colab_url(notebook: str | Path, root: Path = ROOT, branch: str = "main") -> str:
    """The Open-in-Colab address of a chapter, derived from :func:`repository_url`."""
    slug = repository_url(root).split("github.com/", 1)[-1]
    return f"https://colab.research.google.com/github/{slug}/blob/{branch}/nbs/{Path(notebook).name}"


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def strip_widget_state(path: Path) -> None:
    """Removes saved widget state and widget views from an executed notebook.

    The rendered book has no kernel: a saved slider would be drawn but do nothing, with a frozen picture beside it.
    Each chapter shows a static figure that carries the explorer's message instead; the widget cell (tagged
    ``remove-output``) keeps only a plain-text note.
    """
    nb = json.loads(path.read_text())
    nb.get("metadata", {}).pop("widgets", None)
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_VIEW in data:
                out["data"] = {"text/plain": ["(an interactive explorer: run the notebook in Jupyter to use it)"]}
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def execute(notebooks: list[Path], profile: str, root: Path = ROOT, log_output: bool = False) -> None:
    """Executes each notebook with papermill in its own folder and replaces the stored copy only on success.

    The profile reaches the kernel through ``MEDMAE_PROFILE``, not as an injected parameter, so the stored notebook
    keeps ``PROFILE = None`` (automatic choice) for whoever runs it next, on Colab with a GPU for instance.
    """
    import papermill as pm

    os.environ["MEDMAE_PROFILE"] = profile
    for nb in notebooks:
        src = root / nb
        start = time.perf_counter()
        print(f"== executing {nb} (profile {profile})", flush=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{src.stem}.", suffix=".ipynb", dir=src.parent)
        os.close(fd)
        try:
            pm.execute_notebook(
                str(src), tmp, cwd=str(src.parent), kernel_name="python3",
                progress_bar=True, log_output=log_output, request_save_on_cell_execute=False,
            )
            strip_widget_state(Path(tmp))
            os.replace(tmp, src)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        print(f"== {nb}: {time.perf_counter() - start:.0f} s", flush=True)


def mathjax(root: Path = ROOT) -> Path:
    """Installs MathJax 3 from the npm registry into ``_static/mathjax`` (once) so the book renders math offline."""
    target = root / "_static" / "mathjax"
    if (target / "tex-chtml.js").exists():
        return target
    work = root / "_build" / "npm"
    work.mkdir(parents=True, exist_ok=True)
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is needed once to fetch MathJax (apt-get install npm, or install Node.js)")
    subprocess.run([npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(work),
                    f"mathjax@{MATHJAX_VERSION}"], check=True)
    tmp = target.with_name(".mathjax.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(work / "node_modules" / "mathjax" / "es5", tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def check_html(root: Path = ROOT) -> list[str]:
    """Problems in the built HTML book: a chapter page missing, without figures, showing a traceback or a machine
    path, or math served from anywhere but the local MathJax copy. Returns the list (empty when all is well)."""
    import re

    html_dir = root / "_build" / "html"
    problems = []
    if not (html_dir / "_static" / "mathjax" / "tex-chtml.js").exists():
        problems.append("_static/mathjax/tex-chtml.js missing: math would not render offline")
    for nb in toc_notebooks(root):
        page = html_dir / nb.with_suffix(".html")
        if not page.exists():
            problems.append(f"{page.relative_to(root)} was not built")
            continue
        text = page.read_text(errors="replace")
        if text.count("<img") < 3:
            problems.append(f"{page.name}: fewer than 3 figures")
        if "Traceback (most recent call last)" in text:
            problems.append(f"{page.name}: shows a traceback")
        if re.search(r"/(root|home|work|tmp)/[\w.-]+/", text):
            problems.append(f"{page.name}: shows a machine path")
        if re.search(r"<script[^>]+src=\"https?://[^\"]*mathjax", text, flags=re.I):
            problems.append(f"{page.name}: loads MathJax from the internet")
    return problems


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python tools/book.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("notebooks", help="print the notebooks in _toc.yml")
    ex = sub.add_parser("execute", help="execute the notebooks with papermill, in place")
    ex.add_argument("--profile", default="cpu", choices=["smoke", "cpu", "gpu"])
    ex.add_argument("--log-output", action="store_true", help="stream cell output to the terminal")
    ex.add_argument("notebooks", nargs="*", help="a subset (default: all in _toc.yml)")
    sub.add_parser("mathjax", help="fetch MathJax 3 into _static/mathjax")
    sub.add_parser("check-html", help="check the built HTML book (chapters, figures, local MathJax)")
    args = parser.parse_args(argv)
    if args.cmd == "notebooks":
        print(" ".join(str(p) for p in toc_notebooks()))
    elif args.cmd == "execute":
        nbs = [Path(p) for p in args.notebooks] or toc_notebooks()
        execute(nbs, args.profile, log_output=args.log_output)
    elif args.cmd == "mathjax":
        print(mathjax())
    elif args.cmd == "check-html":
        problems = check_html()
        for p in problems:
            print("check-html:", p)
        if problems:
            raise SystemExit(1)
        print(f"check-html: {len(toc_notebooks())} chapters built, figures present, MathJax local")


if __name__ == "__main__":
    sys.exit(main())
