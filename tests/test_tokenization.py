"""The WordPiece tokenizer: fast and slow classes agree, special tokens, pairs, vocab size, bad input."""

from __future__ import annotations

import gzip
import random
import subprocess
import sys
import unicodedata

import datasets
import pytest
from transformers import AutoTokenizer, BertTokenizerLegacy

from bert_recipes.corpus import read_text_documents
from bert_recipes.tokenization import SPECIAL_TOKENS, TokenizerConfig, train_tokenizer
from tests.conftest import DEMO_CORPUS, REPO_ROOT

TRAIN_SCRIPT = REPO_ROOT / "tokenizer" / "train_tokenizer.py"

HAND_PICKED = [
    "",
    " ",
    "The quick brown fox jumps over the lazy dog.",
    "Héllo wörld, naïve café, Ångström, façade — “quotes” …",
    "中文字符 and 日本語のテキスト mixed with 한국어",
    "Emoji 🙂🚀 and flags 🇫🇷 and ZWJ 👩‍💻",
    "control\x07chars\x00and\ttabs\r\nnewlines\u200bzero-width",
    "a" * 150,
    "supercalifragilisticexpialidocious" * 4,
    "Ελληνικά, кириллица, العربية, עברית, हिन्दी",
    "don't stop—ever… 3.14159 $100 #hashtag @user",
]

# held-out multilingual text the tokenizer never saw (the demo corpus is English prose)
HELD_OUT = [
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le cœur a ses raisons que la raison ne connaît point.",
    "El niño comió una manzana después de la escuela.",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "我们在北京大学学习自然语言处理。",
    "東京は日本の首都です。",
    "Ο γρήγορος καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο.",
]


# The Rust normalizer's Unicode tables predate Python 3.11's (Unicode 14): characters assigned since then,
# like U+061D ARABIC END OF TEXT MARK (Unicode 14), are classified differently. See tokenizer/README.md.
NEWER_THAN_RUST_TABLES = {"\u061d"}
RANDOM_RANGES = [
    (0x0, 0x7E),
    (0xA0, 0x24F),
    (0x370, 0x3FF),
    (0x400, 0x4FF),
    (0x4E00, 0x9FFF),
    (0x3040, 0x30FF),
]
RANDOM_RANGES += [(0x1F300, 0x1F6FF), (0x2000, 0x206F), (0x600, 0x6FF), (0x900, 0x97F), (0xAC00, 0xD7A3)]


def random_strings(count: int, seed: int) -> list[str]:
    """Random text over assigned code points of many scripts: letters, marks, digits, punctuation, controls."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        chars = []
        for _ in range(rng.randint(0, 60)):
            low, high = rng.choice(RANDOM_RANGES)
            char = chr(rng.randint(low, high))
            if unicodedata.category(char) not in ("Cn", "Cs") and char not in NEWER_THAN_RUST_TABLES:
                chars.append(char)
        out.append("".join(chars))
    return out


@pytest.fixture(scope="module")
def fast_and_slow(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir), BertTokenizerLegacy.from_pretrained(tokenizer_dir)


def test_auto_tokenizer_loads_fast_bert_with_full_vocab(fast_and_slow):
    fast, slow = fast_and_slow
    assert fast.is_fast and type(fast).__name__ == "BertTokenizer"
    assert len(fast) == len(slow) == 2000
    assert fast.model_max_length == 512


def test_special_tokens_have_fixed_ids(fast_and_slow):
    fast, _ = fast_and_slow
    assert fast.convert_tokens_to_ids(SPECIAL_TOKENS) == [0, 1, 2, 3, 4]
    assert (fast.pad_token_id, fast.unk_token_id, fast.cls_token_id) == (0, 1, 2)
    assert (fast.sep_token_id, fast.mask_token_id) == (3, 4)


def test_pair_encoding_has_cls_sep_and_type_ids(fast_and_slow):
    fast, _ = fast_and_slow
    a, b = fast("the first part", add_special_tokens=False), fast("and the second", add_special_tokens=False)
    enc = fast("the first part", "and the second")
    ids_a, ids_b = a["input_ids"], b["input_ids"]
    assert enc["input_ids"] == [2, *ids_a, 3, *ids_b, 3]
    assert enc["token_type_ids"] == [0] * (len(ids_a) + 2) + [1] * (len(ids_b) + 1)
    assert fast("single")["input_ids"][0] == 2 and fast("single")["input_ids"][-1] == 3


@pytest.mark.parametrize("texts", [HAND_PICKED, HELD_OUT, random_strings(1500, seed=0)], ids=["hand", "held", "rand"])
def test_fast_and_slow_tokenizers_give_identical_ids(fast_and_slow, texts):
    fast, slow = fast_and_slow
    mismatches = [t for t in texts if fast(t)["input_ids"] != slow(t)["input_ids"]]
    assert not mismatches, f"{len(mismatches)} of {len(texts)} differ, e.g. {mismatches[:3]!r}"


def test_every_assigned_character_of_common_scripts_agrees(fast_and_slow):
    fast, slow = fast_and_slow
    chars = [chr(c) for low, high in RANDOM_RANGES for c in range(low, high + 1)]
    texts = [f"a{c}b" for c in chars if unicodedata.category(c) not in ("Cn", "Cs")]
    differ = {t[1] for t in texts if fast(t)["input_ids"] != slow(t)["input_ids"]}
    assert differ == NEWER_THAN_RUST_TABLES


def test_normalizer_lowercases_strips_accents_and_splits_cjk(fast_and_slow):
    fast, _ = fast_and_slow
    assert fast.backend_tokenizer.normalizer.normalize_str("Héllo") == "hello"
    assert fast.tokenize("中文") == ["中", "文"] or all(t in ("中", "文", "[UNK]") for t in fast.tokenize("中文"))


def test_vocab_size_is_exact_when_corpus_allows(tokenizer_dir):
    assert len((tokenizer_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()) == 2000


def test_small_corpus_gives_fewer_tokens_with_a_warning(caplog):
    tokenizer = train_tokenizer([["tiny corpus with few words"]], TokenizerConfig(vocab_size=5000, min_frequency=1))
    assert 5 < len(tokenizer) < 5000


def test_trains_from_in_memory_dataset():
    ds = datasets.Dataset.from_dict({"text": ["hello world, hello tokenizer"] * 50 + ["another line of text"] * 50})
    batches = (ds[i : i + 10]["text"] for i in range(0, len(ds), 10))
    tokenizer = train_tokenizer(batches, TokenizerConfig(vocab_size=60, min_frequency=1))
    assert len(tokenizer) == 60
    assert tokenizer.decode(tokenizer("hello world")["input_ids"], skip_special_tokens=True) == "hello world"


def test_the_same_corpus_gives_the_same_ids_in_separate_processes(tmp_path):
    # the trainer numbers pieces in hash-map order, which differs from one process to the next
    vocabularies = []
    for run in ("a", "b"):
        result = run_train_script(
            "--train_files", str(DEMO_CORPUS), "--vocab_size", "2000", "--output_dir", str(tmp_path / run)
        )
        assert result.returncode == 0, result.stderr
        vocabularies.append((tmp_path / run / "vocab.txt").read_text(encoding="utf-8").splitlines())
    assert len(vocabularies[0]) == 2000 and vocabularies[0][:5] == SPECIAL_TOKENS
    assert vocabularies[0] == vocabularies[1]


def run_train_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TRAIN_SCRIPT), *args], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT
    )


def write_corpus(path, text: str) -> None:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as handle:
        handle.write(text)


def test_cli_trains_from_txt_and_txt_gz(tmp_path):
    words = " ".join(f"word{i} token{i % 37}" for i in range(3000))
    write_corpus(tmp_path / "a.txt", words + "\n\n" + words[::-1])
    write_corpus(tmp_path / "b.txt.gz", words.upper())
    out = tmp_path / "tok"
    result = run_train_script(
        "--train_files", str(tmp_path / "a.txt"), str(tmp_path / "b.txt.gz"), "--vocab_size", "300",
        "--output_dir", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) == 300
    assert (out / "vocab.txt").is_file() and (out / "training_args.yaml").is_file()


def test_invalid_utf8_is_replaced_with_one_warning(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"good line\n\nbad \xff\xfe bytes here\nand \xff again\n")
    docs = list(read_text_documents([str(tmp_path / "bad.txt")]))
    assert docs == [{"text": "good line"}, {"text": "bad \ufffd\ufffd bytes here\nand \ufffd again"}]
    out = tmp_path / "tok"
    result = run_train_script(
        "--train_files", str(tmp_path / "bad.txt"), "--vocab_size", "40", "--min_frequency", "1",
        "--output_dir", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("invalid UTF-8") == 1


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no_corpus", "no corpus given: pass --train_files FILE [FILE ...] or --dataset_name NAME"),
        ("missing", "does not exist"),
        ("empty", "corpus is empty"),
        ("binary", "looks binary"),
        ("tiny_vocab", "too small"),
        ("bad_suffix", "unknown type"),
        ("unknown_key", "did you mean 'vocab_size'"),
        ("bad_type", "invalid int value"),
    ],
)
def test_bad_input_gives_one_clear_line_and_exit_2(tmp_path, case, expected):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("some words here\n", encoding="utf-8")
    args = {
        "no_corpus": [],
        "missing": ["--train_files", str(tmp_path / "nope.txt")],
        "empty": ["--train_files", str(tmp_path / "empty.txt")],
        "binary": ["--train_files", str(tmp_path / "blob.txt")],
        "tiny_vocab": ["--train_files", str(corpus), "--vocab_size", "3"],
        "bad_suffix": ["--train_files", str(tmp_path / "corpus.docx")],
        "unknown_key": ["--train_files", str(corpus), "--vocab_sise", "100"],
        "bad_type": ["--train_files", str(corpus), "--vocab_size", "many"],
    }[case]
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    (tmp_path / "blob.txt").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "corpus.docx").write_text("x", encoding="utf-8")
    result = run_train_script(*args, "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
