"""The simulated world a warehouse holds, and the simulated clock that moves it forward.

A warehouse holds one simulated world. Its parameters (seed, customers, first day and drift day) are
recorded in `ml.simulated_world` by the first load, and every later load must ask for the same ones or
none. The bootstrap lands the world's history, and once a first champion exists it
starts the clock: from then on each scheduled `ingest_raw` run loads the day after the loaded watermark,
never a day read off the wall clock.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Mapping

from ml.core.errors import NothingToDo, TidemarkError
from ml.core.settings import PIPELINE_SCHEMAS, Settings, redacted_url
from ml.orchestration.intervals import interval_days, parse_day, requested_interval

if TYPE_CHECKING:
    from ml.core.warehouse import Warehouse
    from ml.ingest.simulate import SimConfig

# The parameters of a world (the simulator's rates are code, not parameters).
WORLD_PARAMS = ("seed", "customers", "sim_start", "drift_date")
# The day the bootstrap's history ends and its first champion is trained as of (a week before the drift).
DEFAULT_HISTORY_END = date(2025, 3, 14)


class WorldMismatch(TidemarkError, ValueError):
    """A load asked for another simulated world than the one its warehouse holds."""


@dataclass(frozen=True)
class World:
    """The parameters of one simulated history; the same world always gives the same rows."""

    seed: int = 7
    customers: int = 2_000
    sim_start: date = date(2024, 8, 1)
    drift_date: date | None = date(2025, 3, 20)

    def with_params(self, params: Mapping[str, Any]) -> "World":
        """This world with the parameters `params` gives (None or absent: keep this world's value)."""
        given = asked(params)
        changes: dict[str, Any] = {}
        if "seed" in given:
            changes["seed"] = int(given["seed"])
        if "customers" in given:
            changes["customers"] = int(given["customers"])
        if "sim_start" in given:
            changes["sim_start"] = parse_day(given["sim_start"], "param sim_start")
        if "drift_date" in given:
            drift = given["drift_date"]
            changes["drift_date"] = None if str(drift).lower() == "none" else parse_day(drift, "param drift_date")
        return replace(self, **changes)

    def config(self, through: date) -> "SimConfig":
        """The simulator config of this world, long enough to reach `through`."""
        from ml.ingest.simulate import SimConfig

        if through < self.sim_start:
            raise WorldMismatch(f"{through} is before this world's first day {self.sim_start}")
        return SimConfig(seed=self.seed, customers=self.customers, start=self.sim_start,
                         days=(through - self.sim_start).days + 1, drift_date=self.drift_date)

    def params(self) -> dict[str, Any]:
        """The loadable parameters as JSON values (what Airflow Params and dag_run.conf carry)."""
        return {"seed": self.seed, "customers": self.customers, "sim_start": self.sim_start.isoformat(),
                "drift_date": self.drift_date.isoformat() if self.drift_date else None}

    def describe(self) -> str:
        return "{" + ", ".join(f"{k}={v}" for k, v in self.params().items()) + "}"


DEFAULT_WORLD = World()


def asked(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The world parameters that `params` sets: the known keys whose value is not None or empty."""
    return {k: v for k, v in (params or {}).items() if k in WORLD_PARAMS and v not in (None, "")}


@dataclass(frozen=True)
class Record:
    """The world a warehouse holds, when it was recorded, and when its clock started (None: not yet)."""

    world: World
    recorded_at: datetime
    clock_started_at: datetime | None


# -- the warehouse's record -----------------------------------------------------------------------
def read_record(settings: Settings) -> Record | None:
    """The recorded world; None when nothing has been loaded through it."""
    from ml.core.warehouse import Warehouse
    from ml.orchestration.watermarks import has_warehouse

    if not has_warehouse(settings):
        return None
    with Warehouse.connect(settings, read_only=True) as wh:
        return _read(wh)


def _read(wh) -> Record | None:
    import sqlalchemy as sa

    from ml.core.tables import simulated_world

    if not wh.table_exists(simulated_world.fullname):
        return None
    rows = wh.rows(sa.select(simulated_world))
    if not rows:
        return None
    row = rows[0]
    names = {f.name for f in fields(World)}
    values = {k: v for k, v in row.items() if k in names}
    values["sim_start"] = parse_day(values["sim_start"], "the recorded sim_start")
    if values["drift_date"] is not None:
        values["drift_date"] = parse_day(values["drift_date"], "the recorded drift_date")
    return Record(World(**values), row["recorded_at"], row["clock_started_at"])


def fix_world(settings: Settings, params: Mapping[str, Any] | None) -> World:
    """The warehouse's world: recorded from `params` (over DEFAULT_WORLD) at the first load; afterwards
    `params` may only repeat it, else WorldMismatch names both worlds and how to start over."""
    import sqlalchemy as sa

    from ml.core.tables import simulated_world
    from ml.core.warehouse import Warehouse

    with Warehouse.connect(settings) as wh:
        wh.ensure_table(simulated_world.fullname)
        with wh.transaction():
            found = _read(wh)
            if found is None:
                world = DEFAULT_WORLD.with_params(params or {})
                wh.execute(sa.insert(simulated_world).values(**asdict(world), recorded_at=_now(),
                                                             clock_started_at=None))
                return world
    wanted = found.world.with_params(params or {})
    if wanted != found.world:
        differ = [k for k in WORLD_PARAMS if getattr(wanted, k) != getattr(found.world, k)]
        raise WorldMismatch(
            f"this warehouse holds the simulated world {found.world.describe()} (recorded "
            f"{found.recorded_at:%Y-%m-%d %H:%M} UTC), and this load asks for {wanted.describe()}: "
            f"{', '.join(differ)} differ. A warehouse holds one world: leave those parameters out to load "
            f"more of it, or start over in an empty warehouse ({_start_over(settings)})."
        )
    return found.world


def start_clock(settings: Settings) -> Record:
    """Start the simulated clock (once); the record afterwards."""
    from ml.core.warehouse import Warehouse

    found = read_record(settings)
    if found is None:
        raise WorldMismatch("this warehouse holds no simulated world, so there is no clock to start; "
                            "land the history first (the bootstrap DAG)")
    if found.clock_started_at is None:
        with Warehouse.connect(settings) as wh:
            _stamp_clock(wh, found)
        found = read_record(settings)
    return found


def _stamp_clock(wh: "Warehouse", found: Record) -> None:
    """Set the record's clock_started_at to now: an UPDATE, or on Spark, whose Parquet tables take no UPDATE,
    the one row written anew."""
    import pyarrow as pa
    import sqlalchemy as sa

    from ml.core.tables import arrow_schema, simulated_world

    if wh.kind != "spark":
        wh.execute(sa.update(simulated_world).values(clock_started_at=_now()))
        return
    row = {**asdict(found.world), "recorded_at": found.recorded_at, "clock_started_at": _now()}
    wh.replace_table(simulated_world.fullname, pa.Table.from_pylist([row], schema=arrow_schema(simulated_world)))


# -- what the DAGs run ----------------------------------------------------------------------------
def next_day(settings: Settings) -> date:
    """The day the clock loads next: the day after the loaded watermark. NothingToDo until the bootstrap has
    started the clock."""
    from ml.orchestration.watermarks import landed_span, loaded_days

    found = read_record(settings)
    if found is None:
        raise NothingToDo("this warehouse holds no simulated world yet, so the clock has nothing to load: the "
                          "bootstrap DAG lands its history and starts the clock (`python -m ml airflow bootstrap`)")
    if found.clock_started_at is None:
        raise NothingToDo("the simulated clock has not started: the bootstrap DAG starts it once its first "
                          "champion is trained")
    landed = landed_span(loaded_days(settings))
    return (landed.watermark if landed else found.world.sim_start - timedelta(days=1)) + timedelta(days=1)


def land(settings: Settings, params: Mapping[str, Any] | None, interval: Mapping[str, str]) -> dict:
    """Replace the raw partitions of every day in `interval` with the warehouse's world; rows per table."""
    from ml.ingest.load import load_days

    world = fix_world(settings, params)
    days = interval_days(interval)
    if days[0] < world.sim_start:
        raise WorldMismatch(f"the interval starts {days[0]}, before the simulated world starts ({world.sim_start})")
    report = load_days(world.config(days[-1]), set(days), settings=settings)
    return {"start": interval["start"], "end": interval["end"], "days": len(report.days), "rows": report.rows,
            "world": world.params()}


def ingest_run(settings: Settings, params: Mapping[str, Any] | None, conf: Mapping[str, Any] | None) -> dict:
    """One ingest_raw run: the days dag_run.conf names, else the clock's next day (NothingToDo while it is not
    running)."""
    interval = requested_interval(conf, None)
    if interval is None:
        day = next_day(settings).isoformat()
        interval = {"start": day, "end": day}
    return land(settings, params, interval)


def land_history(settings: Settings, params: Mapping[str, Any] | None) -> dict:
    """The bootstrap's first step: record the world and land sim_start..history_end. NothingToDo once the clock
    runs (the bootstrap finished before)."""
    found = read_record(settings)
    if found is not None and found.clock_started_at is not None:
        raise NothingToDo(f"this warehouse was bootstrapped already: its clock started "
                          f"{found.clock_started_at:%Y-%m-%d %H:%M} UTC with the world {found.world.describe()}")
    world = (found.world if found else DEFAULT_WORLD).with_params(params or {})
    end = parse_day((params or {}).get("history_end") or DEFAULT_HISTORY_END, "param history_end")
    return land(settings, params, {"start": world.sim_start.isoformat(), "end": end.isoformat()})


def _start_over(settings: Settings) -> str:
    if settings.warehouse.kind == "duckdb":
        where = f"remove {settings.warehouse.path}"
    elif settings.warehouse.kind == "spark":
        where = (f"drop the schemas {', '.join(PIPELINE_SCHEMAS)} in Spark's catalog "
                 f"(or remove {settings.warehouse.spark_dir})")
    else:
        where = f"drop the schemas {', '.join(PIPELINE_SCHEMAS)} in {redacted_url(settings.warehouse.url)}"
    return (f"`make airflow-stop`, {where} and the registry at {settings.registry_uri}, or set TIDEMARK_HOME to a "
            f"new folder; then `make airflow`")


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)
