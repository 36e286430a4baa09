"""`python -m bridge schema` rewrites bridge/protocol_v1.schema.json from the pydantic models."""

from __future__ import annotations

import sys

from .protocol import SCHEMA_PATH, schema_text


def main(argv: list[str]) -> int:
    if argv[:1] != ["schema"]:
        print("usage: python -m bridge schema   (regenerates the protocol JSON Schema)", file=sys.stderr)
        return 2
    SCHEMA_PATH.write_text(schema_text())
    print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
