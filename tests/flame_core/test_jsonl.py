import numpy as np
import pytest

from flame_core.jsonl import iter_jsonl, iter_jsonl_numbered, read_jsonl, write_jsonl

SAMPLES = [
    {"id": "p1", "modalities": {"vitals": {"times": [0, 1.5], "values": [[1, None], [2.25, 3]]}}, "label": 1},
    {
        "id": "p2",
        "modalities": {"note": {"text": "fièvre, toux \u2014 ok"}},
        "labels": {"los": 2.5, "death": None},
    },
]


def test_round_trip(tmp_path) -> None:
    path = tmp_path / "data.jsonl"
    assert write_jsonl(path, SAMPLES) == 2
    assert read_jsonl(path) == SAMPLES
    assert list(iter_jsonl(path)) == SAMPLES
    assert path.read_text(encoding="utf-8").count("\n") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl"]  # no temp file left behind


def test_blank_lines_skipped_and_line_numbers_kept(tmp_path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('\n{"a": 1}\n   \n{"a": 2}\n\n')
    assert [(n, s["a"]) for n, s in iter_jsonl_numbered(path)] == [(2, 1), (4, 2)]


@pytest.mark.parametrize(
    ("text", "line"),
    [('{"a": 1}\n{"a": 2\n', 2), ('{"a": 1}\n\n\n{"a" 1}\n', 4), ('{"a": 1}\n[1, 2]\n', 2), ("7\n", 1)],
)
def test_errors_name_the_line(tmp_path, text: str, line: int) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(ValueError) as e:
        read_jsonl(path)
    assert f"line {line}:" in str(e.value)


def test_bad_utf8_names_the_line(tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    with pytest.raises(ValueError, match="line 2: not valid UTF-8"):
        read_jsonl(path)


def test_nan_is_never_written_and_old_file_survives(tmp_path) -> None:
    path = tmp_path / "data.jsonl"
    write_jsonl(path, SAMPLES)
    before = path.read_bytes()
    bad = [SAMPLES[0], {"modalities": {"labs": {"values": [1.0, float("nan")]}}}]
    with pytest.raises(ValueError, match="sample 1.*NaN"):
        write_jsonl(path, bad)
    with pytest.raises(ValueError, match="NaN"):
        write_jsonl(tmp_path / "other.jsonl", [{"x": np.array([np.inf])}])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl"]


def test_numpy_values_become_plain_json(tmp_path) -> None:
    path = tmp_path / "np.jsonl"
    write_jsonl(path, [{"v": np.arange(3, dtype=np.float32), "k": np.int64(4), "b": np.bool_(True)}])
    assert path.read_text() == '{"v": [0.0, 1.0, 2.0], "k": 4, "b": true}\n'
    with pytest.raises(ValueError, match="sample 0.*set"):
        write_jsonl(path, [{"s": {1, 2}}])
