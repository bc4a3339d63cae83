"""util/jsontext: the report's JSON text is the document, laid out a key and a row a line."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from wattledger.util.jsontext import json_document

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner,
                                                                                            max_size=4), max_leaves=12)


@given(st.dictionaries(st.text(), values, max_size=6))
def test_the_text_reads_back_as_the_same_document(doc: dict[str, Any]) -> None:
    assert json.loads(json_document(doc)) == doc


def test_each_row_is_one_line_under_its_key() -> None:
    text = json_document({"by": "job", "rows": [{"job": "a", "it_kwh": 1.5}, {"job": "b", "it_kwh": 0.5}],
                          "empty": []})
    assert text.splitlines() == ['{', '  "by": "job",', '  "rows": [', '    {"job": "a", "it_kwh": 1.5},',
                                 '    {"job": "b", "it_kwh": 0.5}', '  ],', '  "empty": []', '}']
    assert json_document({}) == "{}\n"
