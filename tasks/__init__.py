"""Domain code of agir-retrain: plain, typed Python that knows nothing of Prefect or Ray.

Foundations live at this level (records, errors, io, tables, settings); each stage has
its own folder. Only ``prefect_tasks`` imports Prefect and only ``ray_pool`` imports Ray.
"""
