"""The README and the pages of docs/ name only what exists.

Every page is ``README.md`` and each ``docs/*.md``. The rules:

1. Links. Every Markdown link or image, ``[text](target)`` or ``![alt](target)``, whose target is not a
   URL (``http:``, ``https:``, ``mailto:``) names a file or folder that exists, relative to the page, inside
   the repository. A ``#anchor`` is cut off first; an anchor into a Markdown page (or within the page) must
   be one of its headings, by GitHub's slugs.
2. Paths. Code is read for the repository's paths:

   * an inline code span of one word that contains a ``/`` is a path (``params/default.yaml``,
     ``sedlib/data/wnids/``, ``results/bench/cpu-2-threads.csv``);
   * an inline code span with spaces, quotes, brackets, commas or ``=`` is a command or code, as is a
     fenced code block; split at those characters, a word of it that starts with a top-level folder of the
     repository and a ``/`` (``params/...``, ``notebooks/...``) is a path.

   A path exists relative to the project root, or is a file or folder that a run directory holds by the
   declaration in `sedlib.rundir.declaration` (``results/ood_gen.csv``, ``models/overview.csv``,
   ``report/index.html``, ``results/figures/``). Not paths: a word with a placeholder or pattern character
   (``<``, ``>``, ``*``, ``{``, ``}``, ``$``, ``|``, ``…``), URLs and absolute paths, and what exists only
   at run time or on the user's machine: ``runs/...`` and ``data/...``. Inline code that is the text of a
   link to a URL names a file elsewhere (another repository) and is not checked. A bare file name without
   a ``/`` (``sed.json``, ``artefacts.json``) is not checked: link the file to have it checked.
3. Modules. Every dotted name ``sedlib.x.y`` in code resolves: the longest prefix that importlib finds is a
   module (`importlib.util.find_spec`), the rest are attributes (``sedlib.method.losses.sed_pair_loss``), so the
   pages follow the package layout.
4. Nothing refers outside the repository: every Markdown file a page names anywhere, in prose or code,
   is one of the repository's (by name) or one a run directory holds, and no link climbs out of the
   repository (rule 1).
5. The README stays a front door of at most 200 lines, and the example of ``docs/library.md`` runs.
"""

import contextlib
import importlib
import importlib.util
import io
import re
from functools import cache
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200
MARKDOWN_NAME = re.compile(r"(?<![\w.-])[\w.-]+\.md\b")
RUN_TIME = ("runs/", "data/")
NOT_A_PATH = re.compile(r"[<>*{}$|…]|^[a-z][a-z0-9+.-]*://|^/|^~")
URL = re.compile(r"^(?:https?|mailto):", re.IGNORECASE)

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})[^\n]*\n(.*?)^ {0,3}\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)
LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
URL_LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*(?:https?|mailto):[^)]*\)", re.IGNORECASE)
DISPLAY_MATH = re.compile(r"\$\$.*?\$\$", re.DOTALL)
INLINE_MATH = re.compile(r"\$[^$\n]+\$")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
DOTTED = re.compile(r"(?<![\w.])sedlib(?:\.[A-Za-z_]\w*)+")
CODE_CHARACTERS = re.compile(r"[\s\"'`()\[\],;=]+")  # a span with one is a command or code; they separate its words


def _name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _without_fences(text: str) -> str:
    return FENCE.sub("", text)


def _prose(text: str) -> str:
    """The page without code and math, where links and headings are read."""
    text = INLINE_CODE.sub("code", _without_fences(text))
    return INLINE_MATH.sub("math", DISPLAY_MATH.sub("math", text))


def _code(text: str) -> tuple[list[str], list[str]]:
    """(one-word inline code spans, words of commands and code blocks); code that is a link to a URL left out."""
    blocks = [match.group(2) for match in FENCE.finditer(text)]
    rest = URL_LINK.sub("", _without_fences(text))
    spans = [match.group(2).strip() for match in INLINE_CODE.finditer(rest)]
    tokens = [span for span in spans if not CODE_CHARACTERS.search(span)]
    commands = [span for span in spans if CODE_CHARACTERS.search(span)] + blocks
    return tokens, [word for command in commands for word in CODE_CHARACTERS.split(command) if word]


@cache
def _top_level_folders() -> tuple[str, ...]:
    folders = (f"{entry.name}/" for entry in ROOT.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    return tuple(sorted(folder for folder in folders if folder not in RUN_TIME))


def _paths(text: str) -> list[str]:
    tokens, words = _code(text)
    candidates = [token for token in tokens if "/" in token]
    candidates += [word for word in words if word.startswith(_top_level_folders())]
    paths = []
    for candidate in candidates:
        candidate = candidate.split("#")[0].rstrip(".")
        if NOT_A_PATH.search(candidate) or candidate.startswith(RUN_TIME) or not candidate.strip("/"):
            continue
        paths.append(candidate)
    return paths


@cache
def _run_directory() -> tuple[set[str], set[str]]:
    """The fixed file names and the folders of a run directory, from its declaration."""
    from sedlib.report import render as report
    from sedlib.rundir import declaration as stages

    files = {*stages.BOOKKEEPING, *report.report_files()}
    templates = [artefact.template for artefact in stages.ARTEFACTS.values()] + [stages.record_path("x"), *files]
    folders = {f"{parent}/" for template in templates for parent in map(str, PurePosixPath(template).parents)}
    return files, folders - {"./"}


def _in_run_directory(path: str) -> bool:
    from sedlib.rundir.declaration import owner

    files, folders = _run_directory()
    return path in files or path in folders or owner(path) is not None


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        module_name = ".".join(parts[:end])
        try:
            found = importlib.util.find_spec(module_name) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            value = importlib.import_module(module_name)
            for attribute in parts[end:]:
                if not hasattr(value, attribute):
                    return False
                value = getattr(value, attribute)
            return True
    return False


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text, lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


@cache
def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for match in HEADING.finditer(_without_fences(page.read_text())):
        slug = _slug(match.group(2))
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _link_problems(page: Path, text: str | None = None) -> list[str]:
    problems = []
    for match in LINK.finditer(_prose(page.read_text() if text is None else text)):
        target = match.group(2)
        if URL.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.is_relative_to(ROOT):
            problems.append(f"{_name(page)}: link {target!r} leaves the repository")
        elif not linked.exists():
            problems.append(f"{_name(page)}: link {target!r}: no such file or folder")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            problems.append(f"{_name(page)}: link {target!r}: no heading with that anchor in {_name(linked)}")
    return problems


def _path_problems(page: Path, text: str | None = None) -> list[str]:
    return [
        f"{_name(page)}: `{path}`: not in the repository, nor a file of a run directory"
        for path in _paths(page.read_text() if text is None else text)
        if not (ROOT / path).exists() and not _in_run_directory(path)
    ]


@cache
def _markdown_names() -> set[str]:
    """The names of the repository's Markdown files and of those a run directory holds (its declaration)."""
    from sedlib.rundir.declaration import ARTEFACTS, TABLES

    names = {path.name for path in ROOT.rglob("*.md") if not path.relative_to(ROOT).parts[0].startswith((".", "runs"))}
    names |= {PurePosixPath(artefact.template).name for artefact in ARTEFACTS.values()}
    return names | {f"{table}.md" for table in TABLES}


def _outside_problems(page: Path, text: str | None = None) -> list[str]:
    named = {match.group(0) for match in MARKDOWN_NAME.finditer(page.read_text() if text is None else text)}
    unknown = sorted(named - _markdown_names())
    return [f"{_name(page)}: {name} is no Markdown file of the repository" for name in unknown]


def _module_problems(page: Path, text: str | None = None) -> list[str]:
    tokens, words = _code(page.read_text() if text is None else text)
    names = {match.group(0) for text in tokens + words for match in DOTTED.finditer(text)}
    return [f"{_name(page)}: `{name}` does not resolve" for name in sorted(names) if not _resolves(name)]


def test_pages_exist():
    names = {_name(page) for page in PAGES}
    assert {"README.md", "docs/design.md", "docs/library.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_relative_links_exist(page):
    assert _link_problems(page) == []


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_named_paths_exist(page):
    assert _path_problems(page) == []


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_named_modules_resolve(page):
    assert _module_problems(page) == []


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_nothing_outside_the_repository(page):
    assert _outside_problems(page) == []


def test_readme_is_a_front_door():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move details to docs/"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {match.group(2).partition("#")[0] for match in LINK.finditer(_prose((ROOT / "README.md").read_text()))}
    assert sorted(_name(page) for page in PAGES[1:] if _name(page) not in linked) == []


def test_the_checks_catch_what_they_are_for():
    page = ROOT / "docs" / "broken.md"  # never written: the checks read the text below as this page's
    text = (
        "[missing](no-such-page.md) [anchor](design.md#no-such-heading) [fine](design.md#data-flow)\n"
        "[outside](../../elsewhere.md) [web](https://example.org/x.md) [`scripts/x.py`](https://example.org)\n"
        "`params/no_such.yaml` `runs/<run>/x.csv` `results/evaluations.h5` `sedlib.method.losses.no_such_function`\n"
        "```bash\npython -m sedlib.no_such_module params/default.yaml notebooks/missing.py\n```\n"
    )
    assert [problem.split(": ", 1)[1] for problem in _link_problems(page, text)] == [
        "link 'no-such-page.md': no such file or folder",
        "link 'design.md#no-such-heading': no heading with that anchor in docs/design.md",
        "link '../../elsewhere.md' leaves the repository",
    ]
    assert sorted(problem.split("`")[1] for problem in _path_problems(page, text)) == [
        "notebooks/missing.py",
        "params/no_such.yaml",
    ]
    assert _outside_problems(page, "the notes in NOTES.md, and `docs/design.md`") == [
        "docs/broken.md: NOTES.md is no Markdown file of the repository"
    ]
    assert sorted(problem.split("`")[1] for problem in _module_problems(page, text)) == [
        "sedlib.method.losses.no_such_function",
        "sedlib.no_such_module",
    ]


def _library_example() -> str:
    text = (ROOT / "docs" / "library.md").read_text()
    blocks = [match.group(2) for match in FENCE.finditer(text) if match.group(0).lstrip().startswith("```python")]
    assert blocks, "docs/library.md has no Python example"
    return blocks[0]


def test_the_library_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(_library_example(), "docs/library.md", "exec"), {"__name__": "docs_example"})
    lines = output.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["accuracy", "BMA (MSP of mean logit)", "PDS"]
    assert (tmp_path / "sed.safetensors").is_file() and (tmp_path / "sed.json").is_file()
