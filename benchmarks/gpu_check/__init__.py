"""The prepared GPU check (issue 15); run it with ``python -m benchmarks.gpu_check``."""
