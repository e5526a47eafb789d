# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo
# a large jsonl(.gz) corpus with a text field, for the streaming benchmark
LARGE_CORPUS ?= ../shared/data/gutenberg-large.jsonl.gz

.PHONY: demo test test-fast style quality bench bench-quality bench-ablation gpu-wheels gpu-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# deepspeed is an optional extra for users; the tests exercise it, so `make` installs it too
$(STAMP): $(BIN)/python requirements.txt pyproject.toml
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet -e ".[deepspeed]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python tokenizer/train_tokenizer.py --config recipes/configs/tokenizer-demo.yaml --output_dir $(DEMO_DIR)/tokenizer
	$(BIN)/python recipes/demo.py --tokenizer_dir $(DEMO_DIR)/tokenizer --output_dir $(DEMO_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

style: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

quality: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/tokenizer_throughput.py
	$(BIN)/python benchmarks/data_throughput.py
	$(BIN)/python benchmarks/pretrain_throughput.py --tokenizer $(DEMO_DIR)/tokenizer --sizes small,mini,base --steps 6
	$(BIN)/python benchmarks/pretrain_levers.py --sizes small,mini --steps 5
	$(BIN)/python benchmarks/precision_parity.py --tokenizer $(DEMO_DIR)/tokenizer
	$(BIN)/python benchmarks/glue_throughput.py --tokenizer $(DEMO_DIR)/tokenizer --sizes small,mini --steps 8
	$(BIN)/python benchmarks/glue_parity.py
	$(BIN)/python benchmarks/qa_ner_parity.py
	$(BIN)/python benchmarks/streaming_pipeline.py --corpus $(LARGE_CORPUS) --megabytes 5 --steps 20
	$(BIN)/python benchmarks/streaming_memory.py --corpus $(LARGE_CORPUS) --megabytes 300 --tokenizer $(DEMO_DIR)/tokenizer
	$(BIN)/python benchmarks/deepspeed_memory.py
	$(BIN)/python benchmarks/report.py

# quality per compute on LARGE_CORPUS (about 2.5 hours on 2 CPU cores): a 30,522-entry tokenizer on all but its last
# 300 documents, a 60-minute bert-mini, what it buys on GLUE, and the time-budget race against run_mlm.py's way
QUALITY_DIR ?= runs/quality
bench-quality: $(STAMP)
	mkdir -p $(QUALITY_DIR)
	zcat -f $(LARGE_CORPUS) | head -n -300 | gzip -1 > $(QUALITY_DIR)/train.jsonl.gz
	zcat -f $(LARGE_CORPUS) | tail -n 300 > $(QUALITY_DIR)/held_out.jsonl
	$(BIN)/python tokenizer/train_tokenizer.py --train_files $(QUALITY_DIR)/train.jsonl.gz --vocab_size 30522 \
		--min_frequency 2 --output_dir $(QUALITY_DIR)/tokenizer-30522
	$(BIN)/python recipes/pretrain.py --config recipes/configs/bert-mini.yaml --train_files $(QUALITY_DIR)/train.jsonl.gz \
		--tokenizer_name_or_path $(QUALITY_DIR)/tokenizer-30522 --output_dir $(QUALITY_DIR)/bert-mini-60min \
		--overwrite_output_dir true --max_steps 4400 --max_train_time 3600 --eval_steps 500 --save_steps 1000 \
		--logging_steps 50 --report_to none
	$(BIN)/python recipes/evaluate_mlm.py --model_name_or_path $(QUALITY_DIR)/bert-mini-60min \
		--validation_files $(QUALITY_DIR)/held_out.jsonl --output_file $(QUALITY_DIR)/bert-mini-60min/mlm_eval.json
	$(BIN)/python benchmarks/glue_pretraining_value.py --model $(QUALITY_DIR)/bert-mini-60min \
		--work_dir $(QUALITY_DIR)/glue_pretraining_value
	$(BIN)/python benchmarks/time_to_quality.py --corpus $(LARGE_CORPUS) --tokenizer $(QUALITY_DIR)/tokenizer-30522 \
		--work_dir $(QUALITY_DIR)/time_to_quality
	$(BIN)/python benchmarks/report.py

# what each budget lever buys at equal wall-clock on LARGE_CORPUS (10 minutes a run, about 2.5 hours on 2 CPU cores;
# it runs in parts: finished runs stay in benchmarks/results/recipe_ablation.json)
bench-ablation: $(STAMP)
	$(BIN)/python benchmarks/recipe_ablation.py --corpus $(LARGE_CORPUS)
	$(BIN)/python benchmarks/report.py

# The first thing to run on a GPU machine (benchmarks/gpu_check.py): tokens/s, MFU, data wait and host syncs of
# bert-base on one GPU; with two or more, DDP and ZeRO-2 saved and resumed. GPU_PYTHON is the Python that has a CUDA
# torch and this repository's requirements. On a machine that cannot reach PyPI, run `make gpu-wheels` where it can
# and copy .whl along: gpu-check installs those wheels into GPU_SITE, beside (never over) that machine's torch.
GPU_PYTHON ?= python3
WHEELS ?= .whl
GPU_SITE ?= /tmp/bert-recipes-site
gpu-wheels: $(STAMP)
	bash benchmarks/gpu_wheels.sh $(WHEELS)

gpu-check:
	if ls $(WHEELS)/*.whl >/dev/null 2>&1; then $(GPU_PYTHON) -m pip install -q --no-index --no-deps --no-compile \
		--no-cache-dir --upgrade --target $(GPU_SITE) $(WHEELS)/*.whl; fi
	PYTHONPATH=$(GPU_SITE):$(CURDIR)/src $(GPU_PYTHON) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) runs
