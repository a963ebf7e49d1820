"""Embedding a run's executed notebooks into the report's article, without Quarto.

The article (``report/index.qmd``) embeds labelled notebook cells with Quarto's shortcode
``{{< embed notebooks/NN_name.ipynb#label >}}`` (https://quarto.org/docs/authoring/notebook-embed.html).
`expand_article` replaces each shortcode by the cell's stored outputs as Markdown (a ``text/markdown``
output stays Markdown, so pipe tables reach the PDF as tables; images go to ``report/figures/``),
numbers figures and tables in order of appearance as Quarto does ("Figure N:" under a figure, "Table
N:" above a table, from the cell options ``fig-cap`` / ``tbl-cap``) and turns the cross references
``@fig-x`` / ``@tbl-x`` into "Figure N" / "Table N" links. `embedded_cells` lists what an article embeds.

Notebook conventions (what the notebooks must provide): a code cell declares Quarto cell options as
leading ``#| key: value`` comment lines (``#| label: tbl-ood-gen``, ``#| tbl-cap: "..."``); a label
starting with ``fig-`` / ``tbl-`` is a numbered figure / table, any other label (``summary``) is plain
content. Tables are ``text/markdown`` outputs (``DataFrame.to_markdown()``), figures ``image/png``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from sedlib.errors import MissingFileError, ReportError

ARTICLE = "index.qmd"  # the article, in the project's report/ folder and staged into a run directory
FIGURES_DIR = "figures"  # in OUTPUT_DIR: images the fallback extracts from the notebooks


_KINDS = {"fig": "Figure", "tbl": "Table"}


# Output MIME types in order of preference, and how each becomes Markdown.
_IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpg", "image/svg+xml": "svg"}


_MIME_PRIORITY = ("text/markdown", *_IMAGE_TYPES, "text/html", "text/plain")


#: Quarto's include shortcode (https://quarto.org/docs/authoring/includes.html): a file relative to the article.
INCLUDE_PATTERN = re.compile(r"\{\{<\s*include\s+(?P<path>[^\s>]+)\s*>\}\}")
EMBED_PATTERN = re.compile(r"\{\{<\s*embed\s+(?P<address>\"[^\"]*\"|'[^']*'|[^\s>]+)(?P<options>[^>]*?)\s*>\}\}")


CROSSREF_PATTERN = re.compile(r"(?<![\w@\\])@(?P<label>(?:fig|tbl)-[\w-]*\w)", re.IGNORECASE)


_CODE_PATTERN = re.compile(r"^(?P<fence>```+|~~~+).*?^(?P=fence)[ \t]*$|(?P<ticks>`+).+?(?P=ticks)", re.M | re.S)


_OPTION_LINE = re.compile(r"^#\|\s?(.*)$")


# Raw Typst around an embedded figure or table centres its caption, table or images in the PDF; HTML drops it.
_TYPST_CENTER_OPEN, _TYPST_CENTER_CLOSE = "```{=typst}\n#align(center)[\n```", "```{=typst}\n]\n```"


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
        stem = f"{safe_name(label)}-{images}"
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
    markdown = "\n\n".join([f"::: {{#{label} .{css_class}}}", *blocks, ":::"])
    if kind is not None:  # prose (the summary, the key findings) keeps the text's own alignment
        markdown = "\n\n".join([_TYPST_CENTER_OPEN, markdown, _TYPST_CENTER_CLOSE])
    return EmbeddedCell(notebook_ref, label, kind, number, markdown)


def safe_name(label: str) -> str:
    return re.sub(r"[^\w.-]", "_", label)


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


def embedded_cells(article: str) -> list[tuple[str, str]]:
    """The ``(notebook, cell label)`` pairs an article embeds, in order of appearance.

    Example:
        >>> embedded_cells("Text {{< embed notebooks/05_tables.ipynb#fig-summary,summary >}}")
        [('notebooks/05_tables.ipynb', 'fig-summary'), ('notebooks/05_tables.ipynb', 'summary')]
    """
    pairs = [parse_embed(match) for match in EMBED_PATTERN.finditer(split_front_matter(article)[1])]
    return [(notebook, label) for notebook, labels in pairs for label in labels]


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


def _included(run_dir: Path, relative: str) -> str:
    """The text of a file an include shortcode names (relative to the staged article)."""
    path = run_dir / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} (included by {ARTICLE}) does not exist")
    return path.read_text()


def expand_article(article: str, run_dir: Path, figures_dir: Path) -> tuple[dict, str]:
    """Expand an article's include and embed shortcodes (a file's text, a cell's Markdown); resolve references.

    Figures and tables are numbered in order of appearance, separately. Cross references are
    resolved in the article's own text and in the embedded outputs, before or after their target.

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
    body = INCLUDE_PATTERN.sub(lambda match: _included(run_dir, match["path"]), body)
    notebooks: dict[str, dict] = {}
    counters = dict.fromkeys(_KINDS.values(), 0)
    targets: dict[str, EmbeddedCell] = {}
    replacements: list[tuple[re.Match, list[EmbeddedCell]]] = []
    for match in EMBED_PATTERN.finditer(body):
        notebook_ref, labels = parse_embed(match)
        path = run_dir / notebook_ref
        if notebook_ref not in notebooks:
            if not path.is_file():
                raise MissingFileError(
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
        # generated text (the key findings) links to tables and figures embedded anywhere in the article
        pieces.append("\n\n" + "\n\n".join(replace_crossrefs(cell.markdown, targets) for cell in cells) + "\n\n")
        position = match.end()
    pieces.append(replace_crossrefs(body[position:], targets))
    return metadata, "".join(pieces)
