"""Metric modules kept in the repo and loaded by path with `evaluate.load`, so nothing is fetched."""

from pathlib import Path

GLUE_METRIC = str(Path(__file__).parent / "glue")
SQUAD_METRIC = str(Path(__file__).parent / "squad")
NER_METRIC = str(Path(__file__).parent / "ner")
