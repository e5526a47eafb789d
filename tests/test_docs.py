"""The README and the pages it sends readers to: short enough to read, every link landing on a file and heading that
exist, every docs page reachable from the README, and every command shown naming a script that exists with flags
that script accepts."""

from __future__ import annotations

import ast
import contextlib
import io
import re
import runpy
import shlex
import sys
from functools import cache
from pathlib import Path

import pytest

from bert_recipes.errors import run_cli
from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
FOLDER_READMES = [REPO_ROOT / "benchmarks" / "README.md", REPO_ROOT / "recipes" / "README.md"]
PAGES = [README, *FOLDER_READMES, *sorted((REPO_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# every script a user runs; its docstring is its usage (the helper modules of benchmarks/ are imported, not run)
SCRIPTS = sorted(
    path
    for folder in ("recipes", "benchmarks", "tokenizer")
    for path in (REPO_ROOT / folder).glob("*.py")
    if path.name not in ("bench_setup.py", "reporting.py")
)
# a command on a line of a code block (backslashed line ends joined first) or in an inline code span
COMMAND = re.compile(r"(?:python|accelerate launch)\s[^`\n]*")


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def test_the_readme_reads_in_five_minutes():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 200


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO_ROOT)) for p in PAGES])
def test_every_link_lands_on_a_file_and_heading_that_exist(page):
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://")):
            continue
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.name} links to {target}, which does not exist"
        if fragment and resolved.suffix == ".md":
            assert fragment in anchors(resolved), f"{page.name} links to {target}: no such heading"


def test_every_docs_page_is_reachable_from_the_readme():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in LINK.findall(README.read_text(encoding="utf-8"))}
    for page in PAGES[1:]:
        assert page.resolve() in linked, f"{page.relative_to(REPO_ROOT)} is not linked from README.md"


def usage(script: Path) -> str:
    return ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""


def shown_commands() -> list[tuple[str, str, list[str]]]:
    """(page, script, flags) of every python or accelerate-launch command on the pages and in the scripts' usage."""
    texts = [(page.name, page.read_text(encoding="utf-8")) for page in PAGES]
    texts += [(script.name, usage(script)) for script in SCRIPTS]
    found = []
    for name, text in texts:
        for command in COMMAND.findall(text.replace("\\\n", " ")):
            words = shlex.split(command, comments=True)
            scripts = [i for i, w in enumerate(words) if w.endswith(".py")]
            if not scripts or words[scripts[0]].startswith("-"):
                continue  # `python -m ...` or prose
            at = scripts[0]
            flags = [w[2:].split("=")[0] for w in words[at + 1 :] if w.startswith("--")]
            found.append((name, words[at], flags))
    return found


@cache
def accepted_flags(script: str) -> frozenset[str]:
    """The flags a script's --help lists, read in this process (a subprocess per script would cost seconds each)."""
    path = REPO_ROOT / script
    out = io.StringIO()
    sys.path.insert(0, str(path.parent))
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            namespace = runpy.run_path(str(path), run_name="docs_check")
            if "argv" in namespace["main"].__code__.co_varnames[: namespace["main"].__code__.co_argcount]:
                run_cli(namespace["main"], ["--help"])
            else:
                sys.argv = [str(path), "--help"]
                namespace["main"]()
    finally:
        sys.path.remove(str(path.parent))
    # --config (a YAML file of the same flags) and --debug are read by bert_recipes.config and errors themselves
    return frozenset({*re.findall(r"--(\w+)", out.getvalue()), "config", "debug"})


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_every_script_opens_with_its_usage(script):
    path = script.relative_to(REPO_ROOT).as_posix()
    commands = COMMAND.findall(usage(script).replace("\\\n", " "))
    assert any(path in command.split() for command in commands), f"{path}'s docstring shows no command that runs it"


def test_every_command_shown_runs_a_script_that_accepts_its_flags(monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    commands = shown_commands()
    assert len(commands) > 30
    for page, script, flags in commands:
        assert (REPO_ROOT / script).is_file(), f"{page}: {script} does not exist"
        if script.endswith("transformers_nsp_baseline.py"):
            continue  # runs in its own environment with transformers 4 (see its docstring); takes no flags
        unknown = [flag for flag in flags if flag not in accepted_flags(script)]
        assert not unknown, f"{page}: {script} does not accept --{', --'.join(unknown)}"


def test_the_code_map_names_every_module():
    """docs/design.md's map of src/bert_recipes: a module added without a line there fails."""
    text = (REPO_ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    package = REPO_ROOT / "src" / "bert_recipes"
    entries = [p for p in package.iterdir() if p.name != "__init__.py" and not p.name.startswith((".", "__"))]
    missing = [p.name for p in entries if f"`{p.name}{'/' if p.is_dir() else ''}`" not in text]
    assert not missing, f"docs/design.md's code map lacks {missing}"


def test_the_recipes_readme_names_every_recipe():
    text = (REPO_ROOT / "recipes" / "README.md").read_text(encoding="utf-8")
    scripts = [p.name for p in (REPO_ROOT / "recipes").iterdir() if p.suffix in (".py", ".slurm")]
    missing = [name for name in scripts if f"`{name}`" not in text]
    assert len(scripts) >= 9 and not missing, f"recipes/README.md lacks {missing}"
