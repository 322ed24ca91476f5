"""The server demo end to end: PostgreSQL for the warehouse, the registry over S3 (moto's server), real Airflow runs.

`python -m ml demo --server` runs in its own process (Airflow reads its configuration once per process)
on a database and a bucket made for this module. The history ends on 2025-04-04, which is enough for the
drift event, one retrain request and the gate's decision on it; `make demo-server` runs the full window.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from datetime import date, timedelta
from typing import Iterator

import pytest

from ml.core.settings import PIPELINE_SCHEMAS, REPO_ROOT
from ml.tools.demo import DEMO_SIM, FIRST_TRAIN_AS_OF
from ml.tools.s3local import DUMMY_AWS_ENV, local_s3_server
from tests.fixtures import PG_ADMIN_DSN, create_database, drop_database

pytestmark = pytest.mark.postgres

UNTIL = date(2025, 4, 4)
DRIFT_DATE = date.fromisoformat(DEMO_SIM["drift_date"])
PREFIX = "registry"


def _s3(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name=DUMMY_AWS_ENV["AWS_DEFAULT_REGION"],
                        aws_access_key_id=DUMMY_AWS_ENV["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=DUMMY_AWS_ENV["AWS_SECRET_ACCESS_KEY"])


def _pg(database: str):
    import psycopg

    return psycopg.connect(f"{PG_ADMIN_DSN} dbname={database}", autocommit=True)  # the last dbname wins


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A fresh database holding leftovers of an earlier run, and a table of someone else's."""
    name = create_database("tidemark_demo_test")
    try:
        with _pg(name) as con:
            con.execute("create schema ml")
            con.execute("create table ml.predictions (stale integer)")
            con.execute("insert into ml.predictions values (1)")
            con.execute("create table public.not_the_demos as select 42 as answer")
        yield name
    finally:
        drop_database(name)


@pytest.fixture(scope="module")
def bucket(s3_server) -> str:
    """A fresh bucket holding a stale version under the demo's prefix and an object outside it."""
    name = f"tidemark-demo-{uuid.uuid4().hex[:10]}"
    s3 = _s3(s3_server)
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key=f"{PREFIX}/churn/versions/v0009/manifest.json", Body=b"{}")
    s3.put_object(Bucket=name, Key="elsewhere/keep.txt", Body=b"not the demo's")
    return name


@pytest.fixture(scope="module")
def run(tmp_path_factory, database, bucket, s3_server) -> dict:
    """Run the server demo in a child process; its summary.json."""
    home = tmp_path_factory.mktemp("demo-server-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "TIDEMARK_", "AWS_"))}
    env.update(DUMMY_AWS_ENV, TIDEMARK_HOME=str(home),
               TIDEMARK_WAREHOUSE_URL=f"postgresql://postgres@127.0.0.1:5432/{database}",
               TIDEMARK_REGISTRY_URI=f"s3://{bucket}/{PREFIX}", TIDEMARK_S3_ENDPOINT_URL=s3_server,
               DBT_SEND_ANONYMOUS_USAGE_STATS="false", DO_NOT_TRACK="1",
               AIRFLOW__COSMOS__ENABLE_TELEMETRY="False", SCARF_ANALYTICS="false")
    proc = subprocess.run([sys.executable, "-m", "ml", "demo", "--server", "--until", str(UNTIL)], cwd=REPO_ROOT,
                          env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=840)
    assert proc.returncode == 0, f"the server demo failed:\n{proc.stdout[-6000:]}"
    return {"summary": json.loads((home / "demo-server" / "summary.json").read_text()), "output": proc.stdout}


def test_it_says_what_it_reset_and_keeps_what_is_not_the_demos(run, database, bucket, s3_server):
    assert f"database '{database}' on 127.0.0.1:5432 is not the demo's own" in run["output"]
    assert "removed the 1 object(s) a previous run left under it" in run["output"]
    with _pg(database) as con:
        assert con.execute("select answer from public.not_the_demos").fetchall() == [(42,)]
        columns = [r[0] for r in con.execute("select column_name from information_schema.columns "
                                             "where table_schema = 'ml' and table_name = 'predictions'")]
    assert "stale" not in columns
    assert _s3(s3_server).get_object(Bucket=bucket, Key="elsewhere/keep.txt")["Body"].read() == b"not the demo's"


def test_drift_asks_for_a_retrain_and_the_gate_decides(run):
    summary = run["summary"]["models"]["churn"]
    first, retrain = summary["promotions"]
    assert (first["version"], first["date"], first["decision"], first["against"]) == \
        ("v0001", str(FIRST_TRAIN_AS_OF), "promoted", None)
    assert first["roc_auc"] > 0.62  # the spec's floor

    drifted = [date.fromisoformat(d) for d in summary["drift_detected_on"]]
    assert drifted and min(drifted) >= DRIFT_DATE  # nothing flagged before the price rise and new channel
    [request] = summary["retrain_requests"]
    asked = date.fromisoformat(request["date"])
    assert request["reason"] == "drift"
    assert asked in drifted and asked - timedelta(days=1) in drifted  # two drifted days in a row, not one

    assert (retrain["version"], retrain["date"], retrain["against"]) == ("v0002", str(asked), "v0001")
    assert retrain["decision"] in ("promoted", "rejected")
    assert None not in retrain["gain_ci"] and retrain["gain_ci"][0] <= retrain["gain_ci"][1]
    assert any(r.startswith(("pass:", "FAIL:")) for r in retrain["reasons"])
    expected = ["v0001"] + (["v0002"] if retrain["decision"] == "promoted" else [])
    assert [e["version"] for e in summary["champion_history"]] == expected
    # The week holding the request was scored before monitoring asked, so v0001 scored every day.
    assert {r["model_version"] for r in summary["timeline"]} == {"v0001"}


def test_the_payment_default_model_is_trained_gated_scored_and_watched_beside_churn(run):
    models = run["summary"]["models"]
    assert list(models) == ["churn", "payment_default"]
    found = models["payment_default"]
    first = found["promotions"][0]
    assert (first["version"], first["date"], first["against"]) == ("v0001", str(FIRST_TRAIN_AS_OF), None)
    assert first["reasons"] and first["test_metrics"]["roc_auc"] is not None
    if first["decision"] == "promoted":  # then its champion scored and was watched every day, as churn's was
        days = (UNTIL - FIRST_TRAIN_AS_OF).days
        assert len(found["timeline"]) == days and found["prediction_rows"] > 1_000 * days
        assert all(r["drift_share"] is not None for r in found["timeline"])


def test_every_active_customer_is_scored_into_postgres(run, database):
    summary = run["summary"]["models"]["churn"]
    days = (UNTIL - FIRST_TRAIN_AS_OF).days
    assert run["summary"]["warehouse"] == f"postgresql://postgres@127.0.0.1:5432/{database}"
    assert len(summary["timeline"]) == days
    churn = "model_name = 'churn'"
    with _pg(database) as con:
        scored = dict(con.execute(f"select as_of_date, count(*) from ml.predictions where {churn} "
                                  "group by 1").fetchall())
        active = dict(con.execute("select as_of_date, count(*) from marts.customer_features_daily "
                                  "where as_of_date > %s group by 1", (FIRST_TRAIN_AS_OF,)).fetchall())
        counts = {t: con.execute(f"select count(*) from ml.{t} where {churn}").fetchone()[0]
                  for t in ("drift_metrics", "retrain_requests", "model_promotions")}
        dataset_rows = con.execute(f"select count(*) from ml.drift_metrics where {churn} "
                                   "and column_name = '__dataset__'").fetchone()[0]
        schemas = {r[0] for r in con.execute("select schema_name from information_schema.schemata")}
    assert scored == active and len(scored) == days
    assert sum(scored.values()) == summary["prediction_rows"] > 1_000 * days
    assert dataset_rows == days and counts["drift_metrics"] > days
    assert counts["retrain_requests"] == 1 and counts["model_promotions"] == 2
    assert set(PIPELINE_SCHEMAS) <= schemas


def test_the_registry_lives_in_the_bucket(run, bucket, s3_server):
    summary = run["summary"]
    assert summary["registry"] == f"s3://{bucket}/{PREFIX}" and summary["s3_endpoint"] == s3_server
    keys = [o["Key"] for page in _s3(s3_server).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIX)
            for o in page.get("Contents", [])]
    manifests = sorted(k.split("/")[3] for k in keys if k.endswith("/manifest.json") and "/churn/versions/" in k)
    assert manifests == ["v0001", "v0002"]  # the stale v0009 was cleared
    assert f"{PREFIX}/churn/aliases/champion.json" in keys
    reports = {k.split("/")[3] for k in keys if k.startswith(f"{PREFIX}/monitoring/churn/") and k.endswith(".html")}
    assert reports == {r["as_of_date"] for r in summary["models"]["churn"]["timeline"]}


def test_local_s3_server_serves_until_the_block_ends():
    with local_s3_server("scratch") as endpoint:
        s3 = _s3(endpoint)
        s3.put_object(Bucket="scratch", Key="a/b.txt", Body=b"hello")
        assert s3.get_object(Bucket="scratch", Key="a/b.txt")["Body"].read() == b"hello"
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(endpoint, timeout=2)
