"""Unit tests see only the settings they set: no LOOKSTREAM_* variable leaks in from the shell."""

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for k in list(os.environ):
        if k.startswith("LOOKSTREAM_"):
            monkeypatch.delenv(k)
