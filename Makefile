# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo
# a large jsonl(.gz) corpus with a text field, for the streaming benchmark
LARGE_CORPUS ?= ../shared/data/gutenberg-large.jsonl.gz

.PHONY: demo test test-fast style quality bench clean

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
	$(BIN)/python benchmarks/pretrain_throughput.py --tokenizer $(DEMO_DIR)/tokenizer --sizes small,mini --steps 6
	$(BIN)/python benchmarks/pretrain_levers.py --size small --steps 5
	$(BIN)/python benchmarks/precision_parity.py --tokenizer $(DEMO_DIR)/tokenizer
	$(BIN)/python benchmarks/glue_throughput.py --tokenizer $(DEMO_DIR)/tokenizer --sizes small,mini --steps 8
	$(BIN)/python benchmarks/glue_parity.py
	$(BIN)/python benchmarks/streaming_pipeline.py --corpus $(LARGE_CORPUS) --megabytes 5 --steps 20
	$(BIN)/python benchmarks/deepspeed_memory.py
	$(BIN)/python benchmarks/report.py

clean:
	rm -rf $(VENV) runs
