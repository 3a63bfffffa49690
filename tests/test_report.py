"""Tables: aligned Markdown, short numbers, per-round lists on one line."""

from __future__ import annotations

from napari_rckd.report import format_table


def test_table_aligns_columns_and_shortens_numbers():
    rows = [
        {"test": "a", "rate": 0.59231, "rounds": [0.5923, 0.52811]},
        {"test": "bb", "n": 12345.0},
    ]
    lines = format_table(rows).splitlines()
    assert lines[0] == "| test | rate  | rounds      | n      |"
    assert lines[2] == "| a    | 0.592 | 0.592 0.528 |        |"
    assert lines[3] == "| bb   |       |             | 12,345 |"
    assert len({len(line) for line in lines}) == 1
