"""Run configs: YAML files validated by pydantic, with `key.sub=value` command-line overrides.

A schema is a tree of `ConfigModel` classes whose every field documents itself:

    class Optim(ConfigModel):
        lr: float = Field(3e-4, description="AdamW learning rate.")

    cfg = load_config("runs/add2.yaml", RunConfig, ["optim.lr=1e-4", "ks=[1,8]"])

Unknown keys and wrong types are errors that name the file, the dotted key, the line of
the key in the YAML file (or the command-line override it came from) and the problem. So
are the problems a schema finds in `config_problems` (names missing from a registry, values
that do not fit together), checked at load time, before anything is built:

    class Eval(ConfigModel):
        samples: int = Field(8, description="Completions per problem.")
        ks: list[int] = Field([1, 8], description="k of pass@k.")

        def config_problems(self):
            yield from super().config_problems()
            if max(self.ks) > self.samples:
                yield ("ks",), f"k may not exceed samples ({self.samples})"
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, TypeVar, Union

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

C = TypeVar("C", bound=BaseModel)
Location = tuple[Union[str, int], ...]
"""A dotted key as parts: ("rewards", 0, "name") is rewards.0.name."""


class ConfigError(ValueError):
    """A config file or override is missing, malformed or does not fit the schema."""


class ConfigModel(BaseModel):
    """Base of every config schema: unknown keys are errors, and every field has a description."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        undocumented = [name for name, f in cls.model_fields.items() if not f.description]
        if undocumented:
            raise TypeError(
                f"config schema {cls.__name__} has fields without a description: {', '.join(undocumented)}; "
                'declare them as `name: type = Field(default, description="...")`'
            )

    def config_problems(self) -> Iterator[tuple[Location, str]]:
        """What the field types cannot say: a name that must be in a registry, values that
        must fit each other. Yields (location under this model, problem, saying what is
        allowed); here, those of the sub-models. A schema adds its own after
        `yield from super().config_problems()`."""
        for name in type(self).model_fields:
            value = getattr(self, name)
            items = [((name, i), v) for i, v in enumerate(value)] if isinstance(value, list) else [((name,), value)]
            for loc, item in items:
                if isinstance(item, ConfigModel):
                    for sub, problem in item.config_problems():
                        yield (*loc, *sub), problem


def _models_of(annotation: Any) -> list[type[BaseModel]]:
    """Every model class a field can hold: `M`, `Optional[M]`, or each member of a union of models."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _models_of(a)]


def _kind(model: type[BaseModel]) -> Optional[str]:
    """The tag of a union member: the value of its `kind: Literal[...]` field."""
    field = model.model_fields.get("kind")
    values = typing.get_args(field.annotation) if field is not None else ()
    return values[0] if values else None


def _submodel(annotation: Any, tag: Optional[str] = None) -> Optional[type[BaseModel]]:
    """The model class behind a field annotation (`M` or `Optional[M]`; in a union of models
    the member whose kind is `tag`), else None."""
    models = _models_of(annotation)
    if len(models) > 1:
        models = [m for m in models if _kind(m) == tag]
    return models[0] if len(models) == 1 else None


def _without_tags(schema: type[BaseModel], loc: Sequence[Union[str, int]]) -> list[Union[str, int]]:
    """A validation error's location without the union tags pydantic puts in it
    (('learner', 'preference', 'lr') → ['learner', 'lr']), so it matches the YAML keys."""
    out: list[Union[str, int]] = []
    model: Optional[type[BaseModel]] = schema
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        out.append(part)
        field = model.model_fields.get(part) if model is not None and isinstance(part, str) else None
        if field is None:
            model = None
            continue
        members = _models_of(field.annotation)
        if len(members) > 1 and parts and parts[0] in {_kind(m) for m in members}:
            model = _submodel(field.annotation, parts.pop(0))
        else:
            model = _submodel(field.annotation)
    return out


def _is_mapping(annotation: Any) -> bool:
    """True for `dict`, `dict[K, V]` and Optional forms of them: free-form sub-keys."""
    candidates = [annotation, *typing.get_args(annotation)]
    return any(a is dict or typing.get_origin(a) is dict for a in candidates)


def _model_at(schema: type[BaseModel], parts: Sequence[str], data: Any = None) -> Optional[type[BaseModel]]:
    """The model that holds the keys under `parts`, or None when it is free-form or not a model.
    In a union of models the member is the one whose kind `data` (the config as read) names,
    else the kind of the field's default."""
    model: Optional[type[BaseModel]] = schema
    for part in parts:
        if model is None or part not in model.model_fields:
            return None
        field = model.model_fields[part]
        data = data.get(part) if isinstance(data, dict) else None
        tag = data.get("kind") if isinstance(data, dict) else None
        model = _submodel(field.annotation, tag or getattr(field.get_default(call_default_factory=True), "kind", None))
    return model


def _check_override_key(schema: type[BaseModel], parts: list[str], override: str) -> None:
    """Raise ConfigError unless `parts` names a field of the schema (or a key of a dict field)."""
    model: Optional[type[BaseModel]] = schema
    for i, part in enumerate(parts):
        here = ".".join(parts[: i + 1])
        if model is None:  # inside a free-form dict field: any key is allowed
            return
        if part not in model.model_fields:
            known = ", ".join(model.model_fields)
            raise ConfigError(
                f"command-line override {override!r}: unknown key {here!r}; known keys there: {known}"
            )
        annotation = model.model_fields[part].annotation
        members = _models_of(annotation)
        if len(members) > 1 and i < len(parts) - 1:  # a union of models: any member's key
            known = {k for m in members for k in m.model_fields}
            if parts[i + 1] not in known:
                raise ConfigError(
                    f"command-line override {override!r}: unknown key {here + '.' + parts[i + 1]!r}; "
                    f"known keys there: {', '.join(sorted(known))}"
                )
            return
        model = _submodel(annotation)
        if model is None and i < len(parts) - 1 and not _is_mapping(annotation):
            raise ConfigError(
                f"command-line override {override!r}: {here!r} is a single value, it has no sub-keys"
            )


def _apply_override(data: dict[str, Any], schema: type[BaseModel], override: str) -> str:
    """Set `key.sub=value` (value read as YAML) in `data`; return the dotted key."""
    key, eq, raw = override.partition("=")
    key = key.strip()
    if not eq or not key:
        raise ConfigError(f"command-line override {override!r}: expected key=value, e.g. optim.lr=3e-4")
    parts = key.split(".")
    _check_override_key(schema, parts, override)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"command-line override {override!r}: the value is not valid YAML ({e})") from e
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            here = ".".join(parts[: i + 1])
            raise ConfigError(f"command-line override {override!r}: {here!r} holds {child!r}, not a mapping")
        node = child
    node[parts[-1]] = value
    return key


def _key_line(root: Optional[yaml.Node], loc: Sequence[Union[str, int]]) -> Optional[int]:
    """1-based line of the deepest node of `loc` present in the YAML tree (the key itself if present)."""
    if root is None:
        return None
    node, found = root, root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((kv for kv in node.value if kv[0].value == part), None)
            if match is None:
                break
            found, node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            found = node = node.value[part]
        else:
            break
    return found.start_mark.line + 1


def _describe(
    error: dict[str, Any],
    path: Path,
    root: Optional[yaml.Node],
    schema: type[BaseModel],
    overrides: dict[str, str],
    data: dict[str, Any],
) -> str:
    """One line per validation error: where (file:line or override), dotted key, problem."""
    loc = _without_tags(schema, error["loc"])
    problem = error["msg"]
    if error["type"] == "value_error" and "error" in error.get("ctx", {}):  # a validator's own words
        problem = str(error["ctx"]["error"])
    if error["type"] == "union_tag_invalid":  # a `kind` that names no member of the union
        loc = [*loc, "kind"]
        problem = f"unknown kind {error['ctx']['tag']!r}; choose one of: {error['ctx']['expected_tags']}"
    elif error["type"] == "extra_forbidden":
        parent = _model_at(schema, [str(p) for p in loc[:-1]], data)
        known = f"; known keys there: {', '.join(parent.model_fields)}" if parent is not None else ""
        problem = f"unknown key{known}"
    elif error["type"] != "missing":
        got = repr(error["input"])
        problem += f" (got {got[:60] + '…' if len(got) > 60 else got})"
    return _placed(loc, problem, path, root, overrides)


def _placed(
    loc: Sequence[Union[str, int]], problem: str, path: Path, root: Optional[yaml.Node], overrides: dict[str, str]
) -> str:
    """"file:line: dotted.key: problem", or the command-line override the key came from."""
    dotted = ".".join(str(p) for p in loc) or "(top level)"
    source = next((o for k, o in overrides.items() if dotted == k or dotted.startswith(k + ".")), None)
    if source is not None:
        return f"{dotted}: {problem} (from the command-line override {source!r})"
    line = _key_line(root, loc)
    where = f"{path}:{line}" if line is not None else f"{path}"
    return f"{where}: {dotted}: {problem}"


def load_config(path: Union[str, Path], schema: type[C], overrides: Sequence[str] = ()) -> C:
    """Read a YAML config, apply `key.sub=value` overrides, and validate it against `schema`.

    Raises ConfigError naming the file (and line, key, or override) for a missing file,
    invalid YAML, an unknown key, a wrong type, a malformed override, or a problem the
    schema's `config_problems` finds.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: config file not found") from e
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror})") from e
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        line = f":{e.problem_mark.line + 1}" if e.problem_mark is not None else ""
        context = f" ({e.context} on line {e.context_mark.line + 1})" if e.context and e.context_mark else ""
        raise ConfigError(f"{path}{line}: invalid YAML: {e.problem or e}{context}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values, got a {kind}")
    applied = {_apply_override(data, schema, o): o for o in overrides}
    try:
        cfg = schema.model_validate(data)
    except ValidationError as e:
        lines = [_describe(err, path, root, schema, applied, data) for err in e.errors()]
        raise ConfigError(f"invalid config {path}:\n  " + "\n  ".join(lines)) from None
    problems = list(cfg.config_problems()) if isinstance(cfg, ConfigModel) else []
    if problems:
        problems.sort(key=lambda p: _key_line(root, p[0]) or 0)  # in the file's order
        lines = [_placed(loc, problem, path, root, applied) for loc, problem in problems]
        raise ConfigError(f"invalid config {path}:\n  " + "\n  ".join(lines))
    return cfg


def dump_config(cfg: BaseModel) -> str:
    """The config as YAML text, fields in schema order; `load_config` reads it back unchanged."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
