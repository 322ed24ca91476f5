"""dbt builds the feature and label marts for real, on DuckDB and on PostgreSQL."""

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
