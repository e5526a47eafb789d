"""The question-answering recipe: windows over long contexts, spans back to answers, the official SQuAD metrics
against hand-computed values, and the recipe end to end on the SQuAD samples with a tiny random BERT."""

from __future__ import annotations

import json
import re
import runpy
import shlex
from pathlib import Path

import datasets
import evaluate
import numpy as np
import pytest
from transformers import AutoTokenizer

from bert_recipes.config import parse_config
from bert_recipes.errors import UsageError, run_cli
from bert_recipes.finetuning import RENAMED_FLAGS
from bert_recipes.metrics import SQUAD_METRIC
from bert_recipes.ner import NER_ARGUMENTS
from bert_recipes.qa import QA_ARGUMENTS, QaDataConfig, decode_answers, read_squad_json, tokenize_squad
from bert_recipes.qa.data import training_windows
from tests.conftest import REPO_ROOT, assert_usage_error
from tests.test_distributed import assert_ok, launch

SQUAD = REPO_ROOT / "data" / "squad"
FINETUNE = REPO_ROOT / "recipes" / "finetune_qa.py"
# a window of 48 tokens moving by 16: the context of the test below spans more than three of them
SMALL_WINDOWS = QaDataConfig(max_seq_length=48, doc_stride=16)


pytestmark = pytest.mark.usefixtures("one_thread")


def squad_metric(version: str):
    return evaluate.load(SQUAD_METRIC, config_name=version, keep_in_memory=True)


def test_v1_scores_the_best_gold_answer_after_normalisation():
    predictions = [
        {"id": "a", "prediction_text": "Broncos"},  # gold "Denver Broncos": P 1, R 1/2, F1 2/3; not exact
        {"id": "b", "prediction_text": "the  Carolina Panthers!"},  # equal to the second gold answer once normalised
    ]
    references = [
        {"id": "a", "answers": {"text": ["Denver Broncos", "Denver"], "answer_start": [0, 0]}},
        {"id": "b", "answers": {"text": ["Panthers", "Carolina Panthers"], "answer_start": [0, 0]}},
    ]
    scores = squad_metric("squad").compute(predictions=predictions, references=references)
    assert scores == pytest.approx({"exact_match": 50.0, "f1": 100 * (2 / 3 + 1) / 2})


def test_v2_scores_no_answer_and_finds_the_best_threshold():
    predictions = [
        {"id": "has", "prediction_text": "Normandy", "no_answer_probability": 0.1},
        {"id": "none_right", "prediction_text": "", "no_answer_probability": 0.9},
        {"id": "none_wrong", "prediction_text": "France", "no_answer_probability": 0.5},
    ]
    references = [
        {"id": "has", "answers": {"text": ["Normandy", "in Normandy"], "answer_start": [3, 0]}},
        {"id": "none_right", "answers": {"text": [], "answer_start": []}},
        {"id": "none_wrong", "answers": {"text": [], "answer_start": []}},
    ]
    scores = squad_metric("squad_v2").compute(predictions=predictions, references=references)
    assert scores == pytest.approx(
        {
            "exact": 200 / 3, "f1": 200 / 3, "total": 3,
            "HasAns_exact": 100.0, "HasAns_f1": 100.0, "HasAns_total": 1,
            "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2,
            # abstaining above 0.1 drops "France" and keeps "Normandy": all three right
            "best_exact": 100.0, "best_exact_thresh": 0.1, "best_f1": 100.0, "best_f1_thresh": 0.1,
        }
    )  # fmt: skip


def long_context_rows(tokenizer) -> list[dict]:
    """One question per place a three-word answer can start in a 60-word context."""
    words = [f"w{i}" for i in range(60)]
    context = " ".join(words)
    rows = []
    for first in range(len(words) - 3):
        text = " ".join(words[first : first + 3])
        rows.append({"id": str(first), "question": "which three words come here?", "context": context,
                     "answers": {"text": [text], "answer_start": [context.index(f"w{first} ")]}})  # fmt: skip
    return rows


def test_windows_cover_a_long_context_and_mark_an_answer_only_where_it_is_whole(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    rows = long_context_rows(tokenizer)
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    encoded = training_windows(columns, tokenizer, SMALL_WINDOWS)
    windows = tokenizer([rows[0]["question"]], [rows[0]["context"]], truncation="only_second", max_length=48,
                        stride=16, return_overflowing_tokens=True, return_offsets_mapping=True)  # fmt: skip
    assert len(windows["input_ids"]) > 3, "the context must span more than three windows"
    per_question = len(windows["input_ids"])
    cut, found = 0, 0
    for i, (start, end) in enumerate(zip(encoded["start_positions"], encoded["end_positions"], strict=True)):
        row, window = rows[i // per_question], i % per_question
        offsets, sequence = windows["offset_mapping"][window], windows.sequence_ids(window)
        spans = [offsets[k] for k in range(len(offsets)) if sequence[k] == 1]
        first = row["answers"]["answer_start"][0]
        last = first + len(row["answers"]["text"][0])
        whole = spans[0][0] <= first and last <= spans[-1][1]
        if whole:
            found += 1
            assert row["context"][offsets[start][0] : offsets[end][1]] == row["answers"]["text"][0]
        else:
            assert start == end == 0, "an answer not whole in its window is marked at [CLS]"
            cut += spans[0][0] < last and first < spans[-1][1]  # part of the answer is in the window
    assert cut > 0, "some answer must cross a window edge"
    assert found >= len(rows), "every answer is whole in at least one window"


def test_the_best_span_over_all_windows_becomes_the_answer_and_v2_can_abstain(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    rows = long_context_rows(tokenizer)[40:41]  # w40 w41 w42: in the later windows only
    questions = datasets.Dataset.from_list(rows)
    dev = tokenize_squad(datasets.DatasetDict(train=questions, validation=questions), tokenizer, SMALL_WINDOWS)[1]
    start, end = np.zeros((len(dev), 48)), np.zeros((len(dev), 48))
    context = rows[0]["context"]
    target = (context.index("w40 "), context.index("w42") + 3)
    for window, offsets in enumerate(dev["offset_mapping"]):
        for k, span in enumerate(offsets):
            start[window, k] += 2.0 * (span is not None and span[0] == target[0]) + 0.1 * window
            end[window, k] += 2.0 * (span is not None and span[1] == target[1])
        start[window, 0], end[window, 0] = 1.0, 1.0  # [CLS]: no answer scores 2 in every window
    whole_in = [w for w, offsets in enumerate(dev["offset_mapping"]) if [target[0], target[1]] in
                [[a[0], b[1]] for a in offsets if a for b in offsets if b]]  # fmt: skip
    assert whole_in and 0 not in whole_in, "the answer must lie in a later window only"
    answers = decode_answers(questions, dev, start, end, SMALL_WINDOWS)
    assert answers.texts == {"40": "w40 w41 w42"}
    odds = 2.0 - (4.0 + 0.1 * max(whole_in))  # the span of the best window against [CLS]'s lowest score
    assert answers.null_odds["40"] == pytest.approx(odds)
    for threshold, answer in ((odds - 0.05, ""), (odds + 0.05, "w40 w41 w42")):
        v2 = QaDataConfig(max_seq_length=48, doc_stride=16, version_2_with_negative=True,
                          null_score_diff_threshold=threshold)  # fmt: skip
        assert decode_answers(questions, dev, start, end, v2).texts == {"40": answer}


def test_an_unanswerable_question_trains_toward_cls(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    v2 = read_squad_json(str(SQUAD / "v2.0" / "dev.json"), "--validation_file")
    unanswerable = v2.filter(lambda row: not row["answers"]["text"]).select(range(5))
    encoded = training_windows(unanswerable[:], tokenizer, QaDataConfig(max_seq_length=64, doc_stride=16))
    assert len(encoded["input_ids"]) > 5 and set(encoded["start_positions"]) == set(encoded["end_positions"]) == {0}


def test_the_samples_read_as_the_official_files_hold_them():
    v1, v2 = (read_squad_json(str(SQUAD / v / "dev.json"), "--validation_file") for v in ("v1.1", "v2.0"))
    assert (len(v1), len(v2)) == (200, 200)
    assert sum(not row["answers"]["text"] for row in v2) == 109
    assert v1[0]["id"] == "56be4db0acb8001400a502ec" and len(v1[0]["answers"]["text"]) == 3


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: {"articles": d["data"]}, r"is not in the official SQuAD JSON format \(KeyError"),
        (lambda d: shift_first_answer(d), "is not at character"),
    ],
    ids=["no-data-key", "answer-offset-off"],
)
def test_a_malformed_squad_file_is_one_clear_error(change, expected, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(change(json.loads((SQUAD / "v1.1" / "dev.json").read_text()))))
    with pytest.raises(UsageError, match=expected):
        read_squad_json(str(path), "--validation_file")


def shift_first_answer(data: dict) -> dict:
    data["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] += 1
    return data


def qa_args(model: Path, out: Path, version: str, *extra: str) -> list[str]:
    return [
        "--model_name_or_path", str(model), "--output_dir", str(out),
        "--train_file", str(SQUAD / version / "train.json"), "--validation_file", str(SQUAD / version / "dev.json"),
        "--version_2_with_negative", str(version == "v2.0").lower(), "--max_seq_length", "96", "--doc_stride", "32",
        "--max_train_samples", "48", "--max_eval_samples", "40", "--per_device_train_batch_size", "8",
        "--report_to", "none", "--disable_tqdm", "true", "--mixed_precision", "no", *extra,
    ]  # fmt: skip


def recomputed_scores(out: Path, version: str) -> dict[str, float]:
    """The official metrics of predictions.json (and null_odds.json for v2.0) against the dev file."""
    texts = json.loads((out / "predictions.json").read_text())
    odds = json.loads((out / "null_odds.json").read_text()) if version == "v2.0" else {}
    dev = read_squad_json(str(SQUAD / version / "dev.json"), "--validation_file").select(range(40))
    name = "squad_v2" if version == "v2.0" else "squad"
    predictions = [{"id": q, "prediction_text": t, **({"no_answer_probability": odds[q]} if odds else {})}
                   for q, t in texts.items()]  # fmt: skip
    references = [{"id": row["id"], "answers": row["answers"]} for row in dev]
    return squad_metric(name).compute(predictions=predictions, references=references)


@pytest.mark.parametrize("version", ["v1.1", "v2.0"])
def test_the_recipe_writes_official_predictions_whose_scores_are_eval_results(version, tiny_bert_dir, tmp_path):
    out = tmp_path / "qa"
    run_cli(runpy.run_path(str(FINETUNE))["main"], qa_args(tiny_bert_dir, out, version, "--max_steps", "4",
                                                            "--seeds", "1,2,3"))  # fmt: skip
    predictions = json.loads((out / "predictions.json").read_text())
    dev = read_squad_json(str(SQUAD / version / "dev.json"), "--validation_file").select(range(40))
    assert list(predictions) == dev["id"] and all(isinstance(text, str) for text in predictions.values())
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved == pytest.approx(recomputed_scores(out, version))
    assert set(saved) >= ({"exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1"} if version == "v2.0"
                          else {"exact_match", "f1"})  # fmt: skip
    runs = json.loads((out / "runs.json").read_text())
    assert sorted(run["seed"] for run in runs["runs"]) == [1, 2, 3] and runs["median"]["f1"] == pytest.approx(
        sorted(run["metrics"]["f1"] for run in runs["runs"])[1]
    )
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForQuestionAnswering"]
    assert not list((out / "runs").rglob("model.safetensors")), "only the kept model stays"
    # resumed after it finished: read back, nothing trained or written again
    written = {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()}
    again = qa_args(
        tiny_bert_dir, out, version, "--max_steps", "4", "--seeds", "1,2,3", "--resume_from_checkpoint", "true"
    )
    run_cli(runpy.run_path(str(FINETUNE))["main"], again)
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()} == written


def test_training_on_the_dev_questions_learns_their_answers(tiny_bert_dir, tmp_path):
    """The whole path (windows, labels, loss, decoding) must carry signal: a tiny model that trains on the questions
    it answers ends far above the untrained one."""
    dev = str(SQUAD / "v1.1" / "dev.json")
    common = ["--train_file", dev, "--validation_file", dev, "--max_train_samples", "24", "--max_eval_samples", "24"]

    def f1(out: Path, *extra: str) -> float:
        args = qa_args(tiny_bert_dir, out, "v1.1", *extra)
        run_cli(runpy.run_path(str(FINETUNE))["main"], [*args, *common])
        return json.loads((out / "eval_results.json").read_text())["f1"]

    untrained = f1(tmp_path / "untrained", "--learning_rate", "1e-12", "--max_steps", "1")
    trained = f1(tmp_path / "trained", "--learning_rate", "3e-3", "--num_train_epochs", "40", "--warmup_steps", "0")
    assert trained > untrained + 30, (untrained, trained)


@pytest.mark.slow
def test_two_processes_answer_each_question_as_one_does(tiny_bert_dir, tmp_path):
    """Dev windows are split across ranks and gathered: answers must land on their own questions. With a zero
    learning rate both runs predict with the same seeded model, so the answers must be identical."""
    args = qa_args(tiny_bert_dir, tmp_path / "one", "v2.0", "--learning_rate", "1e-12", "--max_steps", "1")
    run_cli(runpy.run_path(str(FINETUNE))["main"], args)
    two = [a if a != str(tmp_path / "one") else str(tmp_path / "two") for a in args]
    assert_ok(launch("multi_cpu.yaml", FINETUNE, two, "--num_processes", "2", "--mixed_precision", "no"))
    one = json.loads((tmp_path / "one" / "predictions.json").read_text())
    assert json.loads((tmp_path / "two" / "predictions.json").read_text()) == one
    assert len(one) == 40 and len(set(one.values())) > 5, "the answers must differ between questions"


BAD_INPUTS = {
    "train_without_validation": (["--validation_file", ""], "needs both --train_file and --validation_file"),
    "stride_too_long": (["--doc_stride", "60"], "--doc_stride 60 must be above 0 and below half of"),
    "v2_data_as_v1": (["--validation_file", str(SQUAD / "v2.0" / "dev.json")], "pass --version_2_with_negative true"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_line_and_exit_2(case, tiny_bert_dir, tmp_path, capsys):
    extra, expected = BAD_INPUTS[case]
    args = qa_args(tiny_bert_dir, tmp_path / "out", "v1.1", "--max_steps", "1", *extra)
    assert_usage_error(runpy.run_path(str(FINETUNE))["main"], args, capsys, expected)


def test_help_lists_the_recipes_flags_and_every_trainer_flag(capsys):
    with pytest.raises(SystemExit):
        run_cli(runpy.run_path(str(FINETUNE))["main"], ["--help"])
    text = capsys.readouterr().out
    for flag in ("--version_2_with_negative", "--doc_stride", "--null_score_diff_threshold", "--seeds",
                 "--learning_rates", "--gradient_accumulation_steps", "--push_to_hub", "--bf16"):  # fmt: skip
        assert flag in text


def test_the_documented_commands_of_qa_and_ner_parse_and_name_files_that_exist():
    page = (REPO_ROOT / "docs" / "finetuning.md").read_text()
    section = page[page.index("## Question answering and NER") :]
    # a command runs to the first line that does not end in a backslash
    pattern = r"^(?:accelerate launch|python) recipes/finetune_(?:qa|ner).py.*?(?<!\\)$"
    commands = [c.replace("\\\n", " ") for c in re.findall(pattern, section, re.M | re.S)]
    assert len(commands) == 5
    for command in commands:
        script, args = re.search(r"(recipes/finetune_\w+\.py)(.*)", command).groups()
        arguments = QA_ARGUMENTS if script.endswith("qa.py") else NER_ARGUMENTS
        data, model, *_ = parse_config(arguments, shlex.split(args), renamed=RENAMED_FLAGS)
        assert model.model_name_or_path.startswith("runs/")
        for path in (data.train_file, data.validation_file):
            assert path is None or (REPO_ROOT / path).is_file(), path
