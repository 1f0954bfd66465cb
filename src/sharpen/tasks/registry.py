"""Task names → factories, and loading a user's own task from a file or module.

    get_task("addition", digits=3)              # a registered task
    get_task("path/to/my_task.py:make_task")    # a factory (or Task object) in a file
    get_task("my_package.my_module:make_task")  # ... or in an importable module

A factory is any function that returns a `Task`; its keyword arguments are the task's options.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Optional, TypeVar, Union, overload

from sharpen.specs import SpecError, UserCodeError, describe_function, load_object, raised
from sharpen.tasks.base import Task, guard_checker
from sharpen.tasks.errors import TaskDataError, TaskOptionError, UnknownTaskError

TaskFactory = Callable[..., Task]
F = TypeVar("F", bound=TaskFactory)
_FACTORIES: dict[str, TaskFactory] = {}


@overload
def register_task(name: str) -> Callable[[F], F]: ...
@overload
def register_task(name: str, factory: F) -> F: ...
def register_task(name: str, factory: Optional[F] = None) -> Union[F, Callable[[F], F]]:
    """Register `factory` under `name`; used plainly or as a decorator `@register_task(name)`."""
    if factory is None:
        return lambda f: register_task(name, f)
    if ":" in name:
        raise ValueError(f"task name {name!r} may not contain ':' (reserved for 'file.py:factory' specs)")
    if name in _FACTORIES and _FACTORIES[name] is not factory:
        raise ValueError(f"a task named {name!r} is already registered ({_FACTORIES[name].__qualname__})")
    _FACTORIES[name] = factory
    return factory


def list_tasks() -> list[str]:
    """The registered task names, sorted."""
    return sorted(_FACTORIES)


def get_task(name: str, **options: Any) -> Task:
    """The task registered as `name` (or loaded from a `file.py:factory` spec), built with options."""
    if name in _FACTORIES:
        return _build(name, _FACTORIES[name], options)
    if ":" in name:
        return _build(name, _load(name), options)
    raise UnknownTaskError(
        f"unknown task {name!r}; known tasks: {', '.join(list_tasks())}; "
        "or give your own as 'path/to/file.py:factory' or 'module:factory'"
    )


def _build(name: str, factory: Union[TaskFactory, Task], options: dict[str, Any]) -> Task:
    """Call the factory with the options after checking that it takes them."""
    if isinstance(factory, Task):
        if options:
            raise TaskOptionError(f"task {name!r} is a fixed Task object and takes no options; got {sorted(options)}")
        return guard_checker(factory)
    check_options(name, factory, options)
    try:
        task = factory(**options)
    except (TaskOptionError, TaskDataError):
        raise
    except (ValueError, TypeError) as error:
        if name in _FACTORIES:  # a built-in task refusing a value: the option's fault
            raise TaskOptionError(f"task {name!r} cannot use the options {options}: {raised(error)}") from error
        raise UserCodeError(
            f"task factory {name!r} = {describe_function(factory)} raised {raised(error)} "
            f"when called with the options {options}"
        ) from error
    except Exception as error:
        if name in _FACTORIES:
            raise  # a bug in sharpen's own task
        raise UserCodeError(
            f"task factory {name!r} = {describe_function(factory)} raised {raised(error)} "
            f"when called with the options {options}"
        ) from error
    if not isinstance(task, Task):
        raise UserCodeError(f"task factory {name!r} returned {type(task).__name__}, not a sharpen.tasks.Task")
    return guard_checker(task)


def check_options(name: str, factory: TaskFactory, options: dict[str, Any]) -> None:
    """Raise TaskOptionError naming the task and the option if `factory` cannot take `options`."""
    params = inspect.signature(factory).parameters
    named = [p for p in params.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    known = ", ".join(p.name for p in named) or "none"
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        for key in options:
            if key not in params:
                raise TaskOptionError(f"task {name!r} has no option {key!r}; its options are: {known}")
    for p in named:
        if p.default is p.empty and p.name not in options:
            raise TaskOptionError(f"task {name!r} needs option {p.name!r}; its options are: {known}")


def _load(spec: str) -> Union[TaskFactory, Task]:
    """The factory or Task named by 'path/to/file.py:attr' or 'package.module:attr'."""
    try:
        return load_object(spec)
    except SpecError as e:
        raise UnknownTaskError(f"task spec {spec!r}: {e}") from e
