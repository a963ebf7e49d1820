r"""The report: a run's executed notebooks rendered into a paper-style HTML page and PDF.

The report is a Quarto *manuscript* (https://quarto.org/docs/manuscripts/components.html): the project
root holds the templates ``_quarto.yml`` and ``report/index.qmd`` (the article, plus the files it needs),
whose relative paths are valid inside a run directory ``runs/<run>/``. :func:`stage_report_sources` copies
them there, and the article pulls each labelled notebook cell's stored outputs in with Quarto's embed
shortcode ``{{< embed notebooks/NN_name.ipynb#label >}}``
(https://quarto.org/docs/authoring/notebook-embed.html). papermill executes, the report only renders:
``execute: enabled: false`` in ``_quarto.yml`` keeps Quarto from re-running anything.

Where Quarto is not installed (it installs no binary from PyPI), :func:`render_with_pandoc` renders the
same content with pandoc (``pypandoc-binary``) and Typst (``typst``): it expands every embed into
Markdown itself (a ``text/markdown`` output stays Markdown, so pipe tables reach the PDF as tables; images
go to ``report/figures/``), numbers figures and tables in order of appearance as Quarto does ("Figure N:"
under a figure, "Table N:" above a table, from the cell options ``fig-cap`` / ``tbl-cap``), turns the
cross references ``@fig-x`` / ``@tbl-x`` into "Figure N" / "Table N" links, then writes a self-contained
HTML page and, through a Typst source, a PDF. Page layout options for the PDF come from
``format: typst:`` in the staged ``_quarto.yml``, so both engines share them.

Notebook conventions (what the notebooks must provide): a code cell declares Quarto cell options as
leading ``#| key: value`` comment lines (``#| label: tbl-ood-gen``, ``#| tbl-cap: "..."``,
``#| fig-cap: "..."``); a label starting with ``fig-`` / ``tbl-`` is a numbered figure / table, any other
label (``summary``) is plain content. Tables are ``text/markdown`` outputs (``DataFrame.to_markdown()``),
figures ``image/png`` outputs. :data:`EMBEDDED_CELLS` lists the cells the article embeds.

Output of a run ``runs/<run>/report/``: ``index.html`` and ``index.pdf`` (both engines); the fallback also
keeps ``index.md`` (the expanded article), ``index.typ`` and ``figures/`` for inspection.

Example:
    >>> split_front_matter("---\ntitle: T\n---\nBody\n")
    ({'title': 'T'}, 'Body\n')
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from sedlib import PROJECT_ROOT
from sedlib.errors import SedlibError

ARTICLE = "index.qmd"
QUARTO_CONFIG = "_quarto.yml"
SOURCE_DIR = "report"  # in the project root: the article and the files it needs
OUTPUT_DIR = "report"  # in the run directory: the rendered report (Quarto's project output-dir)
FIGURES_DIR = "figures"  # in OUTPUT_DIR: images the fallback extracts from the notebooks
FALLBACK_CSS = "paper.css"  # staged from report/: the fallback HTML's style sheet
ENGINES = ("auto", "quarto", "pandoc")
FORMATS = ("html", "pdf")
QUARTO_FORMATS = {"html": "html", "pdf": "typst"}

#: The (notebook, cell label) pairs that ``report/index.qmd`` embeds, in order of appearance.
EMBEDDED_CELLS: tuple[tuple[str, str], ...] = (
    ("notebooks/01_cache.ipynb", "fig-examples"),
    ("notebooks/01_cache.ipynb", "tbl-splits"),
    ("notebooks/02_train_a2d.ipynb", "tbl-models"),
    ("notebooks/02_train_a2d.ipynb", "fig-training-curves"),
    ("notebooks/02_train_a2d.ipynb", "fig-alpha"),
    ("notebooks/02_train_a2d.ipynb", "fig-alpha-gallery"),
    ("notebooks/02_train_a2d.ipynb", "tbl-alpha-classes"),
    ("notebooks/03_eval_ood_gen.ipynb", "tbl-ood-gen"),
    ("notebooks/03_eval_ood_gen.ipynb", "fig-corruptions"),
    ("notebooks/03_eval_ood_gen.ipynb", "tbl-calibration"),
    ("notebooks/04_eval_ood_det.ipynb", "tbl-ood-det"),
    ("notebooks/04_eval_ood_det.ipynb", "tbl-ood-det-all"),
    ("notebooks/04_eval_ood_det.ipynb", "tbl-diversity"),
    ("notebooks/04_eval_ood_det.ipynb", "fig-roc"),
    ("notebooks/04_eval_ood_det.ipynb", "fig-score-histograms"),
    ("notebooks/05_tables.ipynb", "published"),
    ("notebooks/05_tables.ipynb", "tbl-sweeps"),
    ("notebooks/05_tables.ipynb", "fig-sweeps"),
    ("notebooks/05_tables.ipynb", "method-comparison"),
    ("notebooks/05_tables.ipynb", "fig-summary"),
    ("notebooks/05_tables.ipynb", "summary"),
)

# Result folders of a run that staging must never write into.
_RUN_RESULT_DIRS = frozenset({"notebooks", "features", "models", "results", OUTPUT_DIR})
_KINDS = {"fig": "Figure", "tbl": "Table"}
# Output MIME types in order of preference, and how each becomes Markdown.
_IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpg", "image/svg+xml": "svg"}
_MIME_PRIORITY = ("text/markdown", *_IMAGE_TYPES, "text/html", "text/plain")
# Front-matter keys that only Quarto understands; the fallback drops them.
_QUARTO_ONLY_KEYS = frozenset({"format", "execute", "jupyter", "engine", "crossref", "filters", "project"})

EMBED_PATTERN = re.compile(r"\{\{<\s*embed\s+(?P<address>\"[^\"]*\"|'[^']*'|[^\s>]+)(?P<options>[^>]*?)\s*>\}\}")
CROSSREF_PATTERN = re.compile(r"(?<![\w@\\])@(?P<label>(?:fig|tbl)-[\w-]*\w)", re.IGNORECASE)
_CODE_PATTERN = re.compile(r"^(?P<fence>```+|~~~+).*?^(?P=fence)[ \t]*$|(?P<ticks>`+).+?(?P=ticks)", re.M | re.S)
_OPTION_LINE = re.compile(r"^#\|\s?(.*)$")
# Raw Typst around an embedded cell centres its caption, table or images in the PDF; HTML drops it.
_TYPST_CENTER_OPEN, _TYPST_CENTER_CLOSE = "```{=typst}\n#align(center)[\n```", "```{=typst}\n]\n```"


class ReportError(SedlibError, RuntimeError):
    """The report cannot be rendered from what the run directory holds; the message says why."""


@dataclass(frozen=True)
class EmbeddedCell:
    """One embedded cell, resolved: its Markdown and, for figures and tables, its number.

    Attributes:
        notebook: the notebook path as written in the shortcode (relative to the run directory).
        label: the cell label.
        kind: ``"Figure"``, ``"Table"`` or ``None`` (plain content).
        number: 1-based number among the figures or tables; 0 for plain content.
        markdown: the block that replaces the shortcode.
    """

    notebook: str
    label: str
    kind: str | None
    number: int
    markdown: str


# --- staging -----------------------------------------------------------------------------------------


def stage_report_sources(project_root: Path | str, run_dir: Path | str) -> list[Path]:
    """Copy the report templates into a run directory, where their relative paths are valid.

    ``<project_root>/_quarto.yml`` goes to ``<run_dir>/_quarto.yml`` and every file under
    ``<project_root>/report/`` to the same relative path under ``<run_dir>/`` (so the article becomes
    ``<run_dir>/index.qmd``). Staged copies are not results: they are overwritten on every render, so
    edit the templates in the project root, never the copies.

    Args:
        project_root: the checkout holding ``_quarto.yml`` and ``report/``.
        run_dir: ``runs/<run>``, holding the executed notebooks under ``notebooks/``.

    Returns:
        The staged files, ``_quarto.yml`` first.

    Raises:
        FileNotFoundError: a template or the run directory is missing.
        ReportError: a file under ``report/`` would land in one of the run's result folders.
    """
    project_root, run_dir = Path(project_root), Path(run_dir)
    config, source_dir = project_root / QUARTO_CONFIG, project_root / SOURCE_DIR
    for needed in (config, source_dir / ARTICLE):
        if not needed.is_file():
            raise FileNotFoundError(f"report template {needed} is missing; pass the project root that holds it")
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist; run `python -m sedlib.run params/<run>.yaml`")
    sources = _report_sources(source_dir)
    for source in sources:
        relative = source.relative_to(source_dir)
        if relative.parts[0] in _RUN_RESULT_DIRS:
            raise ReportError(
                f"{source} would be staged into the run's result folder {run_dir / relative.parts[0]}; "
                f"move it out of {SOURCE_DIR}/{relative.parts[0]}/"
            )
    staged = [_copy_atomic(config, run_dir / QUARTO_CONFIG)]
    staged += [_copy_atomic(source, run_dir / source.relative_to(source_dir)) for source in sources]
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
    return [QUARTO_CONFIG, *(p.relative_to(source_dir).as_posix() for p in _report_sources(source_dir))]


def rendered_files() -> list[str]:
    """The files `render_with_pandoc` writes, relative to the run directory.

    The page, the PDF, their sources, and one image per embedded figure (`EMBEDDED_CELLS`).
    """
    labels = [label for _, label in EMBEDDED_CELLS if label.startswith("fig-")]
    figures = [f"{OUTPUT_DIR}/{FIGURES_DIR}/{_safe_name(label)}-1.png" for label in labels]
    return [*(f"{OUTPUT_DIR}/index.{suffix}" for suffix in ("md", "html", "typ", "pdf")), *figures]


# --- parsing the article and the notebooks ------------------------------------------------------------


def split_front_matter(text: str) -> tuple[dict, str]:
    """Split a ``.qmd`` into its YAML front matter (``{}`` if none) and its Markdown body."""
    match = re.match(r"---[ \t]*\r?\n(.*?)\r?\n(?:---|\.\.\.)[ \t]*(?:\r?\n|$)", text, re.S)
    if not match:
        return {}, text
    metadata = yaml.safe_load(match.group(1)) or {}
    if not isinstance(metadata, dict):
        raise ReportError(f"the front matter must be a YAML mapping, got {type(metadata).__name__}")
    return metadata, text[match.end() :]


def cell_options(source: str) -> dict:
    r"""Quarto cell options from the leading ``#| key: value`` lines of a code cell's source.

    Example:
        >>> cell_options('#| label: fig-roc\n#| fig-cap: "ROC curves"\nplot()')
        {'label': 'fig-roc', 'fig-cap': 'ROC curves'}
    """
    lines = []
    for line in source.splitlines():
        match = _OPTION_LINE.match(line)
        if not match:
            break
        lines.append(match.group(1))
    options = yaml.safe_load("\n".join(lines)) if lines else None
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ValueError(f"cell options must be `#| key: value` lines, got {lines!r}")
    return options


def load_notebook(path: Path) -> dict:
    """Read an executed notebook (nbformat 4 JSON) without validating or changing it."""
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ReportError(f"{path} is not a notebook ({error}); rerun the notebook that writes it") from error
    if notebook.get("nbformat") != 4:
        raise ReportError(f"{path} has nbformat {notebook.get('nbformat')!r}; the report reads nbformat 4")
    return notebook


def _text(value: str | list[str]) -> str:
    """Notebook JSON stores multi-line strings as a string or a list of lines."""
    return value if isinstance(value, str) else "".join(value)


def labelled_cells(notebook: Mapping, path: Path | str = "notebook") -> dict[str, tuple[dict, dict]]:
    """Map each cell label of a notebook to ``(cell, options)``.

    Raises:
        ReportError: a cell's options are not valid YAML, or two cells share a label.
    """
    cells: dict[str, tuple[dict, dict]] = {}
    for index, cell in enumerate(notebook.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        try:
            options = cell_options(_text(cell.get("source", "")))
        except (yaml.YAMLError, ValueError) as error:
            raise ReportError(f"{path}: cell {index} has unreadable `#|` options: {error}") from error
        label = options.get("label")
        if label is None:
            continue
        label = str(label)
        if label in cells:
            raise ReportError(f"{path}: two cells are labelled {label!r}; labels must be unique in a notebook")
        cells[label] = (cell, options)
    return cells


# --- turning cell outputs into Markdown ---------------------------------------------------------------


def _fenced(text: str) -> str:
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return f"{fence}\n{text.rstrip()}\n{fence}"


def _html_to_markdown(html: str) -> str:
    import pypandoc

    html = re.sub(r"<(style|script)\b.*?</\1>", "", html, flags=re.S | re.I)
    return pypandoc.convert_text(
        html, "markdown-raw_html-raw_attribute-native_divs-native_spans-fenced_divs-bracketed_spans", format="html"
    )


def _preferred_mime(data: Mapping) -> str | None:
    return next((mime for mime in _MIME_PRIORITY if mime in data), None)


def output_markdown(output: Mapping, image_path: Path, image_link: str) -> str | None:
    """Markdown for one cell output, or ``None`` for output the report leaves out (stderr).

    ``text/markdown`` is inserted as is; an image is written to ``image_path`` (its suffix replaced
    by the image type's) and linked as ``image_link``; ``text/html`` is converted to Markdown; plain text
    and stdout become fenced code blocks.

    Args:
        output: one entry of a code cell's ``outputs``.
        image_path: where to write an image output, without its final suffix.
        image_link: the same file relative to the Markdown document, without suffix.

    Raises:
        ReportError: an ``error`` output (the caller adds the notebook and cell), or no known type.
    """
    kind = output.get("output_type")
    if kind == "error":
        raise ReportError(f"it raised {output.get('ename')}: {output.get('evalue')}")
    if kind == "stream":
        return _fenced(_text(output.get("text", ""))) if output.get("name") == "stdout" else None
    data = output.get("data", {})
    mime = _preferred_mime(data)
    if mime is None:
        raise ReportError(f"an output has no type the report can show (types: {sorted(data)})")
    value = _text(data[mime])
    if mime == "text/markdown":
        return value.strip()
    if mime in _IMAGE_TYPES:
        suffix = _IMAGE_TYPES[mime]
        target = image_path.with_name(f"{image_path.name}.{suffix}")
        target.parent.mkdir(parents=True, exist_ok=True)
        if mime == "image/svg+xml":
            target.write_text(value, encoding="utf-8")
        else:
            target.write_bytes(base64.b64decode(value))
        return f"![]({image_link}.{suffix})"
    if mime == "text/html":
        return _html_to_markdown(value).strip()
    return _fenced(value)


def _caption(options: Mapping, prefix: str | None) -> str | None:
    keys = [f"{prefix}-cap"] if prefix in _KINDS else ["fig-cap", "tbl-cap"]
    caption = next((options[key] for key in keys if options.get(key) is not None), None)
    if isinstance(caption, list):
        caption = " ".join(str(part) for part in caption)
    return None if caption is None else str(caption).strip()


def embed_cell(
    notebook_path: Path,
    notebook_ref: str,
    label: str,
    cells: Mapping[str, tuple[dict, dict]],
    number: int,
    figures_dir: Path,
    run_name: str,
) -> EmbeddedCell:
    """The Markdown block for one labelled cell: its outputs, wrapped with a numbered caption.

    Args:
        notebook_path: the notebook file (for messages).
        notebook_ref: the notebook as written in the shortcode.
        label: the cell label.
        cells: :func:`labelled_cells` of that notebook.
        number: this cell's number among figures or tables (ignored for plain content).
        figures_dir: the folder images are written to, ``<run>/report/figures``.
        run_name: the run's name, for the message of an unexecuted notebook.

    Raises:
        ReportError: the label does not exist (the message lists those that do), the cell has no
            outputs (the notebook was not executed), or it raised an error.
    """
    if label not in cells:
        raise ReportError(
            f"{notebook_path} has no cell labelled {label!r}; its labels are {sorted(cells) or 'none'}. "
            f"Add `#| label: {label}` to the cell, or fix the embed in {ARTICLE}"
        )
    cell, options = cells[label]
    outputs = cell.get("outputs", [])
    if not outputs:
        raise ReportError(
            f"{notebook_path}: cell {label!r} has no outputs, so the notebook looks unexecuted; "
            f"run `python -m sedlib.run params/{run_name}.yaml` first"
        )
    parts = []
    images = 0
    for output in outputs:
        images += _preferred_mime(output.get("data", {})) in _IMAGE_TYPES
        stem = f"{_safe_name(label)}-{images}"
        try:
            markdown = output_markdown(output, figures_dir / stem, f"{FIGURES_DIR}/{stem}")
        except ReportError as error:
            raise ReportError(f"{notebook_path}: cell {label!r}: {error}; fix the notebook and rerun it") from error
        if markdown:
            parts.append(markdown)
    if not parts:
        raise ReportError(f"{notebook_path}: cell {label!r} has only stderr output, nothing to show in the report")
    prefix = label.split("-", 1)[0].lower() if "-" in label else None
    kind = _KINDS.get(prefix)
    caption = _caption(options, prefix)
    body = "\n\n".join(parts)
    if kind is None:
        heading = [f"*{caption}*"] if caption else []
        blocks, css_class, number = [*heading, body], "sed-embed", 0
    else:
        caption_line = f"**{kind} {number}:** {caption}" if caption else f"**{kind} {number}**"
        blocks = [caption_line, body] if kind == "Table" else [body, caption_line]
        css_class = f"sed-{prefix}"
    markdown = "\n\n".join([_TYPST_CENTER_OPEN, f"::: {{#{label} .{css_class}}}", *blocks, ":::", _TYPST_CENTER_CLOSE])
    return EmbeddedCell(notebook_ref, label, kind, number, markdown)


def _safe_name(label: str) -> str:
    return re.sub(r"[^\w.-]", "_", label)


# --- expanding the article ----------------------------------------------------------------------------


def parse_embed(match: re.Match) -> tuple[str, list[str]]:
    """``(notebook, labels)`` of an embed shortcode match; several labels may be comma-separated."""
    address = match.group("address").strip("\"'")
    if match.group("options").strip():
        raise ReportError(
            f"embed options {match.group('options').strip()!r} in {match.group(0)!r} are not supported by the "
            "pandoc fallback; drop them from the article"
        )
    notebook, sep, labels = address.partition("#")
    if not sep or not labels:
        raise ReportError(f"{match.group(0)!r} embeds a whole notebook; name a cell with `notebook.ipynb#label`")
    return notebook, [label.strip() for label in labels.split(",") if label.strip()]


def replace_crossrefs(text: str, targets: Mapping[str, EmbeddedCell]) -> str:
    """Replace ``@fig-x`` / ``@tbl-x`` outside code by a link "Figure N" / "Table N" to the embed.

    Raises:
        ReportError: a reference names no embedded figure or table (the message lists those that exist).
    """

    def substitute(match: re.Match) -> str:
        label = match.group("label")
        target = targets.get(label) or targets.get(label[0].lower() + label[1:])
        if target is None or target.kind is None:
            known = sorted(name for name, cell in targets.items() if cell.kind)
            raise ReportError(f"cross reference @{label} names no embedded figure or table; they are {known}")
        return f"[{target.kind} {target.number}](#{target.label})"

    pieces, position = [], 0
    for code in _CODE_PATTERN.finditer(text):
        pieces.append(CROSSREF_PATTERN.sub(substitute, text[position : code.start()]))
        pieces.append(code.group(0))
        position = code.end()
    pieces.append(CROSSREF_PATTERN.sub(substitute, text[position:]))
    return "".join(pieces)


def expand_article(article: str, run_dir: Path, figures_dir: Path) -> tuple[dict, str]:
    """Replace every embed shortcode of an article by the cell's Markdown, and resolve cross references.

    Figures and tables are numbered in order of appearance, separately. Cross references are
    resolved in the article's own text, not inside the embedded outputs.

    Args:
        article: the ``.qmd`` text.
        run_dir: the run directory that embed paths are relative to.
        figures_dir: where images are written.

    Returns:
        The front matter and the expanded Markdown body.

    Raises:
        FileNotFoundError: an embedded notebook is missing.
        ReportError: see :func:`embed_cell`, :func:`replace_crossrefs`; or a cell is embedded twice.
    """
    metadata, body = split_front_matter(article)
    notebooks: dict[str, dict] = {}
    counters = dict.fromkeys(_KINDS.values(), 0)
    targets: dict[str, EmbeddedCell] = {}
    replacements: list[tuple[re.Match, list[EmbeddedCell]]] = []
    for match in EMBED_PATTERN.finditer(body):
        notebook_ref, labels = parse_embed(match)
        path = run_dir / notebook_ref
        if notebook_ref not in notebooks:
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} (embedded by {ARTICLE}) does not exist; "
                    f"run `python -m sedlib.run params/{run_dir.name}.yaml` to execute the notebooks"
                )
            notebooks[notebook_ref] = labelled_cells(load_notebook(path), path)
        embedded = []
        for label in labels:
            if label in targets:
                raise ReportError(f"{ARTICLE} embeds cell {label!r} twice; embed each cell once")
            prefix = label.split("-", 1)[0].lower() if "-" in label else None
            kind = _KINDS.get(prefix)
            number = counters[kind] + 1 if kind else 0
            cell = embed_cell(path, notebook_ref, label, notebooks[notebook_ref], number, figures_dir, run_dir.name)
            if kind:
                counters[kind] = number
            targets[label] = cell
            embedded.append(cell)
        replacements.append((match, embedded))
    pieces, position = [], 0
    for match, cells in replacements:
        pieces.append(replace_crossrefs(body[position : match.start()], targets))
        pieces.append("\n\n" + "\n\n".join(cell.markdown for cell in cells) + "\n\n")
        position = match.end()
    pieces.append(replace_crossrefs(body[position:], targets))
    return metadata, "".join(pieces)


# --- rendering ----------------------------------------------------------------------------------------


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
            raise FileNotFoundError(f"{path} (format: typst: include-in-header in {QUARTO_CONFIG}) is missing")
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
            raise FileNotFoundError(f"{needed} is missing; stage the sources with stage_report_sources first")
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
        args = ["--standalone", "--embed-resources", "--section-divs", resources]
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
        args += ["--standalone", resources]
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
        project_root: the checkout with ``_quarto.yml`` and ``report/``; default: this package's checkout.
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
    if engine == "quarto" or (engine == "auto" and quarto is not None):
        return render_with_quarto(run_dir, formats, quarto)
    return render_with_pandoc(run_dir, formats)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sedlib.report runs/<run> [--engine auto|quarto|pandoc]``: render and print the files."""
    parser = argparse.ArgumentParser(prog="python -m sedlib.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="run directory, e.g. runs/default")
    parser.add_argument("--engine", choices=ENGINES, default="auto")
    parser.add_argument("--format", dest="formats", action="append", choices=FORMATS, help="repeatable; default both")
    parser.add_argument("--project-root", type=Path, default=None, help="checkout with _quarto.yml and report/")
    args = parser.parse_args(argv)
    try:
        rendered = render_report(args.run_dir, args.project_root, args.engine, args.formats or FORMATS)
    except (ReportError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name, path in rendered.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
