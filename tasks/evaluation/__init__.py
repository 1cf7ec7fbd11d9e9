"""Evaluation: tasks, completions, episodes fanned out, metrics with intervals."""
