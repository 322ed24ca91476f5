"""dbt builds the feature and label marts for real, on DuckDB and on PostgreSQL."""

from dataclasses import replace
from datetime import date, timedelta

from ml.core.warehouse import Warehouse
from ml.features.dbt import run_dbt
from ml.ingest.load import load_days

FEATURES = "marts.customer_features_daily"
LABELS = "marts.churn_labels"


def _days(cfg, first, last):
    return {cfg.start + timedelta(days=i) for i in range(first, last + 1)}


def _build(settings, *args, vars=None, expect_success=True):
    result = run_dbt(["build", *args], settings=settings, vars=vars, capture=True)
    if expect_success:
        assert result.success, result.output[-4000:]
    return result


def _rows(settings, sql):
    with Warehouse.connect(settings) as wh:
        return wh.read_arrow(sql).to_pylist()


def _feature_rows(settings, day: date):
    return _rows(settings, f"select * from {FEATURES} where as_of_date = '{day}' order by customer_id")


def _normalize(rows):
    return [{k: (round(float(v), 4) if isinstance(v, (int, float)) or hasattr(v, "as_tuple") else v)
             for k, v in r.items()} for r in rows]


def test_full_build_then_a_daily_run_builds_only_its_day(warehouse_settings, small_sim):
    load_days(small_sim, _days(small_sim, 0, 59), settings=warehouse_settings)
    _build(warehouse_settings)
    d60 = small_sim.start + timedelta(days=60)
    with Warehouse.connect(warehouse_settings) as wh:
        assert wh.scalar(f"select max(as_of_date) from {FEATURES}") == d60 - timedelta(days=1)
        n_dates = wh.scalar(f"select count(distinct as_of_date) from {FEATURES}")
        # labels exist only where the 30-day horizon has closed inside the loaded data
        assert wh.scalar(f"select max(as_of_date) from {LABELS}") == d60 - timedelta(days=31)
        # mark an old row: a daily run must not rebuild (and so not reset) earlier dates
        wh.execute(f"update {FEATURES} set sessions_90d = -1 where as_of_date = '{small_sim.start + timedelta(days=10)}'")

    load_days(small_sim, {d60}, settings=warehouse_settings)
    _build(warehouse_settings, vars={"start_date": str(d60), "end_date": str(d60)})
    with Warehouse.connect(warehouse_settings) as wh:
        assert wh.scalar(f"select count(distinct as_of_date) from {FEATURES}") == n_dates + 1
        assert wh.scalar(f"select count(*) from {FEATURES} where sessions_90d = -1") > 0
        active = wh.scalar(
            "select count(*) from intermediate.int_customers_joined "
            f"where signup_date <= '{d60}' and (cancel_date is null or cancel_date > '{d60}')"
        )
        assert wh.scalar(f"select count(*) from {FEATURES} where as_of_date = '{d60}'") == active > 0
        assert wh.scalar(f"select max(as_of_date) from {LABELS}") == d60 - timedelta(days=30)
        # Every closed label has its feature row: the join that training reads (ml/training/data.py) loses none.
        joined = wh.scalar(f"select count(*) from {LABELS} l join {FEATURES} f "
                           "on f.customer_id = l.customer_id and f.as_of_date = l.as_of_date")
        labels = wh.scalar(f"select count(*) from {LABELS}")
        assert joined == labels > 0


def test_a_backfill_of_a_range_reproduces_the_full_build(warehouse_settings, small_sim):
    load_days(small_sim, _days(small_sim, 0, 49), settings=warehouse_settings)
    _build(warehouse_settings)
    lo, hi = small_sim.start + timedelta(days=40), small_sim.start + timedelta(days=44)
    query = f"select * from {FEATURES} where as_of_date between '{lo}' and '{hi}' order by as_of_date, customer_id"
    expected = _rows(warehouse_settings, query)
    with Warehouse.connect(warehouse_settings) as wh:
        wh.execute(f"delete from {FEATURES} where as_of_date between '{lo}' and '{hi}'")
    _build(warehouse_settings, "--select", "customer_features_daily", vars={"start_date": str(lo), "end_date": str(hi)})
    assert _normalize(_rows(warehouse_settings, query)) == _normalize(expected)
    assert len(expected) > 5 * 250


def _differences(settings, table: str) -> tuple[int, int, int]:
    """(mart rows, mart rows not in `table`, `table` rows not in the mart), duplicates counted."""
    mart, other = (f"select * from {t}" for t in (FEATURES, table))
    with Warehouse.connect(settings) as wh:
        return (
            wh.scalar(f"select count(*) from ({mart}) as m"),
            wh.scalar(f"select count(*) from ({mart} except all {other}) as d"),
            wh.scalar(f"select count(*) from ({other} except all {mart}) as d"),
        )


def test_the_window_and_join_formulations_give_the_same_rows(warehouse_settings, small_sim):
    """Range frames over each customer's days (full builds) give, row for row, what joining each date to
    its 90-day window gives (short runs): over a history longer than the window, with its drift event."""
    cfg = replace(small_sim, customers=200, days=120)
    load_days(cfg, _days(cfg, 0, cfg.days - 1), settings=warehouse_settings)
    _build(warehouse_settings, "--select", "+customer_features_daily", vars={"features_formulation": "join"})
    with Warehouse.connect(warehouse_settings) as wh:
        wh.execute(f"create table marts.features_by_join as select * from {FEATURES}")
    _build(warehouse_settings, "--select", "customer_features_daily", "--full-refresh",
           vars={"features_formulation": "windows"})
    rows, extra, missing = _differences(warehouse_settings, "marts.features_by_join")
    assert (extra, missing) == (0, 0) and rows > 120 * 150

    # auto: a run of a few dates takes the join, a longer one the windows; both replace the same rows
    for lo, hi in [(100, 101), (90, 119)]:
        first, last = cfg.start + timedelta(days=lo), cfg.start + timedelta(days=hi)
        with Warehouse.connect(warehouse_settings) as wh:
            wh.execute(f"delete from {FEATURES} where as_of_date between '{first}' and '{last}'")
        _build(warehouse_settings, "--select", "customer_features_daily",
               vars={"start_date": str(first), "end_date": str(last)})
        rows, extra, missing = _differences(warehouse_settings, "marts.features_by_join")
        assert (extra, missing) == (0, 0) and rows > 120 * 150


def test_no_feature_for_a_date_changes_when_later_events_are_deleted(warehouse_settings, small_sim):
    """The leakage test: features for D are computed from events on or before D only."""
    load_days(small_sim, _days(small_sim, 0, small_sim.days - 1), settings=warehouse_settings)
    _build(warehouse_settings)
    # a date just after the drift day, with price changes, plan changes and cancels still to come
    cutoff = small_sim.drift_date + timedelta(days=2)
    before = _feature_rows(warehouse_settings, cutoff)
    next_day = cutoff + timedelta(days=1)
    with Warehouse.connect(warehouse_settings) as wh:
        cancels_after = wh.scalar(f"select count(*) from {FEATURES} f join intermediate.int_customers_joined c "
                                  f"using (customer_id) where f.as_of_date = '{cutoff}' and c.cancel_date > '{cutoff}'")
        future = {
            "raw.customers": f"signup_date > '{cutoff}'",
            "raw.subscription_events": f"event_at >= '{next_day}'",
            "raw.usage_events": f"usage_date > '{cutoff}'",
            "raw.payments": f"attempted_at >= '{next_day}'",
            "raw.support_tickets": f"opened_at >= '{next_day}'",
        }
        deleted = 0
        for table, condition in future.items():
            deleted += wh.scalar(f"select count(*) from {table} where {condition}")
            wh.execute(f"delete from {table} where {condition}")
    assert deleted > 1_000 and cancels_after > 0
    # run, not build: the marts still hold later dates whose customers are now gone
    result = run_dbt(["run", "--select", "+customer_features_daily"], settings=warehouse_settings,
                     vars={"start_date": str(cutoff), "end_date": str(cutoff)}, capture=True)
    assert result.success, result.output[-4000:]
    after = _feature_rows(warehouse_settings, cutoff)
    assert len(after) == len(before) > 200
    assert _normalize(after) == _normalize(before)


BAD_INPUTS = {
    "null key": (
        "insert into raw.usage_events select null, customer_id, usage_date, sessions, minutes, ingest_date "
        "from raw.usage_events where ingest_date = '{day}' limit 1",
        "source_not_null_simulator_usage_events_event_id",
    ),
    "duplicate event id": (
        "insert into raw.support_tickets select * from raw.support_tickets where ingest_date = '{day}' limit 1",
        "source_unique_simulator_support_tickets_ticket_id",
    ),
    "negative amount": (
        "update raw.payments set amount = -amount where payment_id in "
        "(select min(payment_id) from raw.payments where ingest_date = '{day}')",
        "source_non_negative_simulator_payments_amount",
    ),
    "unknown plan code": (
        "update raw.subscription_events set plan_code = 'platinum' where event_id in "
        "(select min(event_id) from raw.subscription_events where ingest_date = '{day}')",
        "source_accepted_values_simulator_subscription_events_plan_code",
    ),
    "usage dated after its ingest_date": (
        "update raw.usage_events set usage_date = usage_date + 1 where event_id in "
        "(select max(event_id) from raw.usage_events where ingest_date = '{day}')",
        "source_dated_within_lateness_simulator_usage_events_usage_date",
    ),
    "second usage row for a customer's day": (
        "insert into raw.usage_events select event_id + 50000000, customer_id, usage_date, sessions, minutes, "
        "ingest_date from raw.usage_events where event_id in "
        "(select min(event_id) from raw.usage_events where ingest_date = '{day}')",
        "source_unique_combination_simulator_usage_events_customer_id__usage_date",
    ),
    "payment dated after its ingest_date": (
        "update raw.payments set attempted_at = attempted_at + interval '2 days' where payment_id in "
        "(select max(payment_id) from raw.payments where ingest_date = '{day}')",
        "source_dated_within_lateness_simulator_payments_attempted_at",
    ),
    "ticket backdated past the allowed lateness": (
        "update raw.support_tickets set opened_at = opened_at - interval '10 days' where ticket_id in "
        "(select max(ticket_id) from raw.support_tickets where ingest_date = '{day}')",
        "source_dated_within_lateness_simulator_support_tickets_opened_at",
    ),
}


def test_bad_raw_input_fails_the_build_by_name_and_publishes_nothing(warehouse_settings, small_sim):
    load_days(small_sim, _days(small_sim, 0, 39), settings=warehouse_settings)
    _build(warehouse_settings)
    day = small_sim.start + timedelta(days=40)
    load_days(small_sim, {day}, settings=warehouse_settings)
    with Warehouse.connect(warehouse_settings) as wh:
        for sql, _ in BAD_INPUTS.values():
            wh.execute(sql.format(day=day))
    result = _build(warehouse_settings, vars={"start_date": str(day), "end_date": str(day)}, expect_success=False)
    assert not result.success
    for kind, (_, test_name) in BAD_INPUTS.items():
        assert any(test_name in node for node in result.failures), f"{kind}: {test_name} not in {result.failures}"
        assert test_name in result.output
    with Warehouse.connect(warehouse_settings) as wh:
        assert wh.scalar(f"select count(*) from {FEATURES} where as_of_date = '{day}'") == 0
        assert wh.scalar(f"select max(as_of_date) from {FEATURES}") == day - timedelta(days=1)


def _features_on(settings, day: date) -> int:
    return _rows(settings, f"select count(*) as n from {FEATURES} where as_of_date = '{day}'")[0]["n"]


def test_dates_that_never_landed_are_refused_by_name_and_nothing_is_replaced(warehouse_settings, small_sim):
    """Past the watermark, or with a lost day in the features' 90-day look-back, the feature mart refuses."""
    load_days(small_sim, _days(small_sim, 0, 39), settings=warehouse_settings)
    watermark = small_sim.start + timedelta(days=39)
    _build(warehouse_settings, vars={"start_date": str(watermark), "end_date": str(watermark)})
    built = _features_on(warehouse_settings, watermark)
    assert built > 200

    last = watermark + timedelta(days=9)
    result = _build(warehouse_settings, vars={"start_date": str(watermark), "end_date": str(last)},
                    expect_success=False)
    assert "model.tidemark.customer_features_daily" in result.failures
    assert f"{watermark + timedelta(days=1)}..{last}" in result.output
    assert f"loaded through {watermark} (the watermark)" in result.output
    assert _rows(warehouse_settings, f"select max(as_of_date) as d from {FEATURES}")[0]["d"] == watermark
    assert _features_on(warehouse_settings, watermark) == built

    lost = watermark - timedelta(days=5)
    with Warehouse.connect(warehouse_settings) as wh:
        for table in ("customers", "subscription_events", "usage_events", "payments", "support_tickets"):
            wh.execute(f"delete from raw.{table} where ingest_date = '{lost}'")
    result = _build(warehouse_settings, vars={"start_date": str(watermark), "end_date": str(watermark)},
                    expect_success=False)
    assert "model.tidemark.customer_features_daily" in result.failures
    assert f"have not landed: {lost}. The raw data is loaded through {watermark}" in result.output
    assert _features_on(warehouse_settings, watermark) == built


VOLUME_TEST = "source_daily_volume_simulator_usage_events_ingest_date"


def test_an_empty_or_thin_day_fails_the_volume_test_and_publishes_nothing(warehouse_settings, small_sim):
    """A day whose usage rows are gone, or mostly gone, while the other tables landed, fails by name."""
    load_days(small_sim, _days(small_sim, 0, 41), settings=warehouse_settings)
    first = small_sim.start + timedelta(days=39)
    _build(warehouse_settings, vars={"start_date": str(first), "end_date": str(first)})
    empty, thin = first + timedelta(days=1), first + timedelta(days=2)
    with Warehouse.connect(warehouse_settings) as wh:
        wh.execute(f"delete from raw.usage_events where ingest_date = '{empty}'")
        wh.execute(f"delete from raw.usage_events where ingest_date = '{thin}' and event_id % 10 <> 0")
        kept = wh.scalar(f"select count(*) from raw.usage_events where ingest_date = '{thin}'")
        assert wh.scalar(f"select count(*) from raw.payments where ingest_date = '{empty}'") > 0
    result = _build(warehouse_settings, vars={"start_date": str(empty), "end_date": str(thin)}, expect_success=False)
    assert any(VOLUME_TEST in node for node in result.failures), result.failures
    assert VOLUME_TEST in result.output
    failing = _rows(warehouse_settings, "select landed_date, row_count, loaded_through "
                                        f"from dbt_test__audit.{VOLUME_TEST} order by landed_date")
    assert failing == [{"landed_date": empty, "row_count": 0, "loaded_through": thin},
                       {"landed_date": thin, "row_count": kept, "loaded_through": thin}]
    assert 0 < kept < 50
    assert _rows(warehouse_settings, f"select max(as_of_date) as d from {FEATURES}")[0]["d"] == first


def test_dbt_in_process_names_the_failing_node_and_releases_the_warehouse(duckdb_settings):
    """invoke_dbt (the scores mart's build inside score_batch) reports what failed, like a dbt process, and
    leaves the DuckDB file free for another process to write once the command ends."""
    import subprocess
    import sys

    from ml.features.dbt import invoke_dbt

    with Warehouse.connect(duckdb_settings):
        pass  # the file exists; no raw table does
    result = invoke_dbt(["build", "--select", "stg_simulator__customers"], settings=duckdb_settings)
    assert not result.success
    assert result.failures == ["model.tidemark.stg_simulator__customers"]
    assert "raw" in result.output and "customers" in result.output
    writer = "import duckdb, sys; duckdb.connect(sys.argv[1]).execute('create table marker as select 1 as x')"
    other = subprocess.run([sys.executable, "-c", writer, str(duckdb_settings.warehouse.path)], capture_output=True,
                           text=True)
    assert other.returncode == 0, other.stderr
