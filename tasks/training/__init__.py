"""The training program: data checks, model setup, one module per objective, outputs.

Run it as ``accelerate launch -m agir_retrain.tasks.training --help``."""
