"""Deterministic simulator of a subscription business's raw operational tables.

Customers churn through a latent daily hazard driven by falling usage, payment failures, support
tickets, price and tenure; nothing in the raw tables states the propensity. From `drift_date` on, a
price rise and a new acquisition channel shift the feature distributions and the churn relationship.
Each day is vectorized over customers; the only Python loop is over days.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Iterator

import numpy as np
import pyarrow as pa

from ml.core.errors import TidemarkError
from ml.ingest.raw_tables import RAW_SCHEMAS

PLANS = ("basic", "standard", "premium")
PLAN_PRICES = np.array([9.99, 19.99, 34.99])
REGIONS = ("north", "south", "east", "west")
CHANNELS = ("organic", "paid_search", "referral", "partner", "social_promo")
TICKET_CATEGORIES = ("billing", "technical", "account", "cancellation")
PRIORITIES = ("low", "normal", "high")
EVENT_TYPES = ("start", "plan_change", "price_change", "cancel")

# Event ids are (ingest day + 1) * ID_STRIDE + row number, so they are unique and stable per day.
ID_STRIDE = 100_000_000
BILLING_CYCLE_DAYS = 30
RETRY_AFTER_DAYS = 3
_SECONDS_PER_DAY = 86_400

class SimulationError(TidemarkError, ValueError):
    """A simulation was asked for with parameters it cannot run; the message names the parameter."""


@dataclass(frozen=True)
class SimConfig:
    """Parameters of one simulated history. Same config, same bytes."""

    seed: int = 7
    customers: int = 5_000
    start: date = date(2025, 1, 1)
    days: int = 120
    drift_date: date | None = date(2025, 4, 1)
    price_rise: float = 0.25
    new_channel_share: float = 0.45
    daily_signup_rate: float = 0.0015

    def __post_init__(self) -> None:
        if self.customers < 1:
            raise SimulationError(f"customers must be at least 1, got {self.customers}")
        if self.days < 1:
            raise SimulationError(f"days must be at least 1, got {self.days}")
        if not 0 <= self.price_rise < 5:
            raise SimulationError(f"price_rise must be in [0, 5), got {self.price_rise}")
        if not 0 <= self.new_channel_share <= 1:
            raise SimulationError(f"new_channel_share must be in [0, 1], got {self.new_channel_share}")

    @property
    def end(self) -> date:
        """Last simulated day (inclusive)."""
        return self.start + timedelta(days=self.days - 1)

    def day_index(self, day: date) -> int:
        idx = (day - self.start).days
        if not 0 <= idx < self.days:
            raise SimulationError(f"{day} is outside the simulated range {self.start}..{self.end}")
        return idx

    @property
    def drift_index(self) -> int | None:
        if self.drift_date is None:
            return None
        return (self.drift_date - self.start).days


@dataclass
class _Population:
    """Per-customer state, one numpy array per attribute, grown as customers sign up."""

    customer_id: np.ndarray
    signup_day: np.ndarray
    plan: np.ndarray
    channel: np.ndarray
    active: np.ndarray
    engagement: np.ndarray
    onset_day: np.ndarray
    decline_rate: np.ndarray
    payment_risk: np.ndarray
    support_rate: np.ndarray
    price_sensitivity: np.ndarray
    ema7: np.ndarray
    ema30: np.ndarray
    fail_score: np.ndarray
    ticket_score: np.ndarray
    price: np.ndarray
    retry_day: np.ndarray

    def extend(self, other: "_Population") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, np.concatenate([getattr(self, name), getattr(other, name)]))


def _new_customers(
    rng: np.random.Generator, n: int, first_id: int, day: int, cfg: SimConfig, signup_days: np.ndarray | None
) -> tuple[_Population, np.ndarray]:
    after_drift = cfg.drift_index is not None and day >= cfg.drift_index
    channel_p = np.array([0.40, 0.25, 0.20, 0.15, 0.0])
    if after_drift and signup_days is None:
        channel_p = channel_p * (1 - cfg.new_channel_share)
        channel_p[4] = cfg.new_channel_share
    channel = rng.choice(len(CHANNELS), size=n, p=channel_p).astype(np.int8)
    plan = rng.choice(len(PLANS), size=n, p=[0.5, 0.35, 0.15]).astype(np.int8)
    region = rng.choice(len(REGIONS), size=n, p=[0.3, 0.25, 0.25, 0.2]).astype(np.int8)
    promo = channel == 4
    engagement = rng.lognormal(mean=np.log(1.6), sigma=0.5, size=n) * np.where(promo, 0.6, 1.0)
    engagement *= 1.0 + 0.25 * plan
    declining = rng.random(n) < np.where(promo, 0.45, 0.3)
    onset = np.where(declining, day + rng.integers(5, 240, size=n), np.iinfo(np.int32).max).astype(np.int32)
    if signup_days is None:
        signup_days = np.full(n, day, dtype=np.int32)
    price_mult = 1.0 + (cfg.price_rise if after_drift else 0.0)
    pop = _Population(
        customer_id=np.arange(first_id, first_id + n, dtype=np.int64),
        signup_day=signup_days.astype(np.int32),
        plan=plan,
        channel=channel,
        active=np.ones(n, dtype=bool),
        engagement=engagement,
        onset_day=onset,
        decline_rate=rng.uniform(0.01, 0.05, size=n),
        payment_risk=rng.beta(1.2, 30, size=n) * np.where(promo, 1.8, 1.0),
        support_rate=rng.lognormal(mean=np.log(0.004), sigma=0.6, size=n),
        price_sensitivity=rng.lognormal(mean=0.0, sigma=0.4, size=n) * np.where(promo, 1.8, 1.0),
        ema7=engagement.copy(),
        ema30=engagement.copy(),
        fail_score=np.zeros(n),
        ticket_score=np.zeros(n),
        price=np.round(PLAN_PRICES[plan] * price_mult, 2),
        retry_day=np.full(n, -1, dtype=np.int32),
    )
    return pop, region


def _timestamps(rng: np.random.Generator, day: date, n: int) -> pa.Array:
    base = np.datetime64(datetime(day.year, day.month, day.day), "us")
    offsets = rng.integers(0, _SECONDS_PER_DAY, size=n).astype("timedelta64[s]").astype("timedelta64[us]")
    return pa.array(base + offsets, type=pa.timestamp("us"))


def _strings(codes: np.ndarray, labels: tuple[str, ...]) -> pa.Array:
    """Vectorized code -> label mapping through a dictionary array."""
    return pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int32()), pa.array(labels)).cast(pa.string())


def _ids(day: int, n: int) -> np.ndarray:
    return (day + 1) * ID_STRIDE + np.arange(n, dtype=np.int64)


def _date_col(day: date, n: int) -> pa.Array:
    return pa.array(np.full(n, np.datetime64(day, "D")), type=pa.date32())


def simulate(cfg: SimConfig, only: set[date] | None = None) -> Iterator[tuple[date, dict[str, pa.Table]]]:
    """Yield (day, {table: arrow table}) for every simulated day, or only the days in `only`.

    The state always evolves from `cfg.start` and every day's tables are built whether emitted or not,
    so a single day is identical whether it is produced alone or as part of the whole history.
    """
    first_rng = np.random.default_rng([cfg.seed, 0, 1])
    signup_days = -first_rng.integers(1, 730, size=cfg.customers).astype(np.int32)
    pop, region0 = _new_customers(first_rng, cfg.customers, 1, 0, cfg, signup_days)
    pending_customers: tuple[_Population, np.ndarray] | None = (pop, region0)
    next_id = cfg.customers + 1
    last_day = max(only) if only else cfg.end
    drift = cfg.drift_index

    for t in range(cfg.days):
        day = cfg.start + timedelta(days=t)
        if day > last_day:
            return
        rng = np.random.default_rng([cfg.seed, t + 1])
        emit = only is None or day in only
        tables: dict[str, pa.Table] = {}
        sub_parts: list[dict[str, pa.Array]] = []

        # 1. sign-ups (the initial base lands on day 0)
        if t == 0:
            new, region = pending_customers
        else:
            n_new = rng.poisson(cfg.daily_signup_rate * cfg.customers)
            new, region = _new_customers(rng, n_new, next_id, t, cfg, None)
            pop.extend(new)
        next_id += len(new.customer_id) if t > 0 else 0
        n = len(new.customer_id)
        signup = np.datetime64(cfg.start, "D") + new.signup_day.astype("timedelta64[D]")
        tables["customers"] = pa.table(
            {
                "customer_id": new.customer_id,
                "signup_date": pa.array(signup, type=pa.date32()),
                "plan_code": _strings(new.plan, PLANS),
                "region": _strings(region, REGIONS),
                "acquisition_channel": _strings(new.channel, CHANNELS),
                "ingest_date": _date_col(day, n),
            },
            schema=RAW_SCHEMAS["customers"],
        )
        start_at = pa.array(
            signup.astype("datetime64[us]") + rng.integers(0, _SECONDS_PER_DAY, size=n).astype("timedelta64[s]"),
            type=pa.timestamp("us"),
        )
        sub_parts.append(
            {"customer_id": new.customer_id, "event_type": np.zeros(n, np.int8), "event_at": start_at,
             "plan": new.plan, "price": new.price}
        )

        active = np.flatnonzero(pop.active)
        tenure = t - pop.signup_day[active]

        # 2. price rise on the drift day for everyone already subscribed
        if drift is not None and t == drift and cfg.price_rise > 0:
            old = active[pop.signup_day[active] < t]
            pop.price[old] = np.round(PLAN_PRICES[pop.plan[old]] * (1 + cfg.price_rise), 2)
            sub_parts.append(
                {"customer_id": pop.customer_id[old], "event_type": np.full(len(old), 2, np.int8),
                 "event_at": _timestamps(rng, day, len(old)), "plan": pop.plan[old], "price": pop.price[old]}
            )

        # 3. usage: Poisson sessions around a drifting engagement level
        weekday = day.weekday()
        day_factor = 0.75 if weekday >= 5 else 1.07
        declining = t >= pop.onset_day[active]
        pop.engagement[active] *= np.exp(
            rng.normal(0.0, 0.04, size=len(active)) - np.where(declining, pop.decline_rate[active], 0.0)
        )
        pop.engagement[active] = np.clip(pop.engagement[active], 0.02, 12.0)
        sessions = rng.poisson(pop.engagement[active] * day_factor)
        pop.ema7[active] += (sessions - pop.ema7[active]) * (2 / 8)
        pop.ema30[active] += (sessions - pop.ema30[active]) * (2 / 31)
        used = sessions > 0
        n_used = int(used.sum())
        minutes = np.round(sessions[used] * rng.gamma(2.0, 9.0, size=n_used), 1)
        tables["usage_events"] = pa.table(
            {
                "event_id": _ids(t, n_used),
                "customer_id": pop.customer_id[active][used],
                "usage_date": _date_col(day, n_used),
                "sessions": sessions[used].astype(np.int32),
                "minutes": minutes,
                "ingest_date": _date_col(day, n_used),
            },
            schema=RAW_SCHEMAS["usage_events"],
        )

        # 4. payments: a bill every 30 days from sign-up, with a retry 3 days after a failure
        due_first = (tenure > 0) & (tenure % BILLING_CYCLE_DAYS == 0)
        due_retry = pop.retry_day[active] == t
        due = due_first | due_retry
        payers = active[due]
        fail_p = np.clip(pop.payment_risk[payers] * np.where(due_retry[due], 2.5, 1.0), 0, 0.95)
        failed = rng.random(len(payers)) < fail_p
        pop.retry_day[payers] = np.where(failed & due_first[due], t + RETRY_AFTER_DAYS, -1)
        pop.fail_score[active] *= np.exp(-1 / 45)
        pop.fail_score[payers] += failed
        hard_fail = failed & due_retry[due]
        n_pay = len(payers)
        tables["payments"] = pa.table(
            {
                "payment_id": _ids(t, n_pay),
                "customer_id": pop.customer_id[payers],
                "attempted_at": _timestamps(rng, day, n_pay),
                "amount": pop.price[payers],
                "status": _strings(failed.astype(np.int8), ("succeeded", "failed")),
                "attempt": np.where(due_retry[due], 2, 1).astype(np.int16),
                "ingest_date": _date_col(day, n_pay),
            },
            schema=RAW_SCHEMAS["payments"],
        )

        # 5. support tickets, more likely after failed payments and while usage falls
        usage_drop = np.clip(1 - pop.ema7[active] / np.maximum(pop.ema30[active], 1e-3), -1, 1)
        ticket_p = pop.support_rate[active] * (1 + 3 * pop.fail_score[active] + 2 * np.maximum(usage_drop, 0))
        opened = rng.random(len(active)) < np.clip(ticket_p, 0, 0.5)
        pop.ticket_score[active] *= np.exp(-1 / 14)
        pop.ticket_score[active[opened]] += 1
        n_tix = int(opened.sum())
        billing_bias = np.clip(pop.fail_score[active[opened]], 0, 1)
        cat_draw = rng.random(n_tix)
        category = np.where(
            cat_draw < 0.2 + 0.5 * billing_bias, 0, np.where(cat_draw < 0.7 + 0.15 * billing_bias, 1, np.where(cat_draw < 0.93, 2, 3))
        ).astype(np.int8)
        priority = rng.choice(3, size=n_tix, p=[0.5, 0.4, 0.1]).astype(np.int8)
        tables["support_tickets"] = pa.table(
            {
                "ticket_id": _ids(t, n_tix),
                "customer_id": pop.customer_id[active[opened]],
                "opened_at": _timestamps(rng, day, n_tix),
                "category": _strings(category, TICKET_CATEGORIES),
                "priority": _strings(priority, PRIORITIES),
                "ingest_date": _date_col(day, n_tix),
            },
            schema=RAW_SCHEMAS["support_tickets"],
        )

        # 6. plan changes, rare; upgrades for the engaged and downgrades for the fading
        change = rng.random(len(active)) < 0.0015
        up = pop.engagement[active] > pop.ema30[active] * 0.9
        new_plan = np.clip(pop.plan[active] + np.where(up, 1, -1), 0, len(PLANS) - 1).astype(np.int8)
        changers = active[change & (new_plan != pop.plan[active])]
        pop.plan[changers] = new_plan[change & (new_plan != pop.plan[active])]
        after_drift = drift is not None and t >= drift
        pop.price[changers] = np.round(PLAN_PRICES[pop.plan[changers]] * (1 + (cfg.price_rise if after_drift else 0)), 2)
        sub_parts.append(
            {"customer_id": pop.customer_id[changers], "event_type": np.full(len(changers), 1, np.int8),
             "event_at": _timestamps(rng, day, len(changers)), "plan": pop.plan[changers],
             "price": pop.price[changers]}
        )

        # 7. churn: a latent daily hazard from behaviour; the drift sharpens the price response
        price_ratio = pop.price[active] / PLAN_PRICES[pop.plan[active]] - 1
        price_coef = 4.0 if after_drift else 2.0
        low_usage = np.clip(1 - pop.ema30[active] / 1.0, 0, 1)
        logit = (
            -6.3
            + 2.4 * np.maximum(usage_drop, 0)
            + 1.2 * low_usage
            + 1.3 * np.minimum(pop.fail_score[active], 3)
            + 0.45 * np.minimum(pop.ticket_score[active], 4)
            + price_coef * pop.price_sensitivity[active] * price_ratio
            - 0.25 * np.log1p(np.maximum(tenure, 0) / 30)
            - 0.15 * pop.plan[active]
        )
        hazard = 1 / (1 + np.exp(-logit))
        hazard = np.where(_hard_fail_mask(active, payers, hard_fail), np.maximum(hazard, 0.35), hazard)
        hazard = np.where(tenure <= 0, 0.0, hazard)
        churned = active[rng.random(len(active)) < hazard]
        pop.active[churned] = False
        sub_parts.append(
            {"customer_id": pop.customer_id[churned], "event_type": np.full(len(churned), 3, np.int8),
             "event_at": _timestamps(rng, day, len(churned)), "plan": pop.plan[churned],
             "price": pop.price[churned]}
        )
        if emit:
            tables["subscription_events"] = _subscription_table(sub_parts, t, day)
            yield day, tables


def _hard_fail_mask(active: np.ndarray, payers: np.ndarray, hard_fail: np.ndarray) -> np.ndarray:
    """Boolean mask over `active` of customers whose retry payment failed today (involuntary churn risk)."""
    mask = np.zeros(len(active), dtype=bool)
    if hard_fail.any():
        mask[np.searchsorted(active, payers[hard_fail])] = True
    return mask


def _subscription_table(parts: list[dict], t: int, day: date) -> pa.Table:
    customer_id = np.concatenate([p["customer_id"] for p in parts])
    n = len(customer_id)
    event_at = pa.concat_arrays([pa.array(p["event_at"], type=pa.timestamp("us")) for p in parts])
    return pa.table(
        {
            "event_id": _ids(t, n),
            "customer_id": customer_id,
            "event_type": _strings(np.concatenate([p["event_type"] for p in parts]), EVENT_TYPES),
            "event_at": event_at,
            "plan_code": _strings(np.concatenate([p["plan"] for p in parts]), PLANS),
            "monthly_price": np.concatenate([p["price"] for p in parts]).astype(np.float64),
            "ingest_date": _date_col(day, n),
        },
        schema=RAW_SCHEMAS["subscription_events"],
    )
