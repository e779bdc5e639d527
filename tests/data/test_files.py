"""`rlhf.data.files`: the one JSONL writer every stage uses, and read_json."""

import json

import pytest

from rlhf.data.files import read_json, write_jsonl
from rlhf.data.formats import read_comparisons


def test_write_jsonl_round_trips_through_the_readers(tmp_path):
    rows = [{"prompt": "Il était une fois", "chosen": "un chat ☀", "rejected": "rien"}]
    out = write_jsonl(tmp_path / "new" / "pairs.jsonl", rows)  # the parent is made
    assert out == tmp_path / "new" / "pairs.jsonl"
    assert "☀" in out.read_text(encoding="utf-8")  # UTF-8 as it is, no \u escapes
    assert [c.chosen for c in read_comparisons(out)] == ["un chat ☀"]
    assert [p.name for p in out.parent.iterdir()] == ["pairs.jsonl"]  # no temporary file left


def test_write_jsonl_replaces_and_refuses_non_finite_numbers(tmp_path):
    out = write_jsonl(tmp_path / "rows.jsonl", [{"a": 1}])
    with pytest.raises(ValueError, match="rows.jsonl.*NaN or infinity"):
        write_jsonl(out, [{"a": float("nan")}])
    assert out.read_text(encoding="utf-8") == '{"a": 1}\n'  # the old file is kept whole
    write_jsonl(out, ({"a": i} for i in range(2)))  # any iterable of rows
    assert [json.loads(line) for line in out.read_text().splitlines()] == [{"a": 0}, {"a": 1}]


def test_read_json(tmp_path):
    path = tmp_path / "summary.json"
    assert read_json(path, missing_ok=True) is None
    with pytest.raises(FileNotFoundError):
        read_json(path)
    path.write_text('{"wall_s": 1.5}')
    assert read_json(path) == {"wall_s": 1.5}
    path.write_text("{not json")
    with pytest.raises(ValueError, match="summary.json: not valid JSON"):
        read_json(path)
