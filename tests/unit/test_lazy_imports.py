"""workers/runtime/lazy_imports.py: pandas deferred behind stand-ins, in a fresh interpreter (sys.modules is global)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r'''
import sys
from workers.runtime.lazy_imports import defer_pandas, pandas_imported
assert defer_pandas()
import pymilvus  # imports pandas at module level
from pymilvus import MilvusClient, DataType
schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
assert not pandas_imported(), "pymilvus import + schema pulled pandas in"
import pandas as pd
assert not isinstance([1], pd.DataFrame)  # nothing can be a DataFrame before pandas is imported
from pandas.api.types import is_list_like
assert is_list_like([1]) is True and pandas_imported()  # the first call imports the real pandas
df = pd.DataFrame({"a": [1, 2]})
assert type(df).__module__.split(".")[0] == "pandas" and len(df) == 2 and df["a"].sum() == 3
assert isinstance(df, pymilvus.orm.schema.pd.DataFrame)  # stand-ins bound earlier now answer with the real class
assert not defer_pandas()  # a no-op once pandas is in
print("ok")
'''


def test_defer_pandas_until_first_use():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"
