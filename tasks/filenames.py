"""Every file name the project writes, in one place (folders are relative to an output root).

A stage's module imports the names it writes or reads from here, so a reader, a test or
another tool finds the whole layout on one screen.
"""

# Dataset tables and report (ingest, the build-dataset flow).
RUNS_FILE = "runs.parquet"
SCORED_FILE = "scored.parquet"
PAIRS_FILE = "pairs.parquet"
GARBLE_REQUESTS_FILE = "garble_requests.parquet"
QUARANTINE_FILE = "quarantine.jsonl"
REPORT_FILE = "report.json"

# Training files the dataset flow exports, split by run, named by what their rows are (TRL's
# dataset types). Each objective says which of them it reads (``splits``); the folders keep
# the names datasets have always had.
PREFERENCE_TRAIN = "dpo/train.jsonl"  # prompt, chosen, rejected
PREFERENCE_EVAL = "dpo/eval.jsonl"
COMPLETION_TRAIN = "sft/train.jsonl"  # prompt, completion (the records that freed space)
COMPLETION_EVAL = "sft/eval.jsonl"
LABELLED_TRAIN = "kto/train.jsonl"  # prompt, completion, label (unpaired preference)
LABELLED_EVAL = "kto/eval.jsonl"  # not exported; read when a user supplies one

# A training run's outputs (the curves are named by each objective's module).
ADAPTER_FILE = "adapter_model.safetensors"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "train_config.yaml"
CARD_FILE = "README.md"

# An evaluation's files (the contract of shared/spec/environment.md).
TASKS_FILE = "tasks.jsonl"
COMPLETIONS_FILE = "completions.jsonl"
EPISODES_FILE = "episodes.parquet"
EVAL_JSON = "eval.json"
EVAL_MD = "eval.md"
EVAL_PNG = "eval.png"

# A comparison of objectives.
COMPARE_JSON = "compare.json"
COMPARE_MD = "compare.md"
COMPARE_PNG = "compare.png"

# An archive's manifest.
MANIFEST = "MANIFEST.json"

# Generations: who collected a dataset's runs (in the dataset folder), and what a window
# of generations trained an adapter on (beside the adapter).
GENERATION_FILE = "generation.json"
LINEAGE_FILE = "lineage.json"
