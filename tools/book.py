"""Book tooling: list the chapters in ``_toc.yml``, execute them with papermill, keep the HTML book offline.

Run from the repository root::

    python tools/book.py notebooks            # the notebooks in _toc.yml, in book order
    python tools/book.py execute --profile cpu  # execute each one in place (atomically)
    python tools/book.py static               # MathJax 3 and the Colab badge under _build/static (served as _static)
    python tools/book.py course               # book/tables/course.csv from the stored chapters (the course page)
    python tools/book.py finish-html          # built pages: badge images -> local copies, no repeated scripts
    python tools/book.py check-html           # the built book is complete and loads nothing from the network

These commands are what ``make book`` / ``make html`` run; they are build tooling, kept out of the installed package.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MATHJAX_VERSION = "3.2.2"
# The book's own static files (``html_static_path`` in _config.yml; Sphinx copies them to _build/html/_static).
# Not a ``_static`` folder in the book root: when one exists, Jupyter Book 1 adds EVERY .js/.css file under every
# static path to every page as a <script>/<link>, which loaded all ~80 MathJax components on each page.
STATIC_DIR = Path("_build") / "static"


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
    write_course_table(root)  # the course page's run times come from the runs just stored


COURSE_TABLE = Path("book") / "tables" / "course.csv"
COURSE_COLUMNS = ("chapter", "profile", "threads", "stored run (min)", "code cells", "words", "exercises",
                  "runnable by parameters")


def _printed_config(nb: dict) -> dict[str, str]:
    """The ``key  value`` lines that :func:`medmae_nb.print_config` printed in a stored chapter."""
    for cell in nb["cells"]:
        for out in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            text = "".join(out.get("text", ""))
            if "profile" in text and "medmae_nb" in text:
                pairs = (line.split(None, 1) for line in text.splitlines() if line.strip())
                return {k: v.strip() for k, v in (p for p in pairs if len(p) == 2)}
    return {}


def course_rows(root: Path = ROOT) -> list[dict[str, str]]:
    """One row per chapter of ``_toc.yml``, read from its stored, executed notebook: the profile and threads it ran
    with (its ``print_config`` output), papermill's wall time of that run, its code cells, the words of its prose,
    its numbered exercises and those whose solution runs by changing parameters only (a ``**Run:**`` line)."""
    rows = []
    for path in toc_notebooks(root):
        nb = json.loads((root / path).read_text())
        cells = nb["cells"]
        prose = " ".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        words = len(re.sub(r"\$[^$]*\$|```.*?```|:::\{dropdown\}[^\n]*|:::", " ", prose, flags=re.S).split())
        exercises = next(("".join(c["source"]) for c in cells if "".join(c["source"]).startswith("## Exercises")), "")
        solutions = next(("".join(c["source"]) for c in cells if "".join(c["source"]).startswith("### Solutions")), "")
        runnable = [m.group(1) for m in re.finditer(r":::\{dropdown\} Solution (\d+)\n(.*?)\n:::", solutions, re.S)
                    if "**Run:**" in m.group(2)]
        config = _printed_config(nb)
        duration = nb.get("metadata", {}).get("papermill", {}).get("duration")
        title = "".join(cells[0]["source"]).splitlines()[0].lstrip("# ").split(" [![")[0].strip()
        rows.append({
            "chapter": title,
            "profile": config.get("profile", "?"),
            "threads": config.get("threads", "?"),
            "stored run (min)": "?" if duration is None else f"{duration / 60:.1f}",
            "code cells": str(sum(c["cell_type"] == "code" for c in cells)),
            "words": str(words),
            "exercises": str(len(re.findall(r"^\d+\. ", exercises, flags=re.M))),
            "runnable by parameters": ", ".join(runnable) or "none",
        })
    return rows


def course_csv(root: Path = ROOT) -> str:
    """:func:`course_rows` as the CSV text of :data:`COURSE_TABLE`."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COURSE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(course_rows(root))
    return buf.getvalue()


def write_course_table(root: Path = ROOT) -> Path:
    """Writes :data:`COURSE_TABLE` (atomically); ``make html`` and ``make book`` refresh it, a test checks it."""
    target = root / COURSE_TABLE
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(course_csv(root))
    os.replace(tmp, target)
    return target


def mathjax(root: Path = ROOT) -> Path:
    """Installs MathJax 3 from the npm registry into ``_build/static/mathjax`` (once) so the book renders math
    offline; removes the copy an older build left in ``_static/mathjax`` (see :data:`STATIC_DIR`)."""
    legacy = root / "_static"
    shutil.rmtree(legacy / "mathjax", ignore_errors=True)
    if legacy.is_dir() and not any(legacy.iterdir()):
        legacy.rmdir()
    target = root / STATIC_DIR / "mathjax"
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


# Images the chapters link to on other sites, drawn locally: the rendered book shows the local copy (``finish-html``).
# The notebooks keep the public badge, which Colab and GitHub show.
COLAB_BADGE_URL = "https://colab.research.google.com/assets/colab-badge.svg"
COLAB_BADGE_SVG = """<svg xmlns="http://www.w3.org/2000/svg" width="117" height="20" role="img"
 aria-label="Open in Colab">
<title>Open in Colab</title>
<clipPath id="r"><rect width="117" height="20" rx="3"/></clipPath>
<g clip-path="url(#r)"><rect width="117" height="20" fill="#555"/>
<rect x="70" width="47" height="20" fill="#f9ab00"/></g>
<g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11">
<text x="35" y="14">Open in</text><text x="93.5" y="14">Colab</text></g>
</svg>
"""
LOCAL_IMAGES = {COLAB_BADGE_URL: "colab-badge.svg"}


def static(root: Path = ROOT) -> Path:
    """Everything the pages load, local: MathJax (:func:`mathjax`) and the drawn images of :data:`LOCAL_IMAGES`."""
    mathjax(root)
    write_course_table(root)
    (root / STATIC_DIR / LOCAL_IMAGES[COLAB_BADGE_URL]).write_text(COLAB_BADGE_SVG)
    return root / STATIC_DIR


def html_pages(html_dir: Path) -> list[Path]:
    """The pages of a built book (Sphinx's template fragments under ``_static`` left out)."""
    return sorted(p for p in html_dir.rglob("*.html") if "_static" not in p.relative_to(html_dir).parts)


_INLINE_SCRIPT = re.compile(r"[ \t]*<script>(?:(?!</script>).)*</script>\n?", flags=re.S)


def _repeated_inline_scripts(text: str) -> list[str]:
    """The plain inline scripts of a page's head that repeat an earlier one."""
    seen: set[str] = set()
    repeated = []
    for m in _INLINE_SCRIPT.finditer(text.partition("</head>")[0]):
        body = m.group(0).strip()
        if body in seen:
            repeated.append(body)
        seen.add(body)
    return repeated


def finish_html(html_dir: Path | None = None) -> tuple[int, int]:
    """Post-build fixes of the pages, so the offline book loads cleanly.

    * ``<img>`` of :data:`LOCAL_IMAGES` point at their copies in ``_static`` (no broken image offline; the link
      around a badge still leads to Colab);
    * a repeated, identical inline ``<script>`` in the page head is dropped: this Sphinx 7.4 / Jupyter Book 1 stack
      writes the inline settings of sphinx-thebe and sphinx-togglebutton twice, and the second
      ``const THEBE_JS_URL`` is a SyntaxError on every page.

    Returns (images pointed at local copies, repeated scripts dropped).
    """
    html_dir = html_dir or ROOT / "_build" / "html"
    images = scripts = 0
    for page in html_pages(html_dir):
        text = page.read_text()
        new = text
        for url, name in LOCAL_IMAGES.items():
            local = os.path.relpath(html_dir / "_static" / name, page.parent).replace(os.sep, "/")
            images += new.count(f'src="{url}"')
            new = new.replace(f'src="{url}"', f'src="{local}"')
        seen: set[str] = set()

        def once(m: re.Match, seen: set[str] = seen) -> str:
            nonlocal scripts
            body = m.group(0).strip()
            if body in seen:
                scripts += 1
                return ""
            seen.add(body)
            return m.group(0)

        head, sep, body = new.partition("</head>")
        new = _INLINE_SCRIPT.sub(once, head) + sep + body
        if new != text:
            page.write_text(new)
    return images, scripts


# <link rel=...> values that name another page rather than a resource the browser fetches
_NAV_RELS = {"canonical", "alternate", "author", "license", "next", "prev", "index", "search", "help", "top", "up",
             "bookmark", "external", "me", "nofollow", "noopener", "noreferrer"}


def _external(url: str | None) -> bool:
    return bool(url) and url.strip().lower().startswith(("http:", "https:", "//", "ftp:"))


class _ResourceParser(HTMLParser):
    """Collects the URLs a page makes the browser fetch (scripts, stylesheets, images, media, frames) that point
    off the local book. Plain links (``<a href>``) are not fetched and are not collected."""

    ATTRS = {"script": ("src",), "img": ("src", "srcset"), "source": ("src", "srcset"), "video": ("src", "poster"),
             "audio": ("src",), "track": ("src",), "iframe": ("src",), "embed": ("src",), "object": ("data",),
             "input": ("src",), "image": ("href", "xlink:href"), "use": ("href", "xlink:href")}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.external: list[str] = []
        self.widget_outputs = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "link":
            rels = set((a.get("rel") or "").lower().split())
            if not rels <= _NAV_RELS and _external(a.get("href")):
                self.external.append(f"<link rel={a.get('rel')!r}> {a.get('href')}")
        for name in self.ATTRS.get(tag, ()):
            value = a.get(name) or ""
            # a srcset is "url size, url size"
            urls = [part.split()[0] for part in value.split(",") if part.split()] if "srcset" in name else [value]
            self.external += [f"<{tag} {name}> {u}" for u in urls if _external(u)]
        self.external += [f"<{tag} style> {u}" for u in _css_urls(a.get("style") or "")]
        if tag == "script" and "jupyter.widget" in (a.get("type") or ""):
            self.widget_outputs += 1


def external_resources(html_dir: Path) -> dict[str, list[str]]:
    """Per file (relative path), the network resources a built book would fetch: external URLs in the pages'
    scripts, stylesheets, images and media, and ``url(...)``/``@import`` of external files in its CSS."""
    found: dict[str, list[str]] = {}
    for page in html_pages(html_dir):
        parser = _ResourceParser()
        text = page.read_text(errors="replace")
        parser.feed(text)
        styles = "\n".join(re.findall(r"<style[^>]*>(.*?)</style>", text, flags=re.S | re.I))
        hits = parser.external + [f"<style> {u}" for u in _css_urls(styles)]
        if hits:
            found[str(page.relative_to(html_dir))] = hits
    for css in html_dir.rglob("*.css"):
        hits = _css_urls(css.read_text(errors="replace"))
        if hits:
            found[str(css.relative_to(html_dir))] = hits
    return found


def _css_urls(css: str) -> list[str]:
    """External URLs that CSS text fetches: ``url(...)`` and ``@import "..."``."""
    return (re.findall(r"url\(\s*['\"]?((?:https?:)?//[^)'\"\s]+)", css, flags=re.I)
            + re.findall(r"@import\s+['\"]((?:https?:)?//[^'\"]+)", css, flags=re.I))


def check_html(root: Path = ROOT) -> list[str]:
    """Problems in the built HTML book: a chapter page missing, without figures, showing a traceback or a machine
    path; any page or stylesheet that would fetch a script, stylesheet, image or font from the network (links to
    other sites are fine); a page loading more of MathJax than its entry point; a widget output, which the book
    cannot run. Returns the list (empty when all is well)."""

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
    for name, urls in external_resources(html_dir).items():
        more = f" (and {len(urls) - 3} more)" if len(urls) > 3 else ""
        problems.append(f"{name}: loads from the network: {'; '.join(urls[:3])}{more}")
    for page in html_pages(html_dir) if html_dir.is_dir() else []:
        text = page.read_text(errors="replace")
        name = page.relative_to(html_dir)
        scripts = re.findall(r"<script[^>]+src=\"[^\"]*_static/mathjax/([^\"?]+)", text)
        if len(scripts) > 1:
            problems.append(f"{name}: loads {len(scripts)} MathJax files as scripts ({', '.join(scripts[:3])} ...), "
                            "not only its entry point: is there a _static folder in the book root? (tools/book.py "
                            "mathjax removes the old copy there)")
        repeated = _repeated_inline_scripts(text)
        if repeated:
            problems.append(f"{name}: repeats {len(repeated)} inline scripts (tools/book.py finish-html drops them): "
                            f"{repeated[0][:100]}")
        parser = _ResourceParser()
        parser.feed(text)
        if parser.widget_outputs or "application/vnd.jupyter.widget-state+json" in text:
            problems.append(f"{name}: has ipywidgets output, dead in the book: strip it (tools/book.py execute does) "
                            "and let the chapter's static figure carry the message")
    return problems


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python tools/book.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("notebooks", help="print the notebooks in _toc.yml")
    ex = sub.add_parser("execute", help="execute the notebooks with papermill, in place")
    ex.add_argument("--profile", default="cpu", choices=["smoke", "cpu", "gpu"])
    ex.add_argument("--log-output", action="store_true", help="stream cell output to the terminal")
    ex.add_argument("notebooks", nargs="*", help="a subset (default: all in _toc.yml)")
    sub.add_parser("mathjax", help="fetch MathJax 3 into _build/static/mathjax")
    sub.add_parser("static", help="MathJax and the Colab badge into _build/static (the book's html_static_path)")
    sub.add_parser("course", help="write book/tables/course.csv from the stored chapters (the course page)")
    sub.add_parser("finish-html", help="built pages: external badge images -> local copies, no repeated scripts")
    sub.add_parser("check-html", help="check the built HTML book (chapters, figures, nothing loaded from the network)")
    args = parser.parse_args(argv)
    if args.cmd == "notebooks":
        print(" ".join(str(p) for p in toc_notebooks()))
    elif args.cmd == "execute":
        nbs = [Path(p) for p in args.notebooks] or toc_notebooks()
        execute(nbs, args.profile, log_output=args.log_output)
    elif args.cmd == "mathjax":
        print(mathjax())
    elif args.cmd == "static":
        print(static())
    elif args.cmd == "course":
        print(write_course_table())
    elif args.cmd == "finish-html":
        images, scripts = finish_html()
        print(f"finish-html: {images} badge images pointed at _static, {scripts} repeated inline scripts dropped")
    elif args.cmd == "check-html":
        problems = check_html()
        for p in problems:
            print("check-html:", p)
        if problems:
            raise SystemExit(1)
        print(f"check-html: {len(toc_notebooks())} chapters built, figures present, nothing loaded from the network")


if __name__ == "__main__":
    sys.exit(main())
