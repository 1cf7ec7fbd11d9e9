"""Run formats: each a module (or package) owning its detection, validation, parsing and
post-shard step, behind the ``RunFormat`` protocol (``base.py``) and one registry
(``registry.py``). See ``docs/run-format.md`` ("Adding a run format").
"""
