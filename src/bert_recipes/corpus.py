"""Raw-text corpora as streamed `datasets.IterableDataset`s with one document per row in a `text` column.

Local files: `.txt`/`.txt.gz` (documents separated by blank lines), `.jsonl`/`.json` (optionally `.gz`) and
`.parquet` (one document per row, in `text_column`). Hub datasets are streamed with `load_dataset`.

A corpus is one or more sources: all `--train_files` together, or, with `--mixture_probabilities`, each file (or
each comma-separated `--dataset_name`) on its own, mixed by weight in the pretraining stream.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from accelerate.logging import get_logger

from bert_recipes.errors import UsageError

logger = get_logger(__name__)

TEXT_SUFFIXES = (".txt", ".txt.gz", ".text")
JSON_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
PARQUET_SUFFIXES = (".parquet",)
STOPPING_STRATEGIES = ("first_exhausted", "all_exhausted", "all_exhausted_without_replacement")


@dataclass
class CorpusConfig:
    train_files: list[str] = field(
        default_factory=list,
        metadata={"help": "Local corpus files (.txt, .txt.gz, .jsonl[.gz], .parquet); this or --dataset_name."},
    )
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Hub dataset to stream instead of local files, e.g. 'wikimedia/wikipedia'; several, "
            "comma-separated, are read one after the other or mixed by --mixture_probabilities."
        },
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "Config name of the Hub dataset (comma-separated, one per dataset)."}
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of the Hub dataset to read."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text in json/parquet/Hub data."})
    mixture_probabilities: str | None = field(
        default=None,
        metadata={
            "help": "Mix the sources by weight, e.g. '0.7,0.3': one share of documents per --train_files file or "
            "--dataset_name dataset, summing to 1 (default: all sources form one corpus)."
        },
    )
    mixture_stopping_strategy: str = field(
        default="first_exhausted",
        metadata={
            "help": "When a mixed epoch ends: first_exhausted (as soon as one source runs out: the shares hold, "
            "the rest of the larger sources waits for the next epoch) or all_exhausted (once every source was read: "
            "the smaller ones are repeated to keep the shares) or all_exhausted_without_replacement (every "
            "document once; the shares drift as sources run out)."
        },
    )


def _open_text(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")


def _check_readable(path: Path) -> None:
    if not path.is_file():
        raise UsageError(f"corpus file '{path}' does not exist: check the path given to --train_files")
    try:
        with _open_text(path) as handle:
            head = handle.read(8192)
    except (OSError, EOFError) as err:
        raise UsageError(f"corpus file '{path}' cannot be read ({err}): fix its permissions or re-create it") from None
    if b"\x00" in head:
        raise UsageError(f"corpus file '{path}' looks binary (it has NUL bytes): pass a UTF-8 text corpus")


def _decode(line: bytes, path: str, warned: set[str]) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        if path not in warned:
            warned.add(path)
            logger.warning(f"corpus file '{path}' has invalid UTF-8 bytes; they were replaced with U+FFFD")
        return line.decode("utf-8", errors="replace")


def read_text_documents(files: list[str]) -> Iterator[dict[str, str]]:
    """Yield one `{"text": ...}` per blank-line separated document, streaming, with bad bytes replaced."""
    warned: set[str] = set()
    for name in files:
        lines: list[str] = []
        with _open_text(Path(name)) as handle:
            for raw in handle:
                line = _decode(raw, name, warned).rstrip("\r\n")
                if line.strip():
                    lines.append(line)
                elif lines:
                    yield {"text": "\n".join(lines)}
                    lines = []
        if lines:
            yield {"text": "\n".join(lines)}


def _kind(path: str) -> str:
    for kind, suffixes in (("text", TEXT_SUFFIXES), ("json", JSON_SUFFIXES), ("parquet", PARQUET_SUFFIXES)):
        if path.endswith(suffixes):
            return kind
    raise UsageError(
        f"corpus file '{path}' has an unknown type: use .txt, .txt.gz, .jsonl, .jsonl.gz, .json or .parquet"
    )


def _load_local(files: Sequence[str], text_column: str, streaming: bool) -> datasets.Dataset | datasets.IterableDataset:
    kinds = {_kind(f) for f in files}
    if len(kinds) > 1:
        raise UsageError(f"--train_files mixes file types ({', '.join(sorted(kinds))}): pass one type per run")
    for name in files:
        _check_readable(Path(name))
    kind = kinds.pop()
    if kind == "text":
        # one generator shard per file, so split_dataset_by_node can hand whole files to ranks
        if streaming:
            return datasets.IterableDataset.from_generator(read_text_documents, gen_kwargs={"files": list(files)})
        if next(read_text_documents(list(files)), None) is None:
            raise UsageError(f"the corpus {', '.join(files)} is empty: it holds no text")
        return datasets.Dataset.from_generator(read_text_documents, gen_kwargs={"files": list(files)})
    stream = datasets.load_dataset(kind, data_files=list(files), split="train", streaming=streaming)
    return _select_text(stream, text_column, f"'{files[0]}'")


def _select_text(stream, text_column: str, source: str):
    columns = stream.column_names
    if columns is None:
        # a streamed json/Hub dataset may not declare its features: its first row shows them
        columns = list(next(iter(stream.take(1)), {}).keys()) or None
    if columns is not None and text_column not in columns:
        raise UsageError(f"{source} has no column '{text_column}' (columns: {', '.join(columns)}): set --text_column")
    stream = stream.select_columns([text_column])
    return stream.rename_column(text_column, "text") if text_column != "text" else stream


def check_corpus_given(config: CorpusConfig) -> None:
    # no default corpus: a run that silently trained on a sample would look fine and be worthless
    if not config.train_files and not config.dataset_name:
        raise UsageError("no corpus given: pass --train_files FILE [FILE ...] or --dataset_name NAME")
    mixture_weights(config)
    if config.mixture_stopping_strategy not in STOPPING_STRATEGIES:
        raise UsageError(
            f"--mixture_stopping_strategy '{config.mixture_stopping_strategy}' is unknown: use "
            + " or ".join(STOPPING_STRATEGIES)
        )


def check_corpus(config: CorpusConfig) -> None:
    """check_corpus_given, then open every source: a missing file, column or unreachable dataset fails here."""
    check_corpus_given(config)
    load_sources(config)


def _split_names(value: str | None) -> list[str]:
    return [name.strip() for name in value.split(",")] if value else []


def source_names(config: CorpusConfig) -> list[str]:
    """One name per source that --mixture_probabilities weighs: the Hub datasets, else the files."""
    return _split_names(config.dataset_name) or list(config.train_files)


def mixture_weights(config: CorpusConfig) -> list[float] | None:
    """The parsed --mixture_probabilities, checked against the sources; None when nothing is mixed."""
    if not config.mixture_probabilities:
        return None
    names = source_names(config)
    values = config.mixture_probabilities.split(",")
    bad = [v for v in values if not v.strip().replace(".", "", 1).isdigit()]
    if bad:
        raise UsageError(
            f"--mixture_probabilities '{config.mixture_probabilities}' is not a list of positive numbers: "
            "write e.g. 0.7,0.3"
        )
    weights = [float(v) for v in values]
    if len(weights) != len(names):
        raise UsageError(
            f"--mixture_probabilities has {len(weights)} values for {len(names)} sources ({', '.join(names)}): "
            "give one per --train_files file or --dataset_name dataset"
        )
    if any(not 0.0 < w <= 1.0 for w in weights) or not math.isclose(sum(weights), 1.0, abs_tol=1e-6):
        raise UsageError(
            f"--mixture_probabilities {config.mixture_probabilities} must be positive and sum to 1 "
            f"(they sum to {sum(weights):g}): rescale them"
        )
    return weights


def _load_hub(name: str, config_name: str | None, config: CorpusConfig, streaming: bool):
    try:
        stream = datasets.load_dataset(name, config_name, split=config.dataset_split, streaming=streaming)
    except (OSError, ValueError) as err:
        # offline, a typo, a private or gated repo, a missing config: datasets answers with a long traceback
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise UsageError(
            f"--dataset_name '{name}' cannot be loaded ({reason}): check the name, --dataset_config_name and "
            "--dataset_split, and that the Hub is reachable (offline, only cached datasets load)"
        ) from None
    return _select_text(stream, config.text_column, f"dataset '{name}'")


def load_sources(config: CorpusConfig, streaming: bool = True) -> list[datasets.IterableDataset | datasets.Dataset]:
    """The corpus's sources, each with a single `text` column, one document per row."""
    check_corpus_given(config)
    names = _split_names(config.dataset_name)
    if names:
        config_names = _split_names(config.dataset_config_name) or [None] * len(names)
        if len(config_names) != len(names):
            raise UsageError(
                f"--dataset_config_name has {len(config_names)} names for {len(names)} datasets: give one per dataset"
            )
        return [_load_hub(n, c, config, streaming) for n, c in zip(names, config_names, strict=True)]
    if config.mixture_probabilities:
        return [_load_local([name], config.text_column, streaming) for name in config.train_files]
    return [_load_local(config.train_files, config.text_column, streaming)]


def source_labels(config: CorpusConfig) -> list[str]:
    """Names of the sources `load_sources` returns, in its order (the keys of tokens-per-source metrics)."""
    if config.dataset_name or config.mixture_probabilities:
        return source_names(config)
    return [",".join(Path(f).name for f in config.train_files)]


def load_corpus(config: CorpusConfig, streaming: bool = True) -> datasets.IterableDataset | datasets.Dataset:
    """All sources one after the other, with a single `text` column: streamed, or as an Arrow dataset."""
    sources = load_sources(config, streaming)
    return sources[0] if len(sources) == 1 else datasets.concatenate_datasets(sources)


def iter_texts(corpus: datasets.IterableDataset, batch_size: int = 1000) -> Iterator[list[str]]:
    """Batches of non-empty document texts, for trainers that take an iterator."""
    batch: list[str] = []
    for row in corpus:
        text = row["text"]
        if text and text.strip():
            batch.append(text)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch
