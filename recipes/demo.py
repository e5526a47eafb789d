"""The end-to-end demo behind `make demo` (the tokenizer is trained by the Makefile's first step).

python recipes/demo.py --tokenizer_dir runs/demo/tokenizer --output_dir runs/demo
"""

from dataclasses import dataclass, field
from pathlib import Path

from bert_recipes.config import parse_config
from bert_recipes.demo import fill_mask_examples, finetune_demo, pretrain_demo, results_table
from bert_recipes.errors import run_cli


@dataclass
class DemoConfig:
    tokenizer_dir: str = field(default="runs/demo/tokenizer", metadata={"help": "Tokenizer from the first step."})
    output_dir: str = field(default="runs/demo", metadata={"help": "Where the demo's runs go."})
    pretrain_config: str = field(default="recipes/configs/demo.yaml", metadata={"help": "Pretraining recipe."})
    glue_data_dir: str = field(default="data/glue", metadata={"help": "GLUE samples in the original layout."})


def main(argv: list[str]) -> None:
    (demo,) = parse_config([DemoConfig], argv)
    out = Path(demo.output_dir)
    metrics, frequent = pretrain_demo(demo.pretrain_config, demo.tokenizer_dir, out / "bert")
    print("\nfill-mask with the demo BERT:")
    print("\n".join(f"  {line}" for line in fill_mask_examples(out / "bert")))
    sst2, majority = finetune_demo(out / "bert", demo.glue_data_dir, out / "glue")
    print("\nresults (held-out corpus documents; SST-2 sample dev set):")
    print(
        results_table(
            [
                ("MLM accuracy (baseline: most frequent token)", metrics["eval_mlm_accuracy"], frequent),
                ("SST-2 accuracy (baseline: majority class)", sst2["accuracy"], majority["accuracy"]),
            ]
        )
    )
    print(f"MLM perplexity {metrics['eval_perplexity']:.1f}; NSP accuracy {metrics.get('eval_nsp_accuracy', 0):.4f}")


if __name__ == "__main__":
    run_cli(main, init_state=False)
