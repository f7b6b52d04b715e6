"""The strict state-file mechanism: every way a file can be damaged is one named error."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, ConfigDict

from tasks.statefiles import (
    StateFileError,
    append_jsonl,
    escape_text,
    is_temp_name,
    load_json_state,
    log_repair,
    read_jsonl,
    repairs_path,
)


class Thing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    used: int
    limit: int


@pytest.mark.parametrize("content, problem", [
    (b"", "empty file"),
    (b"  \n", "empty file"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"used": 1, "lim', "not JSON"),
    (b"{}", "wrong shape at used"),
    (b"[]", "wrong shape at top level"),
    (b'{"used": "x", "limit": 3}', "wrong shape at used"),
    (b'{"used": 1, "limit": 3, "extra": 1}', "wrong shape at extra"),
])
def test_every_damage_is_one_line_naming_the_file(tmp_path, content, problem):
    path = tmp_path / "b.json"
    path.write_bytes(content)
    with pytest.raises(StateFileError) as err:
        load_json_state(path, Thing, remedy="run `hcp state repair budget`")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path)) and problem in msg
    assert msg.endswith("run `hcp state repair budget`")


def test_missing_is_none_unless_its_history_says_it_exists(tmp_path):
    path = tmp_path / "none.json"
    assert load_json_state(path, Thing, remedy="r") is None
    with pytest.raises(StateFileError, match="missing although its history says it exists"):
        load_json_state(path, Thing, remedy="r", required=True)
    path.write_text(json.dumps({"used": 1, "limit": 3}))
    assert load_json_state(path, Thing, remedy="r") == Thing(used=1, limit=3)


def test_an_append_after_a_torn_line_starts_a_line_of_its_own(tmp_path):
    path = tmp_path / "alerts.jsonl"
    append_jsonl(path, {"n": 1})
    with open(path, "ab") as fh:
        fh.write(b'{"n": 2, "te')          # a write cut by a crash
    append_jsonl(path, {"n": 3, "level": "CRITICAL"})
    read = read_jsonl(path)
    assert [r["n"] for r in read.records] == [1, 3] and read.bad_lines == [2]


def test_foreign_bytes_are_reported_not_fatal(tmp_path):
    path = tmp_path / "alerts.jsonl"
    path.write_bytes(b'{"n": 1}\n\xff\xfe garbage\n[1, 2]\n{"n": 4}\n')
    read = read_jsonl(path)
    assert [r["n"] for r in read.records] == [1, 4] and read.bad_lines == [2, 3]


def test_operator_text_cannot_forge_a_line_or_a_colour():
    forged = "ok\n2024-01-02 CRITICAL Kill-switch \x1b[31mtripped\x1b[0m\r\t"
    out = escape_text(forged)
    assert "\n" not in out and "\x1b" not in out and "\r" not in out and "\t" not in out
    assert out == "ok\\n2024-01-02 CRITICAL Kill-switch \\x1b[31mtripped\\x1b[0m\\r\\t"
    assert escape_text("Zoë — ok") == "Zoë — ok"


def test_repairs_are_logged_with_who_and_why(tmp_path):
    with pytest.raises(ValueError, match="--by and --reason"):
        log_repair(tmp_path, file="budget", action="x", by=" ", reason="r", at="t")
    rec = log_repair(tmp_path, file="budget", action="counted as spent", by="ops\x1b[2J",
                     reason="file lost", at="2024-01-02T08:00:00")
    assert rec["by"] == "ops\\x1b[2J"
    assert read_jsonl(repairs_path(tmp_path)).records == [rec]


def test_temp_names():
    assert is_temp_name(".tmp-abc.json") and is_temp_name(".old-store")
    assert not is_temp_name("2024-01-02.json")
