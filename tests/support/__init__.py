"""Helpers shared by the test folders, imported explicitly (``from support.waits import wait_for``).

They used to live in tests/conftest.py and were imported as ``from conftest import ...``, which returned whichever
``conftest`` module pytest had loaded last (tests/store has one too): ``pytest tests/store tests/integration``
broke. ``pythonpath = ["tests"]`` (pyproject.toml) puts this package on the path whatever is collected.
"""
