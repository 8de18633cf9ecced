"""Defer pandas until something really calls it (the query worker's footprint, issue 17).

pymilvus imports pandas at module level (``import pandas as pd``, ``from pandas.api.types import ...``, and
``pd.DataFrame`` in signatures evaluated at import) but uses it only to accept DataFrames and infer dtypes on
inserts. pandas costs ~40 MB of RSS per process; the query worker only searches. ``defer_pandas()`` puts stand-ins
into ``sys.modules``:

- a lower-case attribute (``pd.isna``, ``is_list_like``) is a function that imports the real pandas on its first
  call and then calls the real one;
- a capitalised attribute (``pd.DataFrame``) is a stand-in type: ``isinstance(x, pd.DataFrame)`` is False while
  pandas was never imported (nothing can be a DataFrame then) and asks the real class once it is; calling it or
  reading its attributes imports pandas and uses the real class.

So behaviour is unchanged; only the import moves to the first real use.
"""

from __future__ import annotations

import importlib
import sys
import types

_NAMES = ("pandas", "pandas.api", "pandas.api.types")


def _real(module: str) -> types.ModuleType:
    """The real module, importing pandas now if needed (the stand-ins leave sys.modules first)."""
    current = sys.modules.get(module)
    if current is not None and not isinstance(current, _Deferred):
        return current
    stand_ins = {n: sys.modules.pop(n) for n in _NAMES if isinstance(sys.modules.get(n), _Deferred)}
    try:
        importlib.import_module("pandas")
        return importlib.import_module(module)
    except BaseException:
        sys.modules.update(stand_ins)
        raise


def _imported() -> bool:
    mod = sys.modules.get("pandas")
    return mod is not None and not isinstance(mod, _Deferred)


class _DeferredTypeMeta(type):
    def __instancecheck__(cls, obj) -> bool:
        return _imported() and isinstance(obj, getattr(_real(cls._module), cls.__name__))

    def __subclasscheck__(cls, sub) -> bool:
        return _imported() and issubclass(sub, getattr(_real(cls._module), cls.__name__))

    def __call__(cls, *args, **kwargs):  # pd.DataFrame(...): a real use
        return getattr(_real(cls._module), cls.__name__)(*args, **kwargs)

    def __getattr__(cls, attr: str):  # pd.DataFrame.from_records: a real use
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(getattr(_real(cls._module), cls.__name__), attr)


class _Deferred(types.ModuleType):
    def __init__(self, name: str):
        super().__init__(name)
        self.__path__ = []  # a package: ``import pandas.api.types`` resolves through sys.modules

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        child = sys.modules.get(f"{self.__name__}.{attr}")
        if isinstance(child, _Deferred):
            return child
        if _imported():
            return getattr(_real(self.__name__), attr)
        if attr[:1].isupper():
            return _DeferredTypeMeta(attr, (), {"_module": self.__name__})
        module = self.__name__

        def call(*args, **kwargs):
            return getattr(_real(module), attr)(*args, **kwargs)

        call.__name__ = attr
        return call


def defer_pandas() -> bool:
    """Install the stand-ins (a no-op if pandas is already imported). Returns whether they were installed."""
    if any(n in sys.modules for n in _NAMES):
        return False
    for n in _NAMES:
        sys.modules[n] = _Deferred(n)
    return True


def pandas_imported() -> bool:
    return _imported()
