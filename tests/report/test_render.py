"""The report: templates, embed expansion, and the pandoc + Typst fallback on a tiny executed notebook."""

import base64
import io
import re
import shutil
from pathlib import Path

import nbformat
import pytest
import yaml

from sedlib.report import embed
from sedlib.report import render as report
from sedlib.report.embed import ReportError

ROOT = Path(__file__).resolve().parents[2]
ARTICLE_TEXT = (ROOT / "report" / "index.qmd").read_text()

TABLE = "| method | accuracy |\n|:-------|---------:|\n| SED    |   0.8765 |\n| DE     |   0.7000 |"

ARTICLE = """---
title: "Tiny report"
abstract: "What the report holds."
---

# Results

@tbl-acc lists the accuracy, @fig-curve the curve; see also @tbl-acc.

{{< embed notebooks/01_tiny.ipynb#fig-curve >}}

{{< embed notebooks/01_tiny.ipynb#tbl-acc >}}

{{< embed notebooks/01_tiny.ipynb#summary >}}

Code such as `@fig-none` stays as it is.
"""

CONFIG = {"project": {"type": "manuscript", "output-dir": "report"}, "execute": {"enabled": False}}


def png_bytes() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(2, 1.5), dpi=50)
    axes.plot([0, 1, 2], [0, 1, 0])
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def code_cell(source: str, outputs=()):
    cell = nbformat.v4.new_code_cell(source)
    cell.outputs = list(outputs)
    cell.execution_count = 1 if outputs else None
    return cell


def tiny_notebook(png: bytes) -> nbformat.NotebookNode:
    markdown = nbformat.v4.new_output("display_data", data={"text/markdown": TABLE, "text/plain": "table"})
    image = nbformat.v4.new_output(
        "display_data", data={"image/png": base64.b64encode(png).decode(), "text/plain": "<Figure>"}
    )
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# Tiny"),
        code_cell('#| label: tbl-acc\n#| tbl-cap: "Accuracy per method."\nshow(table)', [markdown]),
        code_cell('#| label: fig-curve\n#| fig-cap: "A curve."\nplot()', [image]),
        code_cell(
            "#| label: summary\nprint('done')",
            [nbformat.v4.new_output("stream", name="stdout", text="all done\n"), markdown],
        ),
        code_cell("#| label: tbl-empty\n#| tbl-cap: never run\nshow()"),
        code_cell(
            "#| label: fig-broken\nboom()",
            [nbformat.v4.new_output("error", ename="ValueError", evalue="bad input", traceback=[])],
        ),
        code_cell("x = 1"),
    ]
    return notebook


@pytest.fixture(scope="module")
def png() -> bytes:
    return png_bytes()


def make_project(root: Path, article: str = ARTICLE) -> Path:
    (root / "report").mkdir(parents=True)
    (root / "report" / "_quarto.yml").write_text(yaml.safe_dump(CONFIG))
    (root / "report" / "index.qmd").write_text(article)
    shutil.copy(ROOT / "report" / "paper.css", root / "report" / "paper.css")
    return root


def make_run(run_dir: Path, png: bytes) -> Path:
    (run_dir / "notebooks").mkdir(parents=True)
    nbformat.write(tiny_notebook(png), run_dir / "notebooks" / "01_tiny.ipynb")
    return run_dir


@pytest.fixture
def project(tmp_path) -> Path:
    return make_project(tmp_path / "project")


@pytest.fixture
def run_dir(tmp_path, png) -> Path:
    return make_run(tmp_path / "runs" / "tiny", png)


def expand(run_dir: Path, article: str) -> str:
    return embed.expand_article(article, run_dir, run_dir / "report" / "figures")[1]


# --- the real templates ---------------------------------------------------------------------------------


def test_real_article_embeds_cells_and_cites_each_figure_and_table():
    metadata, body = embed.split_front_matter(ARTICLE_TEXT)
    pairs = embed.embedded_cells(ARTICLE_TEXT)
    assert pairs and len(set(pairs)) == len(pairs)
    assert metadata["title"] and "abstract" not in metadata  # generated from the results, embedded first
    assert pairs[:2] == [("notebooks/05_tables.ipynb", "abstract"), ("notebooks/05_tables.ipynb", "key-findings")]
    refs = set(embed.CROSSREF_PATTERN.findall(body))
    assert refs == {label for _, label in pairs if label.startswith(("fig-", "tbl-"))}  # every one is cited
    prose = re.sub(r"\{\{<.*?>\}\}|<!--.*?-->|`[^`]*`|@\S+|C-[15]|FPR@95|95 %", "", body, flags=re.S)
    assert not re.findall(r"\d+\.\d+", prose), "numbers must come from the notebooks, not the text"


def test_real_quarto_config_is_a_manuscript_that_never_executes():
    config = yaml.safe_load((ROOT / "report" / "_quarto.yml").read_text())
    assert config["project"]["type"] == "manuscript"
    assert config["project"]["output-dir"] == report.OUTPUT_DIR
    assert config["execute"]["enabled"] is False
    assert config["manuscript"]["article"] == embed.ARTICLE
    listed = [entry["notebook"] for entry in config["manuscript"]["notebooks"]]
    assert listed == sorted({notebook for notebook, _ in embed.embedded_cells(ARTICLE_TEXT)})
    assert set(config["format"]) == {"html", "typst"}
    assert config["format"]["html"]["embed-resources"] is True
    header = config["format"]["typst"]["include-in-header"]
    assert (ROOT / "report" / header).is_file()
    assert (ROOT / "report" / report.FALLBACK_CSS).is_file()


def test_stage_copies_templates_into_the_run_and_overwrites_old_copies(tmp_path, png):
    run_dir = make_run(tmp_path / "runs" / "tiny", png)
    (run_dir / "index.qmd").write_text("stale copy")
    staged = report.stage_report_sources(ROOT, run_dir)
    assert staged[0] == run_dir / "_quarto.yml"
    assert (run_dir / "index.qmd").read_text() == (ROOT / "report" / "index.qmd").read_text()
    assert (run_dir / "typst-header.typ").is_file() and (run_dir / "paper.css").is_file()
    assert (run_dir / "notebooks" / "01_tiny.ipynb").is_file()  # results untouched


def test_stage_refuses_to_write_into_result_folders(project, run_dir):
    (project / "report" / "notebooks").mkdir()
    (project / "report" / "notebooks" / "01_tiny.ipynb").write_text("{}")
    with pytest.raises(ReportError, match="result folder"):
        report.stage_report_sources(project, run_dir)
    assert (run_dir / "notebooks" / "01_tiny.ipynb").read_text() != "{}"


# --- parsing and expansion -----------------------------------------------------------------------------


def test_cell_options_read_only_the_leading_option_lines():
    assert embed.cell_options('#| label: tbl-a\n#| tbl-cap: "A: b"\nx = 1\n#| label: no') == {
        "label": "tbl-a",
        "tbl-cap": "A: b",
    }
    assert embed.cell_options("x = 1") == {}


def test_expansion_numbers_captions_and_cross_references(run_dir):
    body = expand(run_dir, ARTICLE)
    assert "[Table 1](#tbl-acc) lists the accuracy, [Figure 1](#fig-curve) the curve; see also [Table 1]" in body
    assert "**Table 1:** Accuracy per method." in body and "**Figure 1:** A curve." in body
    assert body.index("**Table 1:**") < body.index("| SED") < body.index("all done")  # caption above table
    assert body.index("figures/fig-curve-1.png") < body.index("**Figure 1:**")  # caption under figure
    assert "`@fig-none`" in body  # code untouched
    assert "{{<" not in body
    figure = run_dir / "report" / "figures" / "fig-curve-1.png"
    assert figure.read_bytes().startswith(b"\x89PNG")
    assert "```\nall done\n```" in body  # stdout as a code block


def test_figures_and_tables_are_numbered_separately_in_order_of_appearance(run_dir, png):
    notebook = nbformat.read(run_dir / "notebooks" / "01_tiny.ipynb", as_version=4)
    extra = code_cell('#| label: fig-second\n#| fig-cap: "Second."\nplot()', notebook.cells[2].outputs)
    notebook.cells.append(extra)
    nbformat.write(notebook, run_dir / "notebooks" / "01_tiny.ipynb")
    article = (
        "@fig-second then @fig-curve\n\n{{< embed notebooks/01_tiny.ipynb#fig-curve,tbl-acc >}}\n\n"
        "{{< embed notebooks/01_tiny.ipynb#fig-second >}}\n"
    )
    body = expand(run_dir, article)
    assert body.startswith("[Figure 2](#fig-second) then [Figure 1](#fig-curve)")
    assert "**Figure 2:** Second." in body and "**Table 1:**" in body


def test_include_shortcode_inserts_the_file_before_embeds_expand(run_dir):
    (run_dir / "part.md").write_text("Included text; see @tbl-acc.\n")
    text = expand(run_dir, "{{< include part.md >}}\n\n{{< embed notebooks/01_tiny.ipynb#tbl-acc >}}\n")
    assert "Included text; see [Table 1](#tbl-acc)." in text and "{{<" not in text
    with pytest.raises(FileNotFoundError, match="missing.md .included by index.qmd. does not exist"):
        expand(run_dir, "{{< include missing.md >}}")


def test_render_writes_the_provenance_the_article_includes(project, run_dir):
    (project / "report" / "index.qmd").write_text(ARTICLE + "\n{{< include provenance.md >}}\n")
    report.render_report(run_dir, project, engine="pandoc", formats=("html",))
    assert "No provenance record" in (run_dir / "report" / "index.md").read_text()


def test_unknown_label_lists_the_labels_that_exist(run_dir):
    with pytest.raises(ReportError, match=r"no cell labelled 'fig-nope'.*'fig-curve'.*'summary'.*'tbl-acc'"):
        expand(run_dir, "{{< embed notebooks/01_tiny.ipynb#fig-nope >}}")


def test_missing_notebook_names_the_file_and_the_run_command(run_dir):
    with pytest.raises(FileNotFoundError, match=r"02_missing\.ipynb.*python -m sedlib\.run params/tiny\.yaml"):
        expand(run_dir, "{{< embed notebooks/02_missing.ipynb#tbl-acc >}}")


def test_unexecuted_cell_says_to_run_the_notebooks(run_dir):
    with pytest.raises(ReportError, match=r"'tbl-empty' has no outputs.*unexecuted.*params/tiny\.yaml"):
        expand(run_dir, "{{< embed notebooks/01_tiny.ipynb#tbl-empty >}}")


def test_error_output_fails_naming_notebook_and_cell(run_dir):
    with pytest.raises(ReportError, match=r"01_tiny\.ipynb: cell 'fig-broken'.*ValueError: bad input"):
        expand(run_dir, "{{< embed notebooks/01_tiny.ipynb#fig-broken >}}")


def test_unknown_cross_reference_is_an_error(run_dir):
    with pytest.raises(ReportError, match=r"@fig-missing names no embedded figure or table.*'fig-curve'"):
        expand(run_dir, "See @fig-missing.\n\n{{< embed notebooks/01_tiny.ipynb#fig-curve >}}")


def test_embedding_a_cell_twice_is_an_error(run_dir):
    with pytest.raises(ReportError, match="twice"):
        expand(run_dir, "{{< embed notebooks/01_tiny.ipynb#tbl-acc >}}\n{{< embed notebooks/01_tiny.ipynb#tbl-acc >}}")


# --- rendering ------------------------------------------------------------------------------------------


def test_pandoc_fallback_renders_html_and_pdf(project, run_dir):
    rendered = report.render_report(run_dir, project, engine="pandoc")
    out = run_dir / "report"
    assert rendered == {"html": out / "index.html", "pdf": out / "index.pdf"}

    html = rendered["html"].read_text()
    assert "<table" in html and "0.8765" in html
    assert "data:image/png;base64," in html  # self-contained
    assert "Table 1:" in html and "Figure 1:" in html
    assert '<a href="#tbl-acc">Table 1</a>' in html and "@tbl-acc" not in html
    assert "Tiny report" in html and "What the report holds." in html
    assert "font-family" in html  # the paper style sheet is embedded
    assert str(run_dir) not in html

    assert rendered["pdf"].read_bytes().startswith(b"%PDF")
    typ = (out / "index.typ").read_text()
    table = typ[typ.index("#table(") :]
    assert "0.8765" in table[: table.index(")]")]
    assert 'image("figures/fig-curve-1.png"' in typ
    assert "#link(<tbl-acc>)[Table 1]" in typ
    markdown = (out / "index.md").read_text()
    assert "{{<" not in markdown
    assert str(run_dir) not in typ and str(run_dir) not in markdown  # relative paths only


def test_pandoc_fallback_uses_the_typst_options_of_quarto_config(project, run_dir):
    config = dict(CONFIG, format={"typst": {"papersize": "us-letter", "include-in-header": "extra.typ"}})
    (project / "report" / "_quarto.yml").write_text(yaml.safe_dump(config))
    (project / "report" / "extra.typ").write_text("#show table: set text(size: 7pt)\n")
    rendered = report.render_report(run_dir, project, engine="pandoc", formats=("pdf",))
    assert set(rendered) == {"pdf"}
    typ = (run_dir / "report" / "index.typ").read_text()
    assert 'paper: "us-letter"' in typ and "set text(size: 7pt)" in typ
    assert not (run_dir / "report" / "index.html").exists()


def test_real_templates_render_with_the_fallback(tmp_path, png):
    run_dir = tmp_path / "runs" / "tiny"
    notebooks = {}
    for notebook, label in embed.embedded_cells(ARTICLE_TEXT):
        notebooks.setdefault(notebook, []).append(label)
    for notebook, labels in notebooks.items():
        node = tiny_notebook(png)
        table, image = node.cells[1].outputs, node.cells[2].outputs
        node.cells = [
            code_cell(f'#| label: {label}\n#| fig-cap: "Caption of {label}."\n#| tbl-cap: "Caption of {label}."', out)
            for label, out in ((label, image if label.startswith("fig-") else table) for label in labels)
        ]
        (run_dir / notebook).parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(node, run_dir / notebook)
    rendered = report.render_report(run_dir, ROOT, engine="pandoc")
    html = rendered["html"].read_text()
    figures = sum(label.startswith("fig-") for _, label in embed.embedded_cells(ARTICLE_TEXT))
    tables = sum(label.startswith("tbl-") for _, label in embed.embedded_cells(ARTICLE_TEXT))
    assert html.count("data:image/png;base64,") == figures
    assert f"Table {tables}:" in html and f"Figure {figures}:" in html
    assert f"Table {tables + 1}" not in html and f"Figure {figures + 1}" not in html
    assert 'class="header-section-number"' in html  # number-sections: true in _quarto.yml
    assert rendered["pdf"].read_bytes().startswith(b"%PDF")
    typ = (run_dir / "report" / "index.typ").read_text()
    assert 'paper: "a4"' in typ and 'sectionnumbering: "1.1"' in typ  # format: typst: in _quarto.yml
    assert "#show table: set text(size: 8pt)" in typ  # report/typst-header.typ


def test_engine_quarto_without_quarto_is_a_clear_error(project, run_dir, monkeypatch):
    monkeypatch.setattr(report.shutil, "which", lambda name: None)
    with pytest.raises(ReportError, match="quarto.*not on the PATH.*engine='pandoc'"):
        report.render_report(run_dir, project, engine="quarto")


def test_auto_engine_calls_quarto_render_when_installed(project, run_dir, monkeypatch):
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        for name in ("html", "pdf"):
            (run_dir / "report").mkdir(exist_ok=True)
            (run_dir / "report" / f"index.{name}").write_text("x")
        return report.subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(report.shutil, "which", lambda name: "/opt/quarto/bin/quarto")
    monkeypatch.setattr(report.subprocess, "run", fake_run)
    rendered = report.render_report(run_dir, project, engine="auto", formats=("pdf",))
    assert calls == [["/opt/quarto/bin/quarto", "render", str(run_dir), "--to", "typst"]]
    assert rendered == {"pdf": run_dir / "report" / "index.pdf"}


def test_cli_prints_the_output_paths(project, run_dir, capsys):
    assert report.main([str(run_dir), "--engine", "pandoc", "--project-root", str(project), "--format", "html"]) == 0
    assert capsys.readouterr().out.strip() == f"html: {run_dir / 'report' / 'index.html'}"
    assert report.main([str(run_dir / "nope"), "--engine", "pandoc", "--project-root", str(project)]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_bad_engine_and_format_are_rejected(project, run_dir):
    with pytest.raises(ValueError, match="engine"):
        report.render_report(run_dir, project, engine="latex")
    with pytest.raises(ValueError, match="formats"):
        report.render_report(run_dir, project, engine="pandoc", formats=("docx",))


# --- formulas as TeX math -------------------------------------------------------------------------------

MATH_ARTICLE = ARTICLE.replace(
    "# Results\n",
    "# Results\n\nEach sample weighs $\\alpha_n = e_n / \\bar e^{2}$, and an input scores\n"
    "$$\n\\mathrm{PDS} = \\sum_{c} \\max_{m} p_m[c] .\n$$\n",
)

MATH_SPAN = re.compile(r"\$\$.+?\$\$|\$[^$\n]+\$", re.S)  # pandoc's tex_math_dollars, as MathJax reads it too


def test_pandoc_fallback_renders_tex_math_as_mathml_and_typst_math(tmp_path, run_dir):
    project = make_project(tmp_path / "project", MATH_ARTICLE)
    rendered = report.render_report(run_dir, project, engine="pandoc")

    html = rendered["html"].read_text()
    assert html.count("<math") == 2 and '<math display="block"' in html  # MathML: no script, works offline
    assert "<mi>α</mi>" in html and "<mo>∑</mo>" in html
    assert "$" not in html  # no raw TeX left for a script that a self-contained page cannot load

    typ = (run_dir / "report" / "index.typ").read_text()
    assert re.search(r"\$alpha_n = e_n \\/ macron\(e\)\^2\$", typ)  # inline: a slash, not a fraction
    assert re.search(r"\$ upright\(P D S\) = sum_c max_m p_m \\\[ c \\\] \. \$", typ)  # display math
    assert rendered["pdf"].read_bytes().startswith(b"%PDF")


def test_real_quarto_config_renders_math_as_mathml_like_the_fallback():
    config = yaml.safe_load((ROOT / "report" / "_quarto.yml").read_text())
    assert config["format"]["html"]["html-math-method"] == "mathml"  # Quarto's default, MathJax, needs a CDN


def test_formulas_in_the_article_and_the_notebooks_markdown_are_tex_math():
    import jupytext

    texts = {"report/index.qmd": embed.split_front_matter(ARTICLE_TEXT)[1]}
    for path in sorted((ROOT / "notebooks").glob("*.py")):
        cells = jupytext.read(path).cells
        texts[path.name] = "\n\n".join(cell.source for cell in cells if cell.cell_type == "markdown")
    for name, text in texts.items():
        text = re.sub(r"^(```+|~~~+).*?^\1[ \t]*$", "", text, flags=re.M | re.S)  # code blocks
        assert "$" not in MATH_SPAN.sub("", re.sub(r"`[^`\n]+`", "", text)), f"{name}: an unpaired $"
        spans, outside = MATH_SPAN.findall(text), MATH_SPAN.sub("", text)  # code spans count as outside
        assert not re.findall(r"[α-ωΑ-Ω²³∑Σ−√≤≥≈∈]", outside), f"{name}: write formulas as TeX math, $...$"
        assert all(not re.search(r"[α-ωΑ-Ω²−]", span) for span in spans), f"{name}: Unicode in TeX math"
    assert any(r"\bar e^{2}" in text for text in texts.values())
