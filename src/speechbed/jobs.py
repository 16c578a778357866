"""Job files: the YAML convention every script follows (substitution, jobs lists, schemas).

``speechbed.step_runner`` loads scripts' job files with ``load_jobs``; the pipeline and the
sweep call ``load_config`` for whole-file schemas.

A job file holds one job (a mapping) or a ``jobs:`` list; its other top-level keys are
defaults shared by every job. ``${VAR}`` references are substituted before parsing
(``speechbed.variables``). Every error names the file, the line, the job index and the key.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import pydantic_core
import yaml

from speechbed.errors import UserInputError
from speechbed.variables import substitute_variables

# libyaml's safe loader when PyYAML was built with it (same documents, ~10x faster).
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class JobSchema(pydantic.BaseModel):
    """Base of every script's job schema: unknown keys are errors, fields carry descriptions.

    Lineage: fields made with ``input_path``/``output_path`` are the job's inputs and outputs
    (a schema whose paths are derived overrides ``lineage_paths``); ``code_versions`` names
    the versions of the code whose change makes the job's outputs out of date.
    """

    model_config = pydantic.ConfigDict(extra="forbid", validate_default=True)
    code_versions: typing.ClassVar[dict[str, int]] = {}

    @pydantic.field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: pydantic.ValidationInfo) -> Any:
        # pydantic reads `true` as 1 for an int; in a job file that is always a slip.
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and _misplaced_boolean(value, field.annotation):
            raise pydantic_core.PydanticCustomError(
                "bool_not_allowed",
                "expected {expected}, not a boolean (true/false)",
                {"expected": _type_name(field.annotation)},
            )
        return value

    @classmethod
    def schema_of(cls, raw: Mapping[str, Any]) -> type[JobSchema]:
        """The class a mapping validates as (a run config: its task's); errors name its keys."""
        return cls

    def lineage_paths(self) -> tuple[list[Path], list[Path]]:
        """(inputs, outputs): the files and folders this job reads and writes."""
        found: dict[str, list[Path]] = {"input": [], "output": []}
        for name, field in type(self).model_fields.items():
            extra = field.json_schema_extra
            role = extra.get("lineage") if isinstance(extra, dict) else None
            value = getattr(self, name)
            if role in found and value is not None:
                values = value if isinstance(value, list | tuple) else [value]
                found[str(role)].extend(Path(item) for item in values)
        return found["input"], found["output"]


def _admits_boolean(annotation: Any) -> bool:
    if annotation in (bool, Any, object) or isinstance(annotation, TypeVar):
        return True
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is typing.Literal:
        return any(isinstance(argument, bool) for argument in arguments)
    if origin is typing.Annotated:
        return _admits_boolean(arguments[0])
    if origin in (typing.Union, types.UnionType):
        return any(_admits_boolean(argument) for argument in arguments)
    return False


def _item_annotations(annotation: Any, container: type) -> list[Any] | None:
    """What the items of a ``container`` value may be under ``annotation`` (None: anything)."""
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if annotation in (Any, object) or isinstance(annotation, TypeVar):
        return None
    if origin is typing.Annotated:
        return _item_annotations(arguments[0], container)
    if origin in (typing.Union, types.UnionType):
        found: list[Any] = []
        for argument in arguments:
            items = _item_annotations(argument, container)
            if items is None:
                return None
            found += items
        return found
    if container is dict and origin in (dict, Mapping):
        return [arguments[1]] if len(arguments) == 2 else None
    if container is list and origin in (list, tuple, set, frozenset, Sequence):
        items = [argument for argument in arguments if argument is not Ellipsis]
        return items or None
    return []


def _misplaced_boolean(value: Any, annotation: Any) -> bool:
    """A ``true``/``false`` where ``annotation`` wants something else (numbers, above all),
    looking inside lists and mappings; nested schemas check their own keys."""
    if isinstance(value, bool):
        return not _admits_boolean(annotation)
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return False
    if isinstance(value, list | tuple | dict):
        container = dict if isinstance(value, dict) else list
        items = _item_annotations(annotation, container)
        if items is None or not items:
            return False
        union = items[0] if len(items) == 1 else typing.Union[tuple(items)]  # noqa: UP007
        values = value.values() if isinstance(value, dict) else value
        return any(_misplaced_boolean(item, union) for item in values)
    return False


def input_path(*args: Any, **kwargs: Any) -> Any:
    """A ``Field`` for a path the job reads (its fingerprint is part of the job's done record)."""
    return pydantic.Field(*args, json_schema_extra={"lineage": "input"}, **kwargs)


def output_path(*args: Any, **kwargs: Any) -> Any:
    """A ``Field`` for a path the job writes (locked while written; must still exist to be done)."""
    return pydantic.Field(*args, json_schema_extra={"lineage": "output"}, **kwargs)


Schema = TypeVar("Schema", bound=pydantic.BaseModel)
Location = tuple[str | int, ...]


# --------------------------------------------------------------------------- parsing


def _parse_yaml(text: str, source: str | Path) -> tuple[Any, dict[Location, int]]:
    """Safe-load YAML and map every key path to its 1-based line."""
    try:
        root = yaml.compose(text, Loader=_SAFE_LOADER)
        document = yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else str(source)
        problem = getattr(error, "problem", None) or str(error)
        raise UserInputError(f"{where}: not valid YAML: {problem}") from None
    except (ValueError, OverflowError) as error:  # e.g. a date like 2001-02-30
        raise UserInputError(f"{source}: not valid YAML: {error}") from None
    except RecursionError:
        raise UserInputError(f"{source}: not valid YAML: nested too deeply") from None
    lines: dict[Location, int] = {}

    def walk(node: yaml.Node, path: Location, depth: int) -> None:
        if depth > 200:
            raise UserInputError(f"{source}:{node.start_mark.line + 1}: nested too deeply")
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            first_line: dict[object, int] = {}
            for key_node, value_node in node.value:
                key = key_node.value
                line = key_node.start_mark.line + 1
                if isinstance(key, str) and key != "<<":
                    if key in first_line:
                        raise UserInputError(
                            f"{source}:{line}: duplicate key '{key}' (first given on line "
                            f"{first_line[key]}); keep one"
                        )
                    first_line[key] = line
                walk(value_node, path + (key,), depth + 1)
                lines[path + (key,)] = line
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, path + (index,), depth + 1)

    if root is not None:
        walk(root, (), 0)
    return document, lines


def _merge(defaults: Mapping[str, Any], job: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge a job over the shared defaults (nested mappings merge key by key)."""
    merged = dict(defaults)
    for key, value in job.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class _EveryVariable(Mapping[str, str]):
    """An environment in which every variable is set: only the references' form is checked."""

    def __getitem__(self, name: str) -> str:
        return ""

    def __iter__(self) -> typing.Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _read(
    path: str | Path, environ: Mapping[str, str] | None, keep_variables: bool = False
) -> tuple[Any, dict[Location, int]]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserInputError(f"{path}: job file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserInputError(f"{path}: cannot read job file: {error}") from None
    if keep_variables:
        substitute_variables(text, path, _EveryVariable())  # the same errors for bad references
        return _parse_yaml(text, path)
    return _parse_yaml(substitute_variables(text, path, environ), path)


def load_document(
    path: str | Path, environ: Mapping[str, str] | None = None, keep_variables: bool = False
) -> tuple[Any, dict[Location, int]]:
    """A job file's document and the line of every key path, for files validated in parts.

    With ``keep_variables`` the ``${VAR}`` references are checked but left as written (the
    sweep copies them into the run configs, whose scripts resolve them).
    """
    return _read(path, environ, keep_variables)


# --------------------------------------------------------------------------- validation


def _field_model(
    schema: type[pydantic.BaseModel], location: Location
) -> type[pydantic.BaseModel] | None:
    """The pydantic model that owns the last key of ``location`` (None if not a model)."""
    model: Any = schema
    for part in location[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
            return None
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = _inner_model(field.annotation)
    if isinstance(model, type) and issubclass(model, pydantic.BaseModel):
        return model
    return None


def _inner_model(annotation: Any) -> Any:
    """Find a BaseModel inside Optional[...] / list[...] / dict[..., ...] annotations."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _inner_model(argument)
        if found is not None:
            return found
    return None


def _dotted(location: Location) -> str:
    return ".".join(str(part) for part in location)


def problems_in_one_line(error: pydantic.ValidationError, whole: str = "(top level)") -> str:
    """A validation error as ``key 'a.b': message; ...`` (for values the code, not a file, gave)."""
    return "; ".join(
        f"key '{_dotted(tuple(item['loc'])) or whole}': {item['msg']}" for item in error.errors()
    )


def _format_errors(
    error: pydantic.ValidationError, schema: type[JobSchema], raw: Mapping[str, Any],
    source: str | Path, lines: dict[Location, int], prefix: Location, job_label: str,
) -> str:  # fmt: skip
    messages = []
    for item in error.errors():
        location = tuple(
            part for part in item["loc"] if not (isinstance(part, str) and "[" in part)
        )
        line = None
        for length in range(len(location), -1, -1):
            line = lines.get(prefix + location[:length]) or lines.get(location[:length])
            if line is not None:
                break
        where = f"{source}:{line}" if line else f"{source}"
        key = _dotted(location) or "(top level)"
        kind = item["type"]
        if kind == "extra_forbidden":
            owner = _field_model(schema.schema_of(raw), location)
            known = sorted(owner.model_fields) if owner else []
            close = difflib.get_close_matches(str(location[-1]), known, n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(known)}"
            text = f"unknown key '{key}' ({hint})"
        elif kind == "missing":
            text = f"missing required key '{key}'"
        else:
            text = f"key '{key}': {item['msg']} (got {item.get('input')!r})"
        messages.append(f"{where}: {job_label}: {text}")
    return "\n".join(messages)


def _validate(
    schema: type[Schema],
    raw: Any,
    source: str | Path,
    lines: dict[Location, int],
    prefix: Location,
    job_label: str,
) -> Schema:
    if not isinstance(raw, Mapping):
        line = lines.get(prefix)
        where = f"{source}:{line}" if line else str(source)
        raise UserInputError(
            f"{where}: {job_label}: expected a mapping of keys, got {type(raw).__name__}"
        )
    try:
        return schema.model_validate(dict(raw))
    except pydantic.ValidationError as error:
        raise UserInputError(
            _format_errors(error, schema, raw, source, lines, prefix, job_label)
        ) from None


def validate_document(
    schema: type[Schema],
    raw: Any,
    source: str | Path,
    lines: dict[Location, int],
    label: str = "file",
) -> Schema:
    """Validate a part of a document from ``load_document``; errors name file:line and key."""
    return _validate(schema, raw, source, lines, (), label)


def load_config(
    path: str | Path, schema: type[Schema], environ: Mapping[str, str] | None = None
) -> Schema:
    """Load a whole file as one object of ``schema`` (pipelines, experiments)."""
    document, lines = _read(path, environ)
    return _validate(schema, document if document is not None else {}, path, lines, (), "file")


def load_jobs(
    path: str | Path, schema: type[Schema], environ: Mapping[str, str] | None = None
) -> list[Schema]:
    """Load one job or a ``jobs:`` list, each merged over the file's top-level defaults."""
    document, lines = _read(path, environ)
    if document is None:
        raise UserInputError(f"{path}: job file is empty")
    if not isinstance(document, Mapping):
        raise UserInputError(f"{path}:1: a job file holds a mapping (one job) or a 'jobs:' list")
    if "jobs" not in document:
        return [_validate(schema, document, path, lines, (), "job 0")]
    jobs = document["jobs"]
    if not isinstance(jobs, list) or not jobs:
        raise UserInputError(
            f"{path}:{lines.get(('jobs',), 1)}: 'jobs' must be a non-empty list of mappings"
        )
    defaults = {key: value for key, value in document.items() if key != "jobs"}
    loaded = []
    for index, job in enumerate(jobs):
        if not isinstance(job, Mapping):
            raise UserInputError(
                f"{path}:{lines.get(('jobs', index), 1)}: job {index}: expected a mapping"
            )
        loaded.append(
            _validate(schema, _merge(defaults, job), path, lines, ("jobs", index), f"job {index}")
        )
    return loaded


# --------------------------------------------------------------------------- help text


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(value) for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(argument) for argument in typing.get_args(annotation))
    if origin is not None:
        inner = ", ".join(_type_name(argument) for argument in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def describe_schema(schema: type[pydantic.BaseModel], indent: str = "  ") -> str:
    """The schema as readable text: key, type, default and description, nested sections indented."""
    rows = []
    for name, field in schema.model_fields.items():
        nested = _inner_model(field.annotation)
        if field.is_required():
            default = "required"
        elif nested is not None and field.default_factory is not None:
            default = "section"
        else:
            value = field.get_default(call_default_factory=True)
            default = f"default: {value!r}"
        rows.append(f"{indent}{name}: {_type_name(field.annotation)}  ({default})")
        if field.description:
            rows.append(f"{indent}    {field.description}")
        if nested is not None:
            rows.append(describe_schema(nested, indent + "    "))
    return "\n".join(rows)
