"""JSON Schema files of the wire contract, generated from the pydantic models.

    python -m statestore.core.schemas          # write docs/schemas/*.json
    python -m statestore.core.schemas --check  # exit 1 if the files and the models differ

One file per CloudEvent ``type`` the subscriber accepts: the schema of that CloudEvent's
``data``. Version-1 event schemas are derived from version 2 (no ``app``, schema version
1), which is exactly what ``statestore.core.events.upcast_v1`` reads. A unit test fails when
the checked-in files drift from the models.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

from statestore.core.events import (
    BATCH_TYPE,
    KINDS_SINCE,
    SCHEMA_VERSION,
    V2_FIELDS,
    EventBatch,
    FieldDeleted,
    FieldUpdated,
    ObjectReplaced,
    StateDeleted,
    cloudevent_type,
)

__all__ = ["SCHEMA_DIR", "data_schemas", "render", "main"]

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "docs" / "schemas"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _with_header(ce_type: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"$schema": _DIALECT, "$id": f"{ce_type}.json", **schema, "title": f"data of a {ce_type} CloudEvent"}


def _version_1(schema: dict[str, Any]) -> dict[str, Any]:
    """A version-2 event schema as version 1 was: no ``app`` (every event is the app
    ``default``) and no ``traceparent``, ``schema_version`` 1."""
    old = copy.deepcopy(schema)
    for added_in_v2 in V2_FIELDS:
        del old["properties"][added_in_v2]
    old["properties"]["schema_version"].update(const=1, default=1)
    return old


def data_schemas() -> dict[str, dict[str, Any]]:
    """CloudEvent type -> JSON Schema of its ``data``."""
    schemas: dict[str, dict[str, Any]] = {}
    for model in (FieldUpdated, ObjectReplaced, StateDeleted, FieldDeleted):
        kind = model.model_fields["kind"].default
        current = model.model_json_schema()
        schemas[cloudevent_type(kind, SCHEMA_VERSION)] = _with_header(cloudevent_type(kind, SCHEMA_VERSION), current)
        if KINDS_SINCE[kind] == 1:  # the deletes came with version 2
            schemas[cloudevent_type(kind, 1)] = _with_header(cloudevent_type(kind, 1), _version_1(current))
    schemas[BATCH_TYPE] = _with_header(BATCH_TYPE, EventBatch.model_json_schema())
    return dict(sorted(schemas.items()))


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m statestore.core.schemas", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on any difference")
    args = parser.parse_args(argv)
    wanted = {f"{ce_type}.json": render(schema) for ce_type, schema in data_schemas().items()}
    present = {path.name: path.read_text() for path in SCHEMA_DIR.glob("*.json")} if SCHEMA_DIR.exists() else {}
    differ = sorted(name for name in wanted.keys() | present.keys() if wanted.get(name) != present.get(name))
    if args.check:
        for name in differ:
            print(f"{SCHEMA_DIR / name}: differs from the models; run `python -m statestore.core.schemas`", file=sys.stderr)
        return 1 if differ else 0
    SCHEMA_DIR.mkdir(parents=True, exist_ok=True)
    for name in differ:
        path = SCHEMA_DIR / name
        if name in wanted:
            path.write_text(wanted[name])
        else:
            path.unlink()
        print(f"wrote {path}" if name in wanted else f"removed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
