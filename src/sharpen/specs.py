"""Loading a user's object from a spec: "path/to/file.py:name" or "package.module:name".

Tasks, rewards and anything else a user brings are named this way in configs and on the
command line; the file is imported under a stable private module name (so dataclasses and
pickling inside it work), once per process.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any


class SpecError(LookupError):
    """The spec does not name an importable object; the message says what is missing."""


class UserCodeError(RuntimeError):
    """A user's own function (a reward function, a task factory, a checker) raised; the
    message names the function, its file and what it was doing, and says what it raised."""


def describe_function(function: Any) -> str:
    """"'name' (path/to/file.py:line)": how an error names a user's function."""
    target = inspect.unwrap(function)
    name = getattr(target, "__qualname__", None) or type(target).__qualname__
    try:
        where = f"{inspect.getsourcefile(target)}:{inspect.getsourcelines(target)[1]}"
    except (OSError, TypeError):
        where = getattr(inspect.getmodule(target), "__name__", "unknown file")
    return f"{name!r} ({where})"


def raised(error: BaseException) -> str:
    """"ZeroDivisionError: division by zero": what an exception says, in one line."""
    return f"{type(error).__name__}: {error}".splitlines()[0]


def is_file_spec(where: str) -> bool:
    return where.endswith(".py") or "/" in where or "\\" in where


def load_object(spec: str) -> Any:
    """The object that `spec` ("file.py:name" or "module:name") names."""
    where, _, attr = spec.rpartition(":")
    if not where or not attr:
        raise SpecError(f"{spec!r} is not 'path/to/file.py:name' or 'module:name'")
    if is_file_spec(where):
        path = Path(where).expanduser().resolve()
        if not path.is_file():
            raise SpecError(f"file {where!r} not found")
        module_name = "sharpen_user_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
        module = sys.modules.get(module_name)
        if module is None:
            module_spec = importlib.util.spec_from_file_location(module_name, path)
            if module_spec is None or module_spec.loader is None:
                raise SpecError(f"cannot import {where!r} as Python source")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_name] = module
            try:
                module_spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[module_name]
                raise
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as e:
            if e.name is None or not where.startswith(e.name):
                raise  # the module exists but one of its own imports is missing
            raise SpecError(f"no module {where!r} ({e}); install it, or point at a file with 'path/to/file.py:name'") from e
    if not hasattr(module, attr):
        raise SpecError(f"{where!r} has no attribute {attr!r}")
    return getattr(module, attr)
