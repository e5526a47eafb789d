"""The NER recipe: CoNLL files in both layouts, IOB1 read as IOB2, labels on word pieces, the conlleval metrics
against hand-computed values, and the recipe end to end with a tiny random BERT."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import evaluate
import pytest
import torch
from transformers import AutoTokenizer

from bert_recipes.errors import UsageError, run_cli
from bert_recipes.metrics import NER_METRIC
from bert_recipes.ner import iob1_to_iob2, label_list, piece_labels, read_conll, word_tags
from tests.conftest import REPO_ROOT, assert_usage_error

WNUT = REPO_ROOT / "data" / "ner" / "wnut17"
CONLL_FORMAT = REPO_ROOT / "tests" / "fixtures" / "ner" / "conll2003_format.txt"
FINETUNE = REPO_ROOT / "recipes" / "finetune_ner.py"


pytestmark = pytest.mark.usefixtures("one_thread")


def ner_metric():
    return evaluate.load(NER_METRIC, keep_in_memory=True)


def test_entity_scores_match_a_hand_count():
    references = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predictions = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "B-ORG"]]
    # predicted PER (right), ORG at 3 (wrong), ORG (right), ORG at 1 (wrong): 2 of 4 right; 2 of 3 gold found
    scores = ner_metric().compute(predictions=predictions, references=references)
    assert scores == pytest.approx(
        {
            "overall_precision": 0.5, "overall_recall": 2 / 3, "overall_f1": 2 * 0.5 * (2 / 3) / (0.5 + 2 / 3),
            "overall_accuracy": 4 / 6,
            "LOC_precision": 0.0, "LOC_recall": 0.0, "LOC_f1": 0.0, "LOC_number": 1,
            "ORG_precision": 1 / 3, "ORG_recall": 1.0, "ORG_f1": 0.5, "ORG_number": 1,
            "PER_precision": 1.0, "PER_recall": 1.0, "PER_f1": 1.0, "PER_number": 1,
        }
    )  # fmt: skip


def test_an_entity_must_match_both_ends_and_its_type():
    gold = [["B-PER", "I-PER", "I-PER"]]
    for wrong in (["B-PER", "I-PER", "O"], ["O", "B-PER", "I-PER"], ["B-ORG", "I-ORG", "I-ORG"]):
        assert ner_metric().compute(predictions=[wrong], references=gold)["overall_f1"] == 0.0


def test_iob1_becomes_iob2_with_the_same_entities():
    iob1 = ["I-PER", "I-PER", "B-PER", "I-LOC", "O", "I-MISC", "I-MISC", "I-ORG"]
    iob2 = iob1_to_iob2(iob1)
    assert iob2 == ["B-PER", "I-PER", "B-PER", "B-LOC", "O", "B-MISC", "I-MISC", "B-ORG"]
    assert iob1_to_iob2(iob2) == iob2
    # conlleval reads both schemes alike: the same entities, so a perfect score against each other
    assert ner_metric().compute(predictions=[iob1], references=[iob2])["overall_f1"] == 1.0


def test_both_conll_layouts_read_into_sentences_of_iob2_tags():
    conll = read_conll(str(CONLL_FORMAT), "--train_file", -1)
    assert len(conll) == 6 and conll[0]["tokens"][:2] == ["Maria", "Lopez"]
    assert conll[0]["tags"][:5] == ["B-PER", "I-PER", "O", "B-ORG", "I-ORG"]
    assert conll[2]["tags"][:5] == ["B-PER", "I-PER", "O", "B-PER", "I-PER"], "two names that meet stay two"
    wnut = read_conll(str(WNUT / "train.txt"), "--train_file", -1)
    # the training file ends sentences with tab-only lines, the dev file with empty ones
    assert len(wnut) == 400 and len(read_conll(str(WNUT / "dev.txt"), "--validation_file", -1)) == 200
    assert sum(len(s) for s in wnut["tokens"]) == 7700
    assert label_list({"train": wnut})[:3] == ["O", "B-corporation", "I-corporation"]


def test_a_word_in_several_pieces_is_labelled_on_its_first(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    words, tags = ["Quetzalcoatlus", "flew", "over", "Tegucigalpa"], ["B-MISC", "O", "O", "B-LOC"]
    encoded = tokenizer(words, is_split_into_words=True)
    word_ids = encoded.word_ids()
    assert word_ids.count(0) > 2 and word_ids.count(3) > 2, "the test needs words split into several pieces"
    labels = {tag: i for i, tag in enumerate(["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC"])}
    first = piece_labels(word_ids, tags, labels, all_pieces=False)
    every = piece_labels(word_ids, tags, labels, all_pieces=True)
    expected_first, expected_every = [], []
    for k, word in enumerate(word_ids):
        starts = word is not None and word_ids[k - 1] != word
        expected_first.append(-100 if word is None or not starts else labels[tags[word]])
        continuing = tags[word].replace("B-", "I-") if word is not None else None
        expected_every.append(-100 if word is None else labels[tags[word] if starts else continuing])
    assert first == expected_first and every == expected_every
    # predicting: each word gets its first piece's tag, whatever its other pieces say
    logits = torch.full((len(word_ids), len(labels)), -1.0)
    for k, word in enumerate(word_ids):
        logits[k, labels[tags[word]] if word is not None and first[k] != -100 else 0] = 1.0
    ids = [-1 if w is None else w for w in word_ids]
    assert word_tags(logits.numpy(), ids, len(words), list(labels)) == tags
    assert word_tags(logits.numpy(), ids[:4], len(words), list(labels))[1:] == ["O", "O", "O"], "cut words are O"


def ner_args(model: Path, out: Path, train: Path, dev: Path, *extra: str) -> list[str]:
    return [
        "--model_name_or_path", str(model), "--output_dir", str(out), "--train_file", str(train),
        "--validation_file", str(dev), "--max_train_samples", "64", "--max_eval_samples", "60",
        "--per_device_train_batch_size", "8", "--report_to", "none", "--disable_tqdm", "true",
        "--mixed_precision", "no", *extra,
    ]  # fmt: skip


def read_predictions(path: Path) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    """Tokens, gold and predicted tags of a predictions.txt (a blank line after each sentence)."""
    tokens, gold, predicted = [], [], []
    for block in path.read_text().strip("\n").split("\n\n"):
        rows = [line.split(" ") for line in block.split("\n")]
        tokens.append([r[0] for r in rows])
        gold.append([r[1] for r in rows])
        predicted.append([r[2] for r in rows])
    return tokens, gold, predicted


@pytest.mark.parametrize(("train", "dev"), [(WNUT / "train.txt", WNUT / "dev.txt"), (CONLL_FORMAT, CONLL_FORMAT)],
                         ids=["wnut17", "conll2003-layout"])  # fmt: skip
def test_the_recipe_writes_predictions_whose_scores_are_eval_results(train, dev, tiny_bert_dir, tmp_path):
    out = tmp_path / "ner"
    run_cli(runpy.run_path(str(FINETUNE))["main"], ner_args(tiny_bert_dir, out, train, dev, "--max_steps", "4",
                                                             "--seeds", "1,2,3"))  # fmt: skip
    tokens, gold, predicted = read_predictions(out / "predictions.txt")
    sentences = read_conll(str(dev), "--validation_file", -1)
    sentences = sentences.select(range(min(60, len(sentences))))
    assert tokens == sentences["tokens"] and gold == sentences["tags"]
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved == pytest.approx(ner_metric().compute(predictions=predicted, references=gold))
    assert {"overall_precision", "overall_recall", "overall_f1", "overall_accuracy"} <= set(saved)
    runs = json.loads((out / "runs.json").read_text())
    assert sorted(run["seed"] for run in runs["runs"]) == [1, 2, 3]
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"] and config["id2label"]["0"] == "O"


def test_training_on_the_dev_sentences_learns_their_entities(tiny_bert_dir, tmp_path):
    """Labels, loss and decoding must carry signal: a tiny model that trains on the sentences it tags finds
    their entities, where the untrained one finds none."""

    def f1(out: Path, *extra: str) -> float:
        run_cli(runpy.run_path(str(FINETUNE))["main"], ner_args(tiny_bert_dir, out, CONLL_FORMAT, CONLL_FORMAT, *extra))
        return json.loads((out / "eval_results.json").read_text())["overall_f1"]

    untrained = f1(tmp_path / "untrained", "--learning_rate", "1e-12", "--max_steps", "1")
    trained = f1(tmp_path / "trained", "--learning_rate", "3e-3", "--num_train_epochs", "60", "--warmup_steps", "0")
    assert trained > untrained + 0.5, (untrained, trained)


BAD_INPUTS = {
    "tag_column_wrong": (["--label_column", "1"], "'NNP' is not an O, B-TYPE or I-TYPE tag: check --label_column"),
    "no_validation": (["--validation_file", ""], "needs both --train_file and --validation_file"),
    "token_column": (["--label_column", "0"], "--label_column 0 is the token itself"),
    "missing_file": (["--train_file", "nowhere.txt"], "--train_file 'nowhere.txt' does not exist"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_line_and_exit_2(case, tiny_bert_dir, tmp_path, capsys):
    extra, expected = BAD_INPUTS[case]
    args = ner_args(tiny_bert_dir, tmp_path / "out", CONLL_FORMAT, CONLL_FORMAT, "--max_steps", "1", *extra)
    assert_usage_error(runpy.run_path(str(FINETUNE))["main"], args, capsys, expected)


def test_a_sentence_without_tags_is_one_clear_error(tmp_path):
    path = tmp_path / "tokens_only.txt"
    path.write_text("hello\nworld\n")
    with pytest.raises(UsageError, match="line 1: 'hello' is not an O, B-TYPE or I-TYPE tag"):
        read_conll(str(path), "--train_file", -1)


def test_help_lists_the_recipes_flags_and_every_trainer_flag(capsys):
    with pytest.raises(SystemExit):
        run_cli(runpy.run_path(str(FINETUNE))["main"], ["--help"])
    text = capsys.readouterr().out
    for flag in ("--label_column", "--label_all_tokens", "--dataset_name", "--seeds", "--learning_rates",
                 "--gradient_accumulation_steps", "--push_to_hub", "--bf16"):  # fmt: skip
        assert flag in text
