"""CSV files: the delimiter is told from the header and first lines, or named; a file that splits into one column
although its header holds separators is refused."""

from __future__ import annotations

import pytest

from ml.ingest.csv_files import WHITESPACE, TableLoadError, detect_delimiter, parse_delimiter, read_text_csv


@pytest.mark.parametrize("sample, expected", [
    ("id,name,score\n1,Ann,0.5\n2,Bob,0.7\n", ","),
    ("id;name;score\n1;Ann;0,5\n2;Bob;0,7\n", ";"),
    ("id\tname\tscore\n1\tAnn Lee\t0.5\n2\tBob\t0.7\n", "\t"),
    ("id|name|score\n1|Ann|0.5\n", "|"),
    ("id    name   score\n  1   Ann    0.5\n  2   Bob    0.7  \n", WHITESPACE),
    ('id,name,city\n1,"Lee, Ann","Paris; France"\n2,"Bob","Oslo"\n', ","),
    ('id name note\n1 "Ann Lee" "a, b"\n', WHITESPACE),
    ("a, b, c\n1, 2, 3\n", ","),
])
def test_the_delimiter_is_the_one_that_splits_every_line_alike(sample, expected):
    assert detect_delimiter(sample) == expected


@pytest.mark.parametrize("sample", ["value\n1\n2\n", "id  name  score\n1   Ann   0.5\n2         0.7\n", ""])
def test_no_delimiter_is_detected_when_no_candidate_splits_every_line_alike(sample):
    assert detect_delimiter(sample) is None


@pytest.mark.parametrize("named, expected", [
    ("comma", ","), (";", ";"), ("TAB", "\t"), ("\\t", "\t"), ("\t", "\t"), ("pipe", "|"), ("whitespace", WHITESPACE),
    ("space", WHITESPACE),
])
def test_a_delimiter_is_named_by_word_or_character(named, expected):
    assert parse_delimiter(named) == expected


def test_an_unknown_delimiter_name_says_which_are_known():
    with pytest.raises(TableLoadError, match="delimiter 'colon' is not supported: use comma, semicolon, tab"):
        parse_delimiter("colon")


def test_a_whitespace_separated_file_is_read_into_its_columns(tmp_path):
    path = tmp_path / "scores.txt"
    path.write_text('customerID   "Plan Name"   TotalCharges\nA-1   "Pro plus"   29.85\n\nB-2   Basic   1889.5\n')
    table, delimiter = read_text_csv(path)
    assert delimiter == WHITESPACE
    assert table.to_pylist() == [
        {"customer_id": "A-1", "plan_name": "Pro plus", "total_charges": "29.85", "source_row": 1},
        {"customer_id": "B-2", "plan_name": "Basic", "total_charges": "1889.5", "source_row": 2},
    ]


def test_a_semicolon_file_keeps_its_decimal_commas(tmp_path):
    path = tmp_path / "eu.csv"
    path.write_text("id;amount\n1;0,50\n2;12,75\n")
    table, delimiter = read_text_csv(path)
    assert delimiter == ";" and table.column("amount").to_pylist() == ["0,50", "12,75"]


def test_a_named_delimiter_overrides_detection(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("note;tag\nx;y\n")
    table, delimiter = read_text_csv(path, ",")
    assert delimiter == "," and table.column_names == ["note_tag", "source_row"]


def test_a_file_that_splits_into_one_column_with_separators_in_its_header_is_refused(tmp_path):
    path = tmp_path / "fixed.txt"
    path.write_text("id  name  score\n1   Ann   0.5\n2         0.7\n")
    with pytest.raises(TableLoadError) as refused:
        read_text_csv(path)
    message = str(refused.value)
    assert f"CSV file {path} splits into one column, named 'id  name  score'" in message
    assert "holds spaces" in message and "--delimiter" in message


def test_a_one_column_file_without_separators_loads(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("customerID\nA-1\nB-2\n")
    table, delimiter = read_text_csv(path)
    assert delimiter == "," and table.column("customer_id").to_pylist() == ["A-1", "B-2"]


def test_a_whitespace_row_with_a_missing_field_is_named(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("id name score\n1 Ann 0.5\n2 Bob\n")
    with pytest.raises(TableLoadError, match="data row 2 has 2 fields separated by whitespace, the header has 3"):
        read_text_csv(path, WHITESPACE)
