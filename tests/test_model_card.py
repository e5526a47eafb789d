"""Model cards: front matter that huggingface_hub parses back, and a body filled from the run's own files."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from huggingface_hub import ModelCard, metadata_load
from transformers import BertConfig, BertModel

from bert_recipes.card_files import read_metrics
from bert_recipes.errors import UsageError
from bert_recipes.evaluation import HeldOutDataConfig, MlmEvalConfig, evaluate_checkpoints, write_results
from bert_recipes.finetuning import RunRecord, summarize_runs
from bert_recipes.finetuning_card import finetuning_card
from bert_recipes.glue.report import write_glue_results
from bert_recipes.model_card import card_for_folder, parameter_count, pretraining_card, tokenizer_card
from tests.hub_fixtures import make_checkpoint, make_run

GLUE = {"rte": {"accuracy": 0.5523, "learning_rate": 2.0e-5}, "mrpc": {"accuracy": 0.7, "f1": 0.81}}


def saved(card: ModelCard, path) -> ModelCard:
    card.save(path / "README.md")
    return ModelCard.load(path / "README.md")


def glue_summary(tmp_path) -> dict:
    """glue_results.json as recipes/finetune_glue.py writes it: RTE over three seeds, MRPC over one."""
    rte = [RunRecord(2e-5, 1, {"accuracy": 0.5523}), RunRecord(2e-5, 2, {"accuracy": 0.5}),
           RunRecord(2e-5, 3, {"accuracy": 0.6}), RunRecord(5e-5, 1, {"accuracy": 0.4})]  # fmt: skip
    mrpc = [RunRecord(2e-5, 42, {"accuracy": 0.7, "f1": 0.81})]
    write_glue_results(tmp_path / "glue", {"rte": summarize_runs(rte), "mrpc": summarize_runs(mrpc)})
    return json.loads((tmp_path / "glue" / "glue_results.json").read_text())


def test_pretraining_card_metadata_parses_back_with_the_glue_model_index(tiny_bert_dir, tmp_path):
    run = make_run(tiny_bert_dir, tmp_path)
    card = saved(pretraining_card(run, "alice/tiny-bert", glue=glue_summary(tmp_path)), tmp_path)
    meta = metadata_load(tmp_path / "README.md")
    assert (meta["license"], meta["language"], meta["library_name"]) == ("apache-2.0", "en", "transformers")
    assert meta["pipeline_tag"] == "fill-mask" and {"bert", "fill-mask", "next-sentence-prediction"} <= set(
        meta["tags"]
    )
    results = {(r.dataset_config, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results == {("rte", "accuracy"): 55.23, ("mrpc", "accuracy"): 70.0, ("mrpc", "f1"): 81.0}
    assert all(
        r.dataset_type == "nyu-mll/glue" and r.task_type == "text-classification" for r in card.data.eval_results
    )
    # the median of the chosen learning rate's three seeds, their range, and the seed count
    assert "| rte | accuracy | 55.23 | 50.00 to 60.00 | 3 |" in card.text
    assert "| mrpc | f1 | 81.00 | - | 1 |" in card.text


def test_pretraining_card_shows_the_models_own_held_out_mlm_scores(tiny_bert_dir, tmp_path):
    run = make_run(tiny_bert_dir, tmp_path)
    held_out = tmp_path / "held_out.txt"
    held_out.write_text("The cat sat on the mat. It was warm there.\nA dog ran by. It did not stop. Then rain.\n" * 8)
    scores = tmp_path / "mlm_eval.json"
    config = MlmEvalConfig([str(tiny_bert_dir), str(run)], [str(held_out)], output_file=str(scores))
    data = HeldOutDataConfig(max_seq_length=32, eval_examples=16)
    results = evaluate_checkpoints(config, data)
    write_results(scores, results, config, data)
    mine = results[1]
    text = pretraining_card(run, "alice/tiny-bert", mlm_eval=json.loads(scores.read_text())).text
    assert "### Held-out masked language modelling" in text and "`held_out.txt`" in text
    assert f"| {mine['eval_mlm_loss']:.4f} | {mine['eval_perplexity']:.2f} | {mine['eval_mlm_accuracy']:.4f} |" in text
    assert f"{mine['eval_masked_tokens']:,} (15%, seed 0)" in text
    others = {"settings": json.loads(scores.read_text())["settings"], "results": [results[0], results[0]]}
    with pytest.raises(UsageError, match="scores 2 other models, not"):
        pretraining_card(run, "alice/tiny-bert", mlm_eval=others)


def test_pretraining_card_body_has_architecture_compute_metrics_and_curve(tiny_bert_dir, tmp_path):
    run = make_run(tiny_bert_dir, tmp_path)
    make_checkpoint(run, 4)  # its trainer state: 4 steps, 2,048 tokens, 120 s
    card = pretraining_card(run, "alice/tiny-bert")
    assert card.data.eval_results is None and card.data.base_model is None
    text = card.text
    assert "| 2 | 64 | 2 | 128 | " in text  # layers, hidden, heads, feed-forward from config.json
    assert "| tokens seen | 2,048 |" in text and "| training time | 0.0333 hours |" in text
    assert "| processes | 1 |" in text and "| hardware | " in text
    assert "| training MLM loss | 4.3000 |" in text and "| training NSP loss | 0.7000 |" in text
    assert "| max_seq_length | 64 |" in text and "`corpus.txt`" in text
    assert 'pipeline("fill-mask", model="alice/tiny-bert")' in text and "## Limitations" in text
    assert "![training curve](training_curve.png)" in text
    png = (run / "training_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (700, 400)


def test_a_hub_dataset_lands_in_the_metadata_and_nsp_off_drops_its_tag(tiny_bert_dir, tmp_path):
    run = make_run(tiny_bert_dir, tmp_path)
    args = {"dataset_name": "wikimedia/wikipedia", "dataset_config_name": "20231101.en", "no_nsp": True}
    (run / "training_args.yaml").write_text(yaml.safe_dump(args))
    card = pretraining_card(run, "alice/tiny-bert")
    assert card.data.datasets == ["wikimedia/wikipedia"] and "next-sentence-prediction" not in card.data.tags
    assert "(20231101.en)" in card.text and "next sentence prediction" not in card.text


def test_run_without_metrics_gets_a_card_without_a_curve(tiny_bert_dir, tmp_path):
    run = make_run(tiny_bert_dir, tmp_path)
    (run / "metrics.jsonl").unlink()
    card = pretraining_card(run)
    assert "No metrics were logged." in card.text and "training_curve" not in card.text
    assert not (run / "training_curve.png").exists()


def test_metrics_line_cut_short_by_a_killed_run_is_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    assert [r["step"] for r in read_metrics(path)] == [1, 2]


def test_parameter_count_matches_bert_model(tiny_bert_dir):
    config = json.loads((tiny_bert_dir / "config.json").read_text())
    assert parameter_count(config) == BertModel(BertConfig(**config)).num_parameters()


@pytest.mark.parametrize(
    ("base_model", "in_metadata"), [("alice/tiny-bert", True), ("LOCAL", False)], ids=["hub-id", "local-dir"]
)
def test_finetuning_card_names_its_base_model_and_results(base_model, in_metadata, tiny_bert_dir, tmp_path):
    base_model = str(tiny_bert_dir) if base_model == "LOCAL" else base_model
    card = saved(finetuning_card(tiny_bert_dir, {"rte": GLUE["rte"]}, base_model, "alice/tiny-rte"), tmp_path)
    assert card.data.pipeline_tag == "text-classification" and card.data.datasets == ["nyu-mll/glue"]
    assert card.data.base_model == (base_model if in_metadata else None)
    assert card.data.eval_results[0].dataset_config == "rte" and card.data.eval_results[0].metric_value == 55.23
    assert (
        "fine-tuned on GLUE RTE" in card.text and 'pipeline("text-classification", model="alice/tiny-rte")' in card.text
    )


def test_tokenizer_card_describes_the_vocabulary(tokenizer_dir, tmp_path):
    card = saved(tokenizer_card(tokenizer_dir, "alice/wordpiece"), tmp_path)
    assert "tokenizer" in card.data.tags and card.data.library_name == "transformers"
    assert card.data.pipeline_tag is None
    assert "| 2000 | True | 512 |" in card.text and 'AutoTokenizer.from_pretrained("alice/wordpiece")' in card.text


def test_card_for_folder_tells_tokenizer_pretrained_and_finetuned_apart(tiny_bert_dir, tokenizer_dir, tmp_path):
    assert card_for_folder(tokenizer_dir).data.tags[0] == "tokenizer"
    assert card_for_folder(tiny_bert_dir).data.pipeline_tag == "fill-mask"
    task = tmp_path / "rte"
    shutil.copytree(tiny_bert_dir, task)
    config = json.loads((task / "config.json").read_text())
    (task / "config.json").write_text(json.dumps({**config, "architectures": ["BertForSequenceClassification"]}))
    (task / "eval_results.json").write_text(json.dumps(GLUE["rte"]))
    (task / "finetune_args.yaml").write_text(yaml.safe_dump({"model_name_or_path": "alice/tiny-bert"}))
    card = card_for_folder(task, "alice/tiny-rte")
    assert card.data.pipeline_tag == "text-classification" and card.data.base_model == "alice/tiny-bert"


@pytest.mark.parametrize(
    ("task", "pipeline_tag", "dataset", "shown"),
    [
        ("squad_v2", "question-answering", "rajpurkar/squad_v2", {"exact": 61.5, "f1": 64.25}),
        ("ner", "token-classification", None, {"overall_f1": 41.0}),
    ],
)
def test_a_qa_or_ner_card_names_its_task_and_scores_in_points(
    task, pipeline_tag, dataset, shown, tiny_bert_dir, tmp_path
):
    results = {"squad_v2": {"exact": 61.5, "f1": 64.25, "total": 200, "best_f1_thresh": -1.5},
               "ner": {"overall_f1": 0.41, "person_number": 105}}[task]  # fmt: skip
    card = saved(finetuning_card(tiny_bert_dir, {task: results}, "alice/tiny-bert", f"alice/tiny-{task}"), tmp_path)
    assert card.data.pipeline_tag == pipeline_tag and card.data.datasets == ([dataset] if dataset else None)
    # counts and thresholds are not scores: only the scores go into the model-index
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == shown
    assert f'pipeline("{pipeline_tag}", model="alice/tiny-{task}")' in card.text
