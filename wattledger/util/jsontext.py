"""A JSON document as text people can read and machines can read fast.

``json.dumps(doc, indent=2)`` runs Python's pure-Python encoder (the C one only
writes compact text): a year's report, 6,000 rows, took ~0.6 s of a 2 s budget
to print. Here the top level is indented, one key a line, and each element of a
top-level list (a report's rows, a job's summaries) is one compact line from the
C encoder: the same document, readable with ``jq`` or by eye, in ~0.1 s.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def json_document(doc: Mapping[str, Any]) -> str:
    """``doc`` as JSON text: a key a line, a list's elements a line each; ends with a newline."""
    items = []
    for key, value in doc.items():
        if isinstance(value, list) and value:
            inner = ",\n".join(f"    {json.dumps(x)}" for x in value)
            text = f"[\n{inner}\n  ]"
        else:
            text = json.dumps(value)
        items.append(f"  {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(items) + "\n}\n" if items else "{}\n"
