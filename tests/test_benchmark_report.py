"""The benchmark tables of benchmarks/README.md and the docs are copies of benchmarks/results/*.json: a number
typed by hand, or a result file re-run without `benchmarks/report.py`, fails here."""

from __future__ import annotations

import json
import re
import sys

import pytest

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
report = pytest.importorskip("report")

BENCHMARKS_README = REPO_ROOT / "benchmarks" / "README.md"
RESULTS = REPO_ROOT / "benchmarks" / "results"


def test_every_table_on_every_page_is_the_committed_result():
    sections = []
    for page in report.pages():
        text = page.read_text(encoding="utf-8")
        sections += re.findall(r"<!-- results: ([\w-]+) -->", text)
        assert report.rewrite(text) == text, f"{page} differs from benchmarks/results: run python benchmarks/report.py"
    assert sorted(sections) == sorted(p.stem for p in RESULTS.glob("*.json")), "a result missing or unused"


def test_every_record_says_how_it_was_made():
    for path in RESULTS.glob("*.json"):
        record = json.loads(path.read_text(encoding="utf-8"))
        # the script of the same name, or one that writes records under --name (recipe_ablation at another budget)
        script = re.match(r"python benchmarks/(\w+)\.py", record["command"])
        assert script and (RESULTS.parent / f"{script[1]}.py").is_file(), path
        assert script[1] == path.stem or f"--name {path.stem}" in record["command"], path
        assert {"torch", "transformers"} <= record["versions"].keys(), path
        assert record["table"]["rows"], path


def test_a_hand_edited_number_is_caught():
    text = BENCHMARKS_README.read_text(encoding="utf-8")
    name = re.search(r"<!-- results: ([\w-]+) -->", text)[1]
    cell = json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))["table"]["rows"][0][-1]
    edited = text.replace(f"| {cell} |", "| 1.23 |", 1)
    assert edited != text
    assert report.rewrite(edited) != edited
