"""DeepSpeed's per-GPU memory estimate for model states of bert-base and bert-large under each ZeRO stage.

python benchmarks/deepspeed_memory.py      # needs: pip install -e .[deepspeed]
"""

from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
from reporting import save_result
from transformers import BertConfig, BertForPreTraining

from bert_recipes.config import parse_config

GIB = 2**30


def main() -> None:
    parse_config([])  # no flags: --help prints the usage, anything else is an error
    rows, raw = [], []
    for name, hidden, layers in (("bert-base", 768, 12), ("bert-large", 1024, 24)):
        config = BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
                            intermediate_size=4 * hidden)  # fmt: skip
        params = sum(p.numel() for p in BertForPreTraining(config).parameters())
        largest = config.vocab_size * hidden
        for gpus in (1, 8):
            cells = []
            for offload in (False, True):
                zero2 = estimate_zero2_model_states_mem_needs(params, gpus, 1, cpu_offload=offload)[1]
                zero3 = estimate_zero3_model_states_mem_needs(
                    params, largest, gpus, 1, cpu_offload=offload, cpu_offload_params=offload, zero_init=True
                )[1]
                cells.append((zero2, zero3))
            row = [cells[0][0], cells[1][0], cells[0][1], cells[1][1]]
            raw.append({"model": name, "parameters": params, "gpus": gpus, "bytes": row})
            rows.append([f"{name} ({params / 1e6:.0f}M)", gpus, *(f"{v / GIB:.2f} GB" for v in row)])
    header = ["model", "GPUs", "ZeRO-1/2", "ZeRO-2 + CPU offload", "ZeRO-3", "ZeRO-3 + offload"]
    save_result("deepspeed_memory", {"rows": raw}, header, rows)


if __name__ == "__main__":
    main()
