"""fhir.resources R4B validation memoised by resource shape: same verdicts, far less work."""

from __future__ import annotations

import threading
import types
import typing
from collections.abc import Callable
from typing import Any

# Why this is sound. A fhir.resources model decides validity from two things only:
#   1. the shape of the JSON: which keys sit where (extra="forbid", choice-type exclusivity,
#      required elements, nulls in lists), list lengths, the JSON type of each value, and the
#      `resourceType` strings (checked in FHIRAbstractModel.__init__); and
#   2. each primitive value on its own, checked by its field's type (dateTime regex, code
#      pattern, id length, ...): no validator in fhir_core or the R4B models compares two values.
# So once one resource of a given shape has validated, another resource of exactly that shape
# validates if and only if each of its primitive values passes its field's own validator, which
# is run here through a pydantic TypeAdapter of the very annotation the model field declares.
# Only "valid" is ever answered from memory: an unknown shape, a value that fails or anything
# unexpected goes through the full model_validate, so every error message is fhir.resources' own.

_PRIMITIVES = (str, int, float, bool)
# Keys FHIRAbstractModel.__init__ pops and compares with the model's resource type.
_TYPE_KEYS = frozenset({"resourceType", "resource_type"})
_MAX_SHAPES = 4096
# Values remembered as valid per (field type, JSON type); a full set is emptied, so memory stays
# flat however many cases go through (unique values such as ids simply cycle through it).
_MAX_VALUES = 2048

# One step per primitive value: (validator, values known to pass it), None for a null.
Step = tuple[Callable[[Any], Any], set[Any]] | None


def _flatten(node: Any, tokens: list[Any], leaves: list[Any]) -> None:
    """Shape tokens of a JSON object and its primitive values, both in document order.

    A prefix code, so equal token lists mean equal shapes: an object is the tuple of its keys,
    an array its length (an int), a primitive its Python type; a `resourceType` string is a token.
    """
    tokens.append(tuple(node))
    for key, value in node.items():
        kind = type(value)
        if kind is dict:
            _flatten(value, tokens, leaves)
        elif kind is list:
            _flatten_list(value, tokens, leaves)
        elif kind is str and key in _TYPE_KEYS:
            tokens.append(value)
        else:
            tokens.append(kind)
            leaves.append(value)


def _flatten_list(node: list[Any], tokens: list[Any], leaves: list[Any]) -> None:
    tokens.append(len(node))
    for value in node:
        kind = type(value)
        if kind is dict:
            _flatten(value, tokens, leaves)
        elif kind is list:
            _flatten_list(value, tokens, leaves)
        else:
            tokens.append(kind)
            leaves.append(value)


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


class ShapeValidator:
    """Validates resources with fhir.resources R4B, answering repeated shapes from memory."""

    def __init__(self) -> None:
        from fhir.resources.R4B import get_fhir_model_class
        from fhir_core.types import FhirBase, FhirElementOrResourceBase

        self._model_class = get_fhir_model_class
        self._fhir_base = FhirBase
        self._polymorphic = FhirElementOrResourceBase
        # shape tokens -> one step per primitive value; None: that shape is always validated
        # in full (e.g. `contained`, whose model depends on each value's resourceType).
        self._plans: dict[tuple[Any, ...], tuple[Step, ...] | None] = {}
        self._seen_once: set[tuple[Any, ...]] = set()  # valid once, not planned yet
        self._checkers: dict[tuple[Any, str], Callable[[Any], Any]] = {}
        self._good: dict[tuple[Any, type], set[Any]] = {}  # (checker key, JSON type) -> values
        self._fields: dict[type, dict[str, Any]] = {}
        self._annotations: dict[tuple[Any, str], Any] = {}  # (model, key) -> field annotation
        self._field_steps: dict[tuple[tuple[Any, ...], type], Step] = {}  # (field, JSON type)
        self._lock = threading.Lock()
        # Resources checked, and those answered from memory (the benchmark prints the rate).
        self.checked = 0
        self.hits = 0

    def check(self, resource: dict[str, Any]) -> None:
        """Validate as `get_fhir_model_class(resourceType).model_validate(resource)` does.

        Returns None when the resource is valid; otherwise raises exactly what that call raises
        (KeyError for an unknown type, pydantic's ValidationError, a ValueError).
        """
        self.checked += 1
        shape: tuple[Any, ...] | None = None
        known = False
        if type(resource) is dict:
            tokens: list[Any] = []
            leaves: list[Any] = []
            try:
                _flatten(resource, tokens, leaves)
            except RecursionError:
                tokens = []  # absurdly deep: leave it to the model alone
            if tokens:
                shape = tuple(tokens)
                known = shape in self._plans
                plan = self._plans.get(shape)
                if plan is not None and self._values_ok(plan, leaves):
                    self.hits += 1
                    return
        model = self._model_class(str(resource.get("resourceType")))
        model.model_validate(resource)
        if shape is not None and not known and len(self._plans) < _MAX_SHAPES:
            # A shape is planned the second time it validates: a plan costs about two
            # model_validate calls, and in real cases many shapes occur once (the fixtures:
            # 21 of 40), where planning would only make the cold path slower.
            if shape in self._seen_once:
                self._seen_once.discard(shape)
                self._plans[shape] = self._plan(model, resource)
            else:
                if len(self._seen_once) >= _MAX_SHAPES:
                    self._seen_once.clear()
                self._seen_once.add(shape)

    def first_error(self, resource: dict[str, Any]) -> str | None:
        """First validation error of `resource` (`loc: message`), None when it validates."""
        try:
            self.check(resource)
        except (ValueError, KeyError) as exc:
            return error_text(exc)
        return None

    def plan_count(self) -> int:
        """Shapes remembered as valid (tests and the benchmark report it)."""
        return sum(1 for plan in self._plans.values() if plan is not None)

    def knows_shape_of(self, resource: dict[str, Any]) -> bool:
        """True when `resource` has the shape of a resource that validated before."""
        tokens: list[Any] = []
        _flatten(resource, tokens, [])
        return self._plans.get(tuple(tokens)) is not None

    def _values_ok(self, plan: tuple[Step, ...], leaves: list[Any]) -> bool:
        try:
            for step, value in zip(plan, leaves, strict=True):
                if step is None:
                    continue  # a null: the shape alone decides, and this shape validated
                check, good = step
                if value not in good:
                    check(value)
                    # 0.0 == -0.0: a float zero is checked every time, never remembered.
                    if value or type(value) is not float:
                        if len(good) >= _MAX_VALUES:
                            good.clear()
                        good.add(value)
        except Exception:  # any doubt goes to the full validation
            return False
        return True

    # --- plans ------------------------------------------------------------------------------

    def _plan(self, model: type, resource: dict[str, Any]) -> tuple[Step, ...] | None:
        steps: list[Step] = []
        try:
            ok = self._plan_model(model, resource, steps)
        except Exception:  # an unforeseen annotation: validate this shape in full
            return None
        return tuple(steps) if ok else None

    def _field_map(self, model: Any) -> dict[str, Any]:
        found = self._fields.get(model)
        if found is None:
            found = {}
            for name, info in model.model_fields.items():
                found[name] = info  # populate_by_name: the Python name is accepted too
            for info in model.model_fields.values():
                if info.alias:
                    found[info.alias] = info
            self._fields[model] = found
        return found

    def _plan_model(self, model: Any, node: dict[str, Any], steps: list[Step]) -> bool:
        fields = self._field_map(model)
        for key, value in node.items():
            if key in _TYPE_KEYS and type(value) is str:
                continue
            where = (model, key)
            annotation = self._annotations.get(where)
            if annotation is None:
                info = fields.get(key)
                if info is None:
                    return False
                annotation = info.annotation
                if info.metadata:
                    annotation = typing.Annotated[(annotation, *info.metadata)]
                self._annotations[where] = annotation
            if not self._plan_value(model, where, annotation, value, steps):
                return False
        return True

    def _plan_value(
        self, owner: Any, where: tuple[Any, ...], annotation: Any, value: Any, steps: list[Step]
    ) -> bool:
        if value is None:
            steps.append(None)
            return True
        inner = _strip_optional(annotation)
        kind = type(value)
        if kind is dict:
            if not (isinstance(inner, type) and issubclass(inner, self._fhir_base)):
                return False
            if issubclass(inner, self._polymorphic):
                return False  # the class depends on the value's resourceType: no fixed plan
            return self._plan_model(inner.get_model_klass(), value, steps)
        if kind is list:
            if typing.get_origin(inner) is not list:
                return False
            (item,) = typing.get_args(inner)
            return all(self._plan_value(owner, (*where, 0), item, v, steps) for v in value)
        if kind in _PRIMITIVES:
            # Looked up by field first: hashing a typing.Annotated (the checkers' key) costs
            # more than the rest of planning together, and fields repeat across shapes.
            slot = (where, kind)
            step = self._field_steps.get(slot)
            if step is None:
                step = self._field_steps[slot] = self._step(annotation, kind, owner.model_config)
            steps.append(step)
            return True
        return False

    def _step(self, annotation: Any, kind: type, config: Any) -> Step:
        # The owning model's config goes with the type (a global fhir_core override such as
        # strict=True changes how primitives validate); FHIR models all share one in practice.
        key = (annotation, repr(sorted(config.items())))
        with self._lock:
            check = self._checkers.get(key)
            if check is None:
                from pydantic import TypeAdapter

                adapter: TypeAdapter[Any] = TypeAdapter(annotation, config=config)
                # The core validator itself: the TypeAdapter method only wraps this very call in
                # Python-level argument handling, which cost a fifth of export's validation.
                check = self._checkers[key] = adapter.validator.validate_python
            # One set per JSON type too: 1 == 1.0 == True must not share an entry.
            good = self._good.setdefault((key, kind), set())
        return check, good


def error_text(exc: Exception) -> str:
    """`loc: message` of the first error of a validation exception (else its first line)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        return f"{loc}: {first.get('msg')}"
    return str(exc).splitlines()[0]


_shared: ShapeValidator | None = None


def shape_validator() -> ShapeValidator:
    """The process-wide validator (its memory is what makes it fast)."""
    global _shared  # noqa: PLW0603 - one lazily built instance per process
    if _shared is None:
        _shared = ShapeValidator()
    return _shared
