"""Raw-text corpora as streamed `datasets.IterableDataset`s with one document per row in a `text` column.

Local files: `.txt`/`.txt.gz` (documents separated by blank lines), `.jsonl`/`.json` (optionally `.gz`) and
`.parquet` (one document per row, in `text_column`). Hub datasets are streamed with `load_dataset`.
"""

from __future__ import annotations

import gzip
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


@dataclass
class CorpusConfig:
    train_files: list[str] = field(
        default_factory=list,
        metadata={"help": "Local corpus files (.txt, .txt.gz, .jsonl[.gz], .parquet); this or --dataset_name."},
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub dataset to stream instead of local files, e.g. 'wikimedia/wikipedia'."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Config name of the Hub dataset."})
    dataset_split: str = field(default="train", metadata={"help": "Split of the Hub dataset to read."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text in json/parquet/Hub data."})


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
    if columns is not None and text_column not in columns:
        raise UsageError(f"{source} has no column '{text_column}' (columns: {', '.join(columns)}): set --text_column")
    stream = stream.select_columns([text_column])
    return stream.rename_column(text_column, "text") if text_column != "text" else stream


def check_corpus_given(config: CorpusConfig) -> None:
    # no default corpus: a run that silently trained on a sample would look fine and be worthless
    if not config.train_files and not config.dataset_name:
        raise UsageError("no corpus given: pass --train_files FILE [FILE ...] or --dataset_name NAME")


def load_corpus(config: CorpusConfig, streaming: bool = True) -> datasets.IterableDataset | datasets.Dataset:
    """The corpus with a single `text` column, one document per row: streamed, or as an Arrow dataset."""
    check_corpus_given(config)
    if config.dataset_name:
        stream = datasets.load_dataset(
            config.dataset_name, config.dataset_config_name, split=config.dataset_split, streaming=streaming
        )
        return _select_text(stream, config.text_column, f"dataset '{config.dataset_name}'")
    return _load_local(config.train_files, config.text_column, streaming)


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
