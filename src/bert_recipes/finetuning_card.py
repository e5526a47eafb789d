"""The card of a fine-tuned model (GLUE, SQuAD, NER): its task, base model, dev results as a model-index, and
the fine-tuning arguments."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from bert_recipes.card_files import read_run_args, read_template
from bert_recipes.hub import REPO_ID

GLUE_DATASET = "nyu-mll/glue"


FINETUNING_HYPERPARAMETERS = (
    "max_seq_length", "per_device_train_batch_size", "learning_rate", "learning_rates", "num_train_epochs",
    "max_steps", "warmup_steps", "weight_decay", "mixed_precision", "seed", "seeds",
)  # fmt: skip


@dataclass(frozen=True)
class FinetunedTask:
    """How a card names a fine-tuning task: its pipeline, its title, its Hub dataset, the scale of its metrics."""

    pipeline_tag: str
    title: str
    dataset: str | None
    points: float  # what a metric value is multiplied by to read in points: SQuAD's come in points already


FINETUNED_TASKS = {
    "squad": FinetunedTask("question-answering", "SQuAD v1.1", "rajpurkar/squad", 1),
    "squad_v2": FinetunedTask("question-answering", "SQuAD v2.0", "rajpurkar/squad_v2", 1),
    "ner": FinetunedTask("token-classification", "named-entity recognition", None, 100),
}


def finetuned_task(name: str) -> FinetunedTask:
    """A recipe's task by its name; any other name is a GLUE task."""
    return FINETUNED_TASKS.get(name, FinetunedTask("text-classification", f"GLUE {name.upper()}", GLUE_DATASET, 100))


def result_rows(results: dict[str, dict[str, float]], kinds: dict[str, FinetunedTask]) -> list[dict[str, str]]:
    return [
        {"task": task, "metric": name, "value": f"{kinds[task].points * value:.2f}"}
        for task, metrics in results.items()
        for name, value in metrics.items()
        if name != "learning_rate"
    ]


def glue_eval_results(results: dict[str, dict[str, float]] | None) -> list[EvalResult] | None:
    return finetuning_eval_results(results or {}, {name: finetuned_task(name) for name in results or {}})


def finetuning_eval_results(
    results: dict[str, dict[str, float]], kinds: dict[str, FinetunedTask]
) -> list[EvalResult] | None:
    """The results as a model-index; counts (SQuAD's totals, NER's entity numbers) and thresholds are not scores."""
    found = [
        EvalResult(
            task_type=kinds[task].pipeline_tag,
            dataset_type=kinds[task].dataset or task,
            dataset_name=kinds[task].title,
            dataset_config=task if kinds[task].dataset == GLUE_DATASET else None,
            dataset_split="validation",
            metric_type=name,
            metric_value=round(kinds[task].points * value, 2),
        )
        for task, metrics in results.items()
        for name, value in metrics.items()
        if name != "learning_rate" and not name.endswith(("total", "_number", "_thresh"))
    ]
    return found or None


def finetuning_card(
    output_dir: str | Path,
    results: dict[str, dict[str, float]],
    base_model: str,
    repo_id: str | None = None,
    language: str = "en",
    license: str = "apache-2.0",
) -> ModelCard:
    """The card of a model fine-tuned on GLUE task(s), SQuAD (`squad`, `squad_v2`) or NER (`ner`): `results` holds
    each task's median dev metrics, as the recipes write them to eval_results.json."""
    out = Path(output_dir)
    repo_id = repo_id or out.resolve().name
    args = read_run_args(out)
    kinds = {name: finetuned_task(name) for name in results}
    first = next(iter(kinds.values()))
    # the metadata's base_model must be a Hub id: a local checkpoint is named in the text only
    on_hub = not Path(base_model).exists() and REPO_ID.match(base_model) is not None
    card_data = ModelCardData(
        language=language,
        license=license,
        library_name="transformers",
        pipeline_tag=first.pipeline_tag,
        tags=[
            "bert",
            first.pipeline_tag,
            *(["glue"] if first.dataset == GLUE_DATASET else []),
            *results,
            "bert-recipes",
        ],
        datasets=sorted({kind.dataset for kind in kinds.values() if kind.dataset}) or None,
        base_model=base_model if on_hub else None,
        model_name=repo_id,
        eval_results=finetuning_eval_results(results, kinds),
    )
    return ModelCard.from_template(
        card_data,
        template_str=read_template("finetuned_bert.md"),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        base_model=f"[{base_model}](https://huggingface.co/{base_model})" if on_hub else f"`{Path(base_model).name}`",
        tasks=", ".join(kind.title for kind in kinds.values()),
        pipeline_tag=first.pipeline_tag,
        glue=result_rows(results, kinds),
        hyperparameters={k: args[k] for k in FINETUNING_HYPERPARAMETERS if k in args},
    )
