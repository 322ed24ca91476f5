"""Landing raw days in the real warehouses: bulk, per-day replaceable, atomic, reproducible."""

import subprocess
import sys
from datetime import timedelta

import pyarrow as pa
import pytest

from ml.core.warehouse import Warehouse
from ml.ingest.load import RAW_SCHEMA, load_days, raw_table_hashes
from ml.ingest.raw_tables import RAW_KEYS
from ml.ingest.simulate import simulate

TABLES = [f"{RAW_SCHEMA}.{name}" for name in RAW_KEYS]


def _counts(settings):
    with Warehouse.connect(settings) as wh:
        return {t: wh.scalar(f"select count(*) from {t}") for t in TABLES}


def test_reloading_a_day_replaces_it_and_duplicates_nothing(warehouse_settings, small_sim):
    first_days = {small_sim.start + timedelta(days=i) for i in range(6)}
    load_days(small_sim, first_days, settings=warehouse_settings)
    before = _counts(warehouse_settings)
    hashes = raw_table_hashes(warehouse_settings)
    report = load_days(small_sim, {small_sim.start + timedelta(days=3)}, settings=warehouse_settings)
    assert report.total_rows > 0
    assert _counts(warehouse_settings) == before
    assert raw_table_hashes(warehouse_settings) == hashes


def test_a_failed_day_load_leaves_every_table_as_it_was(warehouse_settings, small_sim):
    day = small_sim.start + timedelta(days=1)
    load_days(small_sim, {small_sim.start, day}, settings=warehouse_settings)
    before = _counts(warehouse_settings)
    [(_, tables)] = list(simulate(small_sim, only={day}))
    broken = tables["payments"].set_column(
        tables["payments"].schema.get_field_index("amount"),
        "amount",
        pa.array(["not-a-number"] * tables["payments"].num_rows, pa.string()),
    )
    # usage (written first) would be replaced, then payments fail: the whole day must roll back
    batch = {"raw.usage_events": tables["usage_events"].slice(0, 1), "raw.payments": broken}
    with Warehouse.connect(warehouse_settings) as wh, pytest.raises(Exception):
        wh.replace_partitions("ingest_date", day, batch)
    assert _counts(warehouse_settings) == before


def test_simulate_cli_hashes_are_identical_for_the_same_seed(tmp_path):
    def run(home, seed):
        env = {"TIDEMARK_HOME": str(home), "PATH": "/usr/bin:/bin"}
        args = [sys.executable, "-m", "ml", "simulate", "--customers", "200", "--days", "12", "--seed", str(seed), "--hash"]
        out = subprocess.run(args, env=env, capture_output=True, text=True, check=True).stdout
        return dict(line.split("\t") for line in out.strip().splitlines())

    a, b, c = run(tmp_path / "a", 5), run(tmp_path / "b", 5), run(tmp_path / "c", 6)
    assert set(a) == set(RAW_KEYS)
    assert a == b
    assert a["usage_events"] != c["usage_events"]


def test_simulate_cli_refuses_a_bad_date_clearly(tmp_path):
    env = {"TIDEMARK_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "ml", "simulate", "--start", "2025-13-01"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "2025-13-01" in proc.stderr and "YYYY-MM-DD" in proc.stderr


def test_loading_a_day_outside_the_simulation_is_refused(duckdb_settings, small_sim):
    with pytest.raises(ValueError, match="outside the simulated range"):
        load_days(small_sim, {small_sim.end + timedelta(days=1)}, settings=duckdb_settings)


# -- load-csv: the delimiter is detected, reported and can be named ---------------------------------
def _load_csv_cli(tmp_path, monkeypatch, *args: str):
    """`python -m ml load-csv ARGS` in this process, against a DuckDB warehouse in `tmp_path`."""
    from typer.testing import CliRunner

    from ml.cli import app

    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path))
    monkeypatch.setenv("TIDEMARK_WAREHOUSE_URL", f"duckdb:///{tmp_path / 'warehouse.duckdb'}")
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner().invoke(app, ["load-csv", *args])


def test_load_csv_splits_a_whitespace_separated_file_into_its_columns(tmp_path, monkeypatch):
    from ml.core.settings import Settings

    path = tmp_path / "usage.txt"
    lines = ["customerID    minutes  plan"] + [f"C-{i:05d}  {i * 7 % 613:>7}  {'pro' if i % 3 else 'basic'}"
                                                  for i in range(1, 2501)]
    path.write_text("\n".join(lines) + "\n")
    result = _load_csv_cli(tmp_path, monkeypatch, str(path), "usage")
    assert result.exit_code == 0, result.output
    assert "2,500 rows loaded into raw.usage" in result.output
    assert "3 columns split on whitespace (detected): customer_id, minutes, plan" in result.output
    with Warehouse.connect(Settings.from_env(), read_only=True) as wh:
        rows = wh.read_arrow("select * from raw.usage order by source_row").to_pylist()
    assert len(rows) == 2500
    assert rows[0] == {"customer_id": "C-00001", "minutes": "7", "plan": "pro", "source_row": 1}
    assert rows[-1] == {"customer_id": "C-02500", "minutes": str(2500 * 7 % 613), "plan": "pro", "source_row": 2500}


def test_load_csv_refuses_one_column_with_separators_in_its_header_and_keeps_the_table(tmp_path, monkeypatch):
    from ml.core.settings import Settings

    good = tmp_path / "good.csv"
    good.write_text("a;b\n1;2\n")
    assert _load_csv_cli(tmp_path, monkeypatch, str(good), "rows").exit_code == 0
    fixed = tmp_path / "fixed.txt"
    fixed.write_text("id  name  score\n1   Ann   0.5\n2         0.7\n")
    result = _load_csv_cli(tmp_path, monkeypatch, str(fixed), "rows")
    assert result.exit_code == 2 and result.exception is not None and isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.output.startswith(f"error: CSV file {fixed} splits into one column, named 'id  name  score'")
    assert "--delimiter" in result.output
    with Warehouse.connect(Settings.from_env(), read_only=True) as wh:
        assert wh.read_arrow("select a, b from raw.rows").to_pylist() == [{"a": "1", "b": "2"}]
    named = _load_csv_cli(tmp_path, monkeypatch, str(good), "rows", "--delimiter", "comma")
    assert named.exit_code == 0, named.output
    assert "1 column split on comma (given): a_b" in named.output
