"""dbt builds the payment-default labels, on DuckDB and on PostgreSQL, as the raw payments say they are."""

from collections import defaultdict
from datetime import date, datetime, timedelta

from ml.core.warehouse import Warehouse
from ml.features.dbt import run_dbt
from ml.ingest.load import load_days

HORIZON = 33
LABELS = "marts.payment_default_labels"
FEATURES = "marts.customer_features_daily"


def _day(cfg, n: int) -> date:
    return cfg.start + timedelta(days=n)


def _days(cfg, first, last):
    return {_day(cfg, i) for i in range(first, last + 1)}


def _build(settings):
    result = run_dbt(["build", "--select", "+payment_default_labels"], settings=settings, capture=True)
    assert result.success, result.output[-4000:]


def _rows(settings, sql):
    with Warehouse.connect(settings) as wh:
        return wh.read_arrow(sql).to_pylist()


def _date(value) -> date:
    return value.date() if isinstance(value, datetime) else value


def bill_outcomes(cutoffs, payments, loaded_through: date) -> dict[tuple[date, int], str]:
    """(as_of_date, customer_id) -> how the next bill ended (paid, paid_on_retry or defaulted), from the raw
    payments: the first bill in the horizon, then its retry.

    No entry when the horizon is still open, when no bill came due, or when a failed bill has no retry.
    """
    attempts = defaultdict(list)
    for p in sorted(payments, key=lambda p: p["attempted_at"]):
        attempts[p["customer_id"]].append((_date(p["attempted_at"]), p["attempt"], p["status"]))
    outcomes = {}
    for row in cutoffs:
        as_of, customer = row["as_of_date"], row["customer_id"]
        end = as_of + timedelta(days=HORIZON)
        if end > loaded_through:
            continue
        window = [a for a in attempts[customer] if as_of < a[0] <= end]
        bills = [a for a in window if a[1] == 1]
        if not bills:
            continue
        bill_day, _, status = bills[0]
        if status == "succeeded":
            outcomes[(as_of, customer)] = "paid"
            continue
        retries = [a for a in window if a[1] == 2 and a[0] > bill_day]
        if retries:
            outcomes[(as_of, customer)] = "defaulted" if retries[0][2] == "failed" else "paid_on_retry"
    return outcomes


def test_labels_match_the_raw_payments(warehouse_settings, small_sim):
    load_days(small_sim, _days(small_sim, 0, small_sim.days - 1), settings=warehouse_settings)
    _build(warehouse_settings)
    last = _day(small_sim, small_sim.days - 1)

    labels = _rows(warehouse_settings, f"select as_of_date, customer_id, horizon_days, defaulted from {LABELS}")
    actual = {(r["as_of_date"], r["customer_id"]): r["defaulted"] for r in labels}
    assert len(actual) == len(labels)
    assert {r["horizon_days"] for r in labels} == {HORIZON}
    assert max(as_of for as_of, _ in actual) == last - timedelta(days=HORIZON)
    cutoffs = _rows(warehouse_settings, f"select as_of_date, customer_id from {FEATURES}")
    payments = _rows(warehouse_settings, "select customer_id, attempted_at, attempt, status from raw.payments")
    outcomes = bill_outcomes(cutoffs, payments, loaded_through=last)

    assert actual == {key: int(how == "defaulted") for key, how in outcomes.items()}
    # every outcome occurs, and a customer who cancels before the bill (or its retry) has no row
    counts = {how: list(outcomes.values()).count(how) for how in ("paid", "paid_on_retry", "defaulted")}
    assert counts["paid"] > 5_000 and counts["paid_on_retry"] > 20 and counts["defaulted"] > 20, counts
    closed = sum(1 for r in cutoffs if r["as_of_date"] <= last - timedelta(days=HORIZON))
    assert len(outcomes) < closed
