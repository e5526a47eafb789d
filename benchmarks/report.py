"""Copy the benchmark tables from benchmarks/results/*.json into the pages that show them (benchmarks/README.md,
docs/*.md, README.md), so no number there is typed by hand.

    python benchmarks/report.py          # rewrite the marked sections
    python benchmarks/report.py --check  # exit 1 if a page and the results disagree

A section is `<!-- results: NAME -->` ... `<!-- /results -->`; it holds the table of benchmarks/results/NAME.json
and a line with the command, machine and versions that produced it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from reporting import REPO_ROOT, RESULTS_DIR, markdown_table

from bert_recipes.config import parse_config


@dataclass
class ReportConfig:
    check: bool = field(default=False, metadata={"help": "Change nothing; exit 1 if a page and the results differ."})


SECTION = re.compile(r"(<!-- results: (?P<name>[\w-]+) -->\n).*?(<!-- /results -->)", re.S)


def render(record: dict) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in record["versions"].items())
    table = markdown_table(record["table"]["header"], record["table"]["rows"])
    return f"{table}\n\n<sub>`{record['command']}` on {record['machine']}; {versions}</sub>\n"


def pages() -> list[Path]:
    """Every page that may hold results sections."""
    return [REPO_ROOT / "README.md", REPO_ROOT / "benchmarks" / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def rewrite(page: str, results_dir: Path = RESULTS_DIR) -> str:
    def section(match: re.Match) -> str:
        path = results_dir / f"{match['name']}.json"
        if not path.is_file():
            raise SystemExit(f"a page has a results section '{match['name']}' but {path} does not exist")
        return match.group(1) + render(json.loads(path.read_text(encoding="utf-8"))) + match.group(3)

    return SECTION.sub(section, page)


def main() -> None:
    (config,) = parse_config([ReportConfig])
    for page in pages():
        text = page.read_text(encoding="utf-8")
        updated = rewrite(text)
        if config.check:
            if updated != text:
                raise SystemExit(f"{page}'s benchmark tables differ from benchmarks/results: run benchmarks/report.py")
        elif updated != text:
            page.write_text(updated, encoding="utf-8")


if __name__ == "__main__":
    main()
