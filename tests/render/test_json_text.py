"""The JSON report's encoder writes the text ``json.dumps(obj, indent=2)`` writes."""

from __future__ import annotations

import enum
import io
import json
import math
import random
from typing import Any

import pytest

from ctxdoctor.render import json_report
from ctxdoctor.render.json_report import write_json


class _Kind(enum.IntEnum):
    SERVER = 2


class _Name(str, enum.Enum):
    A = "a\u00e9"


def _text(obj: Any) -> str:
    out = io.StringIO()
    write_json(obj, out.write)
    return out.getvalue()


EDGE_CASES: list[Any] = [
    {},
    [],
    (),
    "",
    0,
    -1,
    1 << 70,
    True,
    False,
    None,
    0.1,
    1e-06,
    1e22,
    -0.0,
    math.nan,
    math.inf,
    -math.inf,
    'quote " backslash \\ newline \n tab \t nul \x00 \u00e9 \u2028 \U0001f600',
    {"a": [], "b": {}, "c": [[], [{}]], "d": ({"e": (1, 2.5, None)},)},
    {3: "int key", 2.5: "float key", True: "true key", False: "false key", None: "null key", "s": "str key"},
    [_Kind.SERVER, _Name.A, {_Name.A: _Kind.SERVER}],
]


@pytest.mark.parametrize("obj", EDGE_CASES)
def test_edge_cases(obj: Any) -> None:
    assert _text(obj) == json.dumps(obj, indent=2) + "\n"


def _random(rng: random.Random, depth: int) -> Any:
    pick = rng.randrange(9 if depth < 4 else 6)
    if pick == 0:
        return "".join(rng.choice('ab"\\\n\u00e9\U0001f600 ') for _ in range(rng.randrange(6)))
    if pick == 1:
        return rng.randrange(-(1 << 40), 1 << 40)
    if pick == 2:
        return rng.choice([0.5, 1e-7, 123456.789, rng.random(), -rng.random() * 1e20])
    if pick == 3:
        return rng.choice([None, True, False])
    if pick in (4, 5):
        return round(rng.random(), rng.randrange(1, 8))
    if pick == 6:
        return [_random(rng, depth + 1) for _ in range(rng.randrange(5))]
    if pick == 7:
        return tuple(_random(rng, depth + 1) for _ in range(rng.randrange(5)))
    return {f"k{i}\u00e9": _random(rng, depth + 1) for i in range(rng.randrange(5))}


def test_random_documents() -> None:
    rng = random.Random(7)
    for _ in range(300):
        obj = _random(rng, 0)
        assert _text(obj) == json.dumps(obj, indent=2) + "\n"


def test_a_long_list_is_written_in_several_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(json_report, "_BATCH", 16)
    obj = {"orphans": [{"i": i, "evidence": ["x"] * 3} for i in range(100)]}
    writes: list[str] = []
    write_json(obj, writes.append)
    assert len(writes) > 10
    assert "".join(writes) == json.dumps(obj, indent=2) + "\n"


def test_what_json_cannot_encode_is_refused() -> None:
    with pytest.raises(TypeError):
        _text({"a": object()})
    with pytest.raises(TypeError):
        _text({(1, 2): "tuple key"})
