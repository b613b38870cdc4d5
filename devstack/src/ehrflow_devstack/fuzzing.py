"""Hypothesis strategies for the fuzz tests: valid-looking JSON with the wrong JSON types inside.

Generic fuzzing (any bytes, any JSON) rarely gets past a parser's first check. Valid requests with one to
three values swapped for another JSON type (an object where a reference string belongs, a number for a
list, ``null`` for a resource) reach the code that reads them: the shapes that raised TypeError or
AttributeError as 500.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

WRONG_TYPES = st.sampled_from([{"reference": "Patient/1"}, ["Patient/1"], 7, 1.5, True, None, "", "x", {}, []])
"""A value of another JSON type than the one FHIR puts there: an object for a string, a list for an object…"""


def places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document (the paths to each object member and list item)."""
    found = [path] if path else []
    if isinstance(value, dict):
        for key, inner in value.items():
            found += places(inner, (*path, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += places(inner, (*path, index))
    return found


def replaced(document: Any, path: tuple[Any, ...], new: Any) -> Any:
    """A copy of ``document`` with the value at ``path`` replaced by a copy of ``new``."""
    copy = json.loads(json.dumps(document))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = json.loads(json.dumps(new))  # sampled values are shared between examples
    return copy


@st.composite
def wrong_types_inside(
    draw: st.DrawFn, documents: st.SearchStrategy[Any], values: st.SearchStrategy[Any] = WRONG_TYPES
) -> Any:
    """One of ``documents`` with one to three of its values swapped for one of ``values``."""
    document = draw(documents)
    for _ in range(draw(st.integers(1, 3))):
        where = places(document)
        if not where:
            break
        document = replaced(document, draw(st.sampled_from(where)), draw(values))
    return document
