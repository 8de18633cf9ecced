"""lookstream benchmarks: ``python -m bench --help`` (pipeline, on an embedded stack) and bench/models.py (models)."""
