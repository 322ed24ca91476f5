from datetime import date, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ml.ingest.raw_tables import RAW_KEYS, RAW_SCHEMAS
from ml.ingest.simulate import SimConfig, simulate


def _history(cfg):
    return {day: tables for day, tables in simulate(cfg)}


def _concat(history, name):
    return pa.concat_tables([tables[name] for tables in history.values()])


@pytest.fixture(scope="module")
def cfg():
    return SimConfig(seed=3, customers=4_000, start=date(2025, 1, 1), days=90, drift_date=date(2025, 3, 1))


@pytest.fixture(scope="module")
def history(cfg):
    return _history(cfg)


def test_same_seed_gives_identical_tables(cfg, history):
    again = _history(cfg)
    for day, tables in history.items():
        for name, table in tables.items():
            assert table.equals(again[day][name]), f"{name} differs on {day}"


def test_another_seed_gives_other_tables(cfg, history):
    other = _history(SimConfig(**{**cfg.__dict__, "seed": 4}))
    assert not _concat(history, "usage_events").equals(_concat(other, "usage_events"))


def test_a_single_day_equals_that_day_of_the_full_history(cfg, history):
    day = cfg.start + timedelta(days=65)
    [(got_day, tables)] = list(simulate(cfg, only={day}))
    assert got_day == day
    for name, table in tables.items():
        assert table.equals(history[day][name])


def test_tables_follow_their_schemas_and_keys_are_unique(history):
    for name, schema in RAW_SCHEMAS.items():
        table = _concat(history, name)
        assert table.schema.equals(schema)
        keys = table[RAW_KEYS[name]]
        assert pc.count_distinct(keys).as_py() == len(keys), f"{name} keys repeat"


def test_every_row_lands_in_its_own_day_partition(history):
    for day, tables in history.items():
        for name, table in tables.items():
            assert pc.all(pc.equal(table["ingest_date"], pa.scalar(day, pa.date32()))).as_py() in (True, None)


def test_failed_payments_exist_and_amounts_are_positive(history):
    payments = _concat(history, "payments")
    failed = pc.sum(pc.equal(payments["status"], "failed")).as_py()
    assert 0 < failed < 0.2 * len(payments)
    assert pc.min(payments["amount"]).as_py() > 0


def test_drift_raises_prices_and_brings_a_new_channel(cfg, history):
    subs = _concat(history, "subscription_events").to_pandas()
    price_changes = subs[subs.event_type == "price_change"]
    assert len(price_changes) > 1_000
    assert set(price_changes.event_at.dt.date) == {cfg.drift_date}
    customers = _concat(history, "customers").to_pandas()
    before = customers[customers.signup_date < cfg.drift_date]
    after = customers[customers.signup_date >= cfg.drift_date]
    assert (before.acquisition_channel == "social_promo").sum() == 0
    assert (after.acquisition_channel == "social_promo").mean() > 0.3


def test_churn_follows_behaviour_not_chance(cfg, history):
    """Customers with failed payments, tickets or falling usage cancel far more often than the rest."""
    subs = _concat(history, "subscription_events").to_pandas()
    cancelled = set(subs.loc[subs.event_type == "cancel", "customer_id"])
    customers = _concat(history, "customers").to_pandas().customer_id
    payments = _concat(history, "payments").to_pandas()
    failed_any = set(payments.loc[payments.status == "failed", "customer_id"])
    usage = _concat(history, "usage_events").to_pandas()
    early = usage[usage.usage_date < cfg.start + timedelta(days=30)].groupby("customer_id").sessions.sum()
    late = usage[
        (usage.usage_date >= cfg.start + timedelta(days=30)) & (usage.usage_date < cfg.start + timedelta(days=45))
    ].groupby("customer_id").sessions.sum().reindex(early.index, fill_value=0)
    fading = set(early.index[(late / 15) < 0.5 * (early / 30)])

    def rate(group, population):
        group = set(group) & set(population)
        return len(group & cancelled) / max(len(group), 1)

    base = rate(set(customers) - failed_any - fading, customers)
    assert rate(failed_any, customers) > 1.5 * base
    assert rate(fading, customers) > 2 * base
    monthly = len(cancelled & set(customers)) / len(customers) / (cfg.days / 30)
    assert 0.01 < monthly < 0.2


@pytest.mark.parametrize(
    "kwargs, message",
    [({"customers": 0}, "customers"), ({"days": 0}, "days"), ({"price_rise": -1}, "price_rise")],
)
def test_bad_config_is_refused_with_the_field_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimConfig(**kwargs)


def test_a_day_outside_the_simulation_is_refused(cfg):
    with pytest.raises(ValueError, match="outside the simulated range"):
        cfg.day_index(cfg.start - timedelta(days=1))
