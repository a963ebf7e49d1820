"""The report: a run's executed notebooks rendered into a paper-style HTML page and PDF.

The report is a Quarto *manuscript* (https://quarto.org/docs/manuscripts/components.html): the project's
``report/`` folder holds the templates ``_quarto.yml`` and ``index.qmd`` (the article, plus the files it needs),
whose relative paths are valid inside a run directory ``runs/<run>/``. (The project root's own ``_quarto.yml``
only stops a ``quarto render`` there, `sedlib.report.quarto_root`: Quarto empties a manuscript's output
folder first, and at the root that folder would be ``report/``, the sources.) :func:`stage_report_sources` copies
them there, and the article pulls each labelled notebook cell's stored outputs in with Quarto's embed
shortcode ``{{< embed notebooks/NN_name.ipynb#label >}}``
(https://quarto.org/docs/authoring/notebook-embed.html). papermill executes, the report only renders:
``execute: enabled: false`` in ``_quarto.yml`` keeps Quarto from re-running anything.

Where Quarto is not installed (it installs no binary from PyPI), :func:`render_with_pandoc` renders the
same content with pandoc (``pypandoc-binary``) and Typst (``typst``): it expands every embed into
Markdown itself (`sedlib.report.embed`), then writes a self-contained HTML page and, through a Typst
source, a PDF, into a temporary folder that replaces ``report/`` only when both are complete. Page
layout options for the PDF come from ``format: typst:`` in the staged ``_quarto.yml``, so both engines
share them.

Output of a run ``runs/<run>/report/``: ``index.html`` and ``index.pdf`` (both engines); the fallback also
keeps ``index.md`` (the expanded article), ``index.typ`` and ``figures/`` for inspection
(`rendered_files`).

Example:
    >>> staged_sources()[:2]
    ['_quarto.yml', 'index.qmd']
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import yaml

from sedlib import PROJECT_ROOT
from sedlib.errors import MissingFileError
from sedlib.report.embed import ARTICLE, FIGURES_DIR, ReportError, embedded_cells, expand_article, safe_name
from sedlib.rundir.declaration import STAGE_NAMES
from sedlib.rundir.provenance import PROVENANCE_MARKDOWN
from sedlib.rundir.provenance import write_markdown as write_provenance_markdown

QUARTO_CONFIG = "_quarto.yml"


SOURCE_DIR = "report"  # in the project root: the article and the files it needs


OUTPUT_DIR = "report"  # in the run directory: the rendered report (Quarto's project output-dir)


FALLBACK_CSS = "paper.css"  # staged from report/: the fallback HTML's style sheet


ENGINES = ("auto", "quarto", "pandoc")


FORMATS = ("html", "pdf")


QUARTO_FORMATS = {"html": "html", "pdf": "typst"}


# Result folders of a run that staging must never write into.
_RUN_RESULT_DIRS = frozenset({"notebooks", "features", "models", "results", OUTPUT_DIR})


# Front-matter keys that only Quarto understands; the fallback drops them.
_QUARTO_ONLY_KEYS = frozenset({"format", "execute", "jupyter", "engine", "crossref", "filters", "project"})


def stage_report_sources(project_root: Path | str, run_dir: Path | str) -> list[Path]:
    """Copy the report templates into a run directory, where their relative paths are valid.

    Every file under ``<project_root>/report/`` goes to the same relative path under ``<run_dir>/`` (so the
    article becomes ``<run_dir>/index.qmd`` and the manuscript's configuration ``<run_dir>/_quarto.yml``).
    Staged copies are not results: they are overwritten on every render, so edit the templates in the
    project's ``report/``, never the copies.

    Args:
        project_root: the checkout holding ``report/`` (with ``_quarto.yml`` and ``index.qmd``).
        run_dir: ``runs/<run>``, holding the executed notebooks under ``notebooks/``.

    Returns:
        The staged files, ``_quarto.yml`` first.

    Raises:
        FileNotFoundError: a template or the run directory is missing.
        ReportError: a file under ``report/`` would land in one of the run's result folders.
    """
    project_root, run_dir = Path(project_root), Path(run_dir)
    source_dir = project_root / SOURCE_DIR
    config = source_dir / QUARTO_CONFIG
    for needed in (config, source_dir / ARTICLE):
        if not needed.is_file():
            raise MissingFileError(f"report template {needed} is missing; pass the project root that holds it")
    if not run_dir.is_dir():
        raise MissingFileError(f"run directory {run_dir} does not exist; run `python -m sedlib.run params/<run>.yaml`")
    sources = _report_sources(source_dir)
    for source in sources:
        relative = source.relative_to(source_dir)
        if relative.parts[0] in _RUN_RESULT_DIRS:
            raise ReportError(
                f"{source} would be staged into the run's result folder {run_dir / relative.parts[0]}; "
                f"move it out of {SOURCE_DIR}/{relative.parts[0]}/"
            )
    staged = [_copy_atomic(config, run_dir / QUARTO_CONFIG)]
    staged += [_copy_atomic(source, run_dir / source.relative_to(source_dir)) for source in sources if source != config]
    return staged


def _copy_atomic(source: Path, target: Path) -> Path:
    """Copy a file through a temporary name, so an interrupted copy never leaves half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.partial")
    shutil.copyfile(source, temporary)
    os.replace(temporary, target)
    return target


def _report_sources(source_dir: Path) -> list[Path]:
    """The files of the project's ``report/`` folder that are staged (hidden files and caches left out)."""
    return sorted(p for p in source_dir.rglob("*") if p.is_file() and not _is_hidden(p.relative_to(source_dir)))


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") or part == "__pycache__" for part in relative.parts)


def staged_sources(project_root: Path | str = PROJECT_ROOT) -> list[str]:
    """The files `stage_report_sources` puts into a run directory, relative to it (``_quarto.yml`` first)."""
    source_dir = Path(project_root) / SOURCE_DIR
    others = [p.relative_to(source_dir).as_posix() for p in _report_sources(source_dir)]
    return [QUARTO_CONFIG, *(name for name in others if name != QUARTO_CONFIG)]


def report_files() -> list[str]:
    """The files `render_report` writes into a run directory with pandoc + Typst.

    The article's sources staged beside the notebooks (``index.qmd``, ``_quarto.yml``, the files of
    the project's ``report/`` folder and the provenance it includes), and under ``report/`` the page,
    the PDF, their sources and one image per embedded figure. Quarto, when installed, writes its own
    set under ``report/``.
    """
    return [*staged_sources(), PROVENANCE_MARKDOWN, *rendered_files()]


def rendered_files(project_root: Path | str = PROJECT_ROOT) -> list[str]:
    """The files `render_with_pandoc` writes, relative to the run directory.

    The page, the PDF, their sources, and one image per figure the article embeds (`embedded_cells`).
    """
    article = (Path(project_root) / SOURCE_DIR / ARTICLE).read_text(encoding="utf-8")
    labels = [label for _, label in embedded_cells(article) if label.startswith("fig-")]
    figures = [f"{OUTPUT_DIR}/{FIGURES_DIR}/{safe_name(label)}-1.png" for label in labels]
    return [*(f"{OUTPUT_DIR}/index.{suffix}" for suffix in ("md", "html", "typ", "pdf")), *figures]


def _pandoc_metadata(metadata: Mapping) -> dict:
    """The article's front matter for pandoc: Quarto-only keys dropped, ``date: today`` resolved."""
    result = {key: value for key, value in metadata.items() if key not in _QUARTO_ONLY_KEYS}
    if str(result.get("date", "")).lower() in {"today", "now", "last-modified"}:
        result["date"] = datetime.date.today().isoformat()
    return result


def _format_options(config: Mapping, quarto_format: str) -> dict:
    """Options of one Quarto format from ``_quarto.yml``: top-level keys, then ``format: <name>:``."""
    options = {key: value for key, value in config.items() if key not in {"project", "manuscript", "format"}}
    specific = (config.get("format") or {}).get(quarto_format)
    if isinstance(specific, Mapping):
        options.update(specific)
    return options


def _typst_variables(options: Mapping, run_dir: Path) -> tuple[dict, list[str]]:
    """Pandoc metadata and arguments for the Typst writer from Quarto's ``format: typst:`` options."""
    variables = {key: options[key] for key in ("papersize", "margin", "fontsize", "mainfont") if key in options}
    if options.get("number-sections") or "section-numbering" in options:
        variables["section-numbering"] = str(options.get("section-numbering", "1.1.a"))
    args = []
    headers = options.get("include-in-header") or []
    for header in [headers] if isinstance(headers, str) else headers:
        if not isinstance(header, str):
            raise ReportError(f"{QUARTO_CONFIG}: format: typst: include-in-header must name .typ files, got {header!r}")
        path = run_dir / header
        if not path.is_file():
            raise MissingFileError(f"{path} (format: typst: include-in-header in {QUARTO_CONFIG}) is missing")
        args.append(f"--include-in-header={path}")
    return variables, args


def _document(metadata: Mapping, body: str) -> str:
    front = yaml.safe_dump(dict(metadata), sort_keys=False, allow_unicode=True, width=10**6) if metadata else ""
    return (f"---\n{front}---\n\n" if front else "") + body.strip() + "\n"


def render_with_pandoc(run_dir: Path | str, formats: Sequence[str] = FORMATS) -> dict[str, Path]:
    """Render a staged run directory with pandoc (HTML) and pandoc + Typst (PDF), without Quarto.

    Writes ``<run_dir>/report/index.md`` (the article with every embed expanded), ``figures/``,
    ``index.html`` (standalone, resources embedded), ``index.typ`` and ``index.pdf``.

    Args:
        run_dir: a run directory where :func:`stage_report_sources` put ``index.qmd`` and ``_quarto.yml``.
        formats: any of ``"html"``, ``"pdf"``.

    Returns:
        Format -> rendered file.
    """
    run_dir = Path(run_dir)
    formats = _check_formats(formats)
    article, config_path = run_dir / ARTICLE, run_dir / QUARTO_CONFIG
    for needed in (article, config_path):
        if not needed.is_file():
            raise MissingFileError(f"{needed} is missing; stage the sources with stage_report_sources first")
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    final_dir = run_dir / OUTPUT_DIR
    output_dir = run_dir / f".{OUTPUT_DIR}.partial"  # rendered here, moved onto report/ when complete
    if output_dir.exists():
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True)
    try:
        rendered = _render_pandoc_into(output_dir, run_dir, article, config, formats)
    except BaseException:
        shutil.rmtree(output_dir, ignore_errors=True)
        raise
    _replace_directory(output_dir, final_dir)
    return {name: final_dir / path.name for name, path in rendered.items()}


def _replace_directory(new: Path, final: Path) -> None:
    """Put a finished folder in place of ``final``; the old one is removed only once the new one is there."""
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)


def _render_pandoc_into(output_dir: Path, run_dir: Path, article: Path, config: Mapping, formats) -> dict[str, Path]:
    import pypandoc
    import typst

    figures_dir = output_dir / FIGURES_DIR
    metadata, body = expand_article(article.read_text(encoding="utf-8"), run_dir, figures_dir)
    metadata = _pandoc_metadata(metadata)
    if not metadata.get("title"):
        metadata["pagetitle"] = run_dir.name
    markdown = output_dir / "index.md"
    markdown.write_text(_document(metadata, body), encoding="utf-8")
    resources = f"--resource-path={output_dir}"
    rendered = {}
    if "html" in formats:
        options = _format_options(config, "html")
        # TeX math ($...$, $$...$$) as MathML, which browsers render natively: the one method that works offline
        # in a self-contained page (MathJax and KaTeX load from a CDN). _quarto.yml sets html-math-method: mathml
        # so that Quarto, whose default is MathJax, renders math the same way.
        args = ["--standalone", "--embed-resources", "--section-divs", "--mathml", resources]
        args += ["--toc", f"--toc-depth={options.get('toc-depth', 2)}"] if options.get("toc", True) else []
        args += ["--number-sections"] if options.get("number-sections") else []
        css = run_dir / FALLBACK_CSS
        args += [f"--css={css}"] if css.is_file() else []
        rendered["html"] = output_dir / "index.html"
        pypandoc.convert_file(
            str(markdown), "html5", format="markdown", outputfile=str(rendered["html"]), extra_args=args
        )
    if "pdf" in formats:
        options = _format_options(config, "typst")
        variables, args = _typst_variables(options, run_dir)
        # pipe tables wider than --columns get fixed relative widths from their dash rows, which wrap short
        # names in narrow columns; a large value leaves the widths to Typst, which sizes columns by content
        args += ["--standalone", resources, "--columns=10000"]
        args += ["--toc", f"--toc-depth={options.get('toc-depth', 2)}"] if options.get("toc", True) else []
        source = _document({**metadata, **variables}, body)
        typ, pdf = output_dir / "index.typ", output_dir / "index.pdf"
        pypandoc.convert_text(source, "typst", format="markdown", outputfile=str(typ), extra_args=args)
        try:
            typst.compile(str(typ), output=str(pdf), root=str(output_dir))
        except typst.TypstError as error:
            raise ReportError(f"Typst could not compile {typ}: {error}") from error
        rendered["pdf"] = pdf
    return rendered


def render_with_quarto(
    run_dir: Path | str, formats: Sequence[str] = FORMATS, quarto: str = "quarto"
) -> dict[str, Path]:
    """Render a staged run directory with ``quarto render`` (the manuscript project of ``_quarto.yml``).

    Quarto cleans and rewrites ``<run_dir>/report/``; the notebooks are rendered from their stored
    outputs (``execute: enabled: false``).

    Raises:
        ReportError: Quarto failed (its output is in the message) or did not write an expected file.
    """
    run_dir = Path(run_dir)
    formats = _check_formats(formats)
    command = [quarto, "render", str(run_dir)]
    if set(formats) != set(FORMATS):
        command += ["--to", ",".join(QUARTO_FORMATS[name] for name in formats)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip()[-4000:]
        raise ReportError(f"`{' '.join(command)}` failed with exit code {result.returncode}:\n{tail}")
    rendered = {name: run_dir / OUTPUT_DIR / f"index.{name}" for name in formats}
    for path in rendered.values():
        if not path.is_file():
            raise ReportError(
                f"`{' '.join(command)}` did not write {path}; check `project: output-dir` in {QUARTO_CONFIG}"
            )
    return rendered


def _check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    formats = tuple(formats)
    unknown = [name for name in formats if name not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {formats}")
    return formats


def render_report(
    run_dir: Path | str,
    project_root: Path | str | None = None,
    engine: str = "auto",
    formats: Sequence[str] = FORMATS,
) -> dict[str, Path]:
    """Stage the report sources into a run directory and render ``report/index.html`` and ``index.pdf``.

    Args:
        run_dir: ``runs/<run>`` with the executed notebooks under ``notebooks/``.
        project_root: the checkout with ``report/``; default: the project's checkout (`sedlib.PROJECT_ROOT`).
        engine: ``"auto"`` (Quarto when ``quarto`` is on the PATH, else pandoc + Typst), ``"quarto"`` or
            ``"pandoc"``.
        formats: any of ``"html"``, ``"pdf"``.

    Returns:
        Format -> rendered file, e.g. ``{"html": run_dir/report/index.html, "pdf": run_dir/report/index.pdf}``.

    Raises:
        ValueError: an unknown engine or format.
        ReportError: ``engine="quarto"`` without Quarto installed, or rendering failed (see the engines).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    formats = _check_formats(formats)
    quarto = shutil.which("quarto")
    if engine == "quarto" and quarto is None:
        raise ReportError(
            "engine='quarto' but `quarto` is not on the PATH; install Quarto (https://quarto.org/docs/get-started/) "
            "or use engine='pandoc' (pandoc + Typst from PyPI)"
        )
    run_dir = Path(run_dir)
    stage_report_sources(PROJECT_ROOT if project_root is None else project_root, run_dir)
    write_provenance_markdown(run_dir, list(STAGE_NAMES))
    if engine == "quarto" or (engine == "auto" and quarto is not None):
        return render_with_quarto(run_dir, formats, quarto)
    return render_with_pandoc(run_dir, formats)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sedlib.report runs/<run> [--engine auto|quarto|pandoc]``: render and print the files."""
    parser = argparse.ArgumentParser(prog="python -m sedlib.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="run directory, e.g. runs/default")
    parser.add_argument("--engine", choices=ENGINES, default="auto")
    parser.add_argument("--format", dest="formats", action="append", choices=FORMATS, help="repeatable; default both")
    parser.add_argument("--project-root", type=Path, default=None, help="checkout with report/ (the templates)")
    args = parser.parse_args(argv)
    try:
        rendered = render_report(args.run_dir, args.project_root, args.engine, args.formats or FORMATS)
    except (ReportError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name, path in rendered.items():
        print(f"{name}: {path}")
    return 0
