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
