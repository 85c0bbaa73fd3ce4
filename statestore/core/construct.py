"""Pydantic models built without validation, cheaply: the events of every write and the
documents of every merge are made by the code itself, so they need no validation, and
pydantic's general ``model_construct`` costs about thirty times what they need. Pure."""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

__all__ = ["FastConstructModel"]

_Plan = tuple[tuple[str, Any, Any], ...]  # (field, default, default factory) of every field, in order
_PLANS: dict[type, _Plan | None] = {}  # per model class; None: pydantic's own path
_NAMES: dict[type, frozenset[str]] = {}  # per model class: its field names
_IMMUTABLE = (type(None), bool, int, float, str, bytes, tuple, frozenset, Enum)


class FastConstructModel(BaseModel):
    """A model whose ``model_construct`` fills ``__dict__`` directly.

    Same result as pydantic's (a unit test compares them): every field in ``__dict__``,
    missing ones from their default or default factory, ``model_fields_set`` the names
    given. A model with private attributes, a ``model_post_init``, extra values allowed,
    or a call with unknown names, takes pydantic's own path.
    """

    @classmethod
    def _construct_plan(cls) -> _Plan | None:
        try:
            return _PLANS[cls]
        except KeyError:
            pass
        plan: _Plan | None = tuple(
            (name, field.default, field.default_factory) for name, field in cls.model_fields.items()
        )
        shared_safely = all(default is PydanticUndefined or isinstance(default, _IMMUTABLE) for _, default, _ in plan)
        if (
            not shared_safely  # pydantic copies a mutable default for each model
            or cls.__private_attributes__
            or cls.__pydantic_post_init__ is not None
            or cls.model_config.get("extra") == "allow"
        ):
            plan = None
        _PLANS[cls] = plan
        _NAMES[cls] = frozenset(cls.model_fields)
        return plan

    @classmethod
    def model_construct(cls, _fields_set: set[str] | None = None, **values: Any) -> Any:
        plan = cls._construct_plan()
        if plan is None:
            return super().model_construct(_fields_set, **values)
        if len(values) == len(plan) and values.keys() == _NAMES[cls]:
            data = values  # every field given (the usual call): a fresh dict already
        else:
            data = {}
            for name, default, factory in plan:
                if name in values:
                    data[name] = values[name]
                elif factory is not None:
                    data[name] = factory()
                elif default is not PydanticUndefined:  # a required field not given stays absent, as in pydantic's
                    data[name] = default
            if not values.keys() <= data.keys():
                return super().model_construct(_fields_set, **values)  # names it does not know
        model = cls.__new__(cls)
        _set(model, "__dict__", data)
        _set(model, "__pydantic_fields_set__", set(values) if _fields_set is None else set(_fields_set))
        _set(model, "__pydantic_extra__", None)
        _set(model, "__pydantic_private__", None)
        return model


_set = object.__setattr__
