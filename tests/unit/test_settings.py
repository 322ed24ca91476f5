from pathlib import Path

import pytest

from ml.core.settings import (
    REPO_ROOT,
    WAREHOUSE_CONN_ID,
    WAREHOUSE_CONN_VARIABLE,
    Settings,
    SettingsError,
    parse_warehouse_url,
)


def test_defaults_live_under_the_repo_var_folder():
    s = Settings.from_env({})
    assert s.home == REPO_ROOT / "var"
    assert s.warehouse.kind == "duckdb"
    assert s.warehouse.path == REPO_ROOT / "var" / "warehouse.duckdb"
    assert s.airflow_home == REPO_ROOT / "var" / "airflow"


def test_relative_duckdb_path_is_relative_to_the_repo_and_four_slashes_is_absolute():
    assert parse_warehouse_url("duckdb:///var/x.duckdb").path == REPO_ROOT / "var" / "x.duckdb"
    assert parse_warehouse_url("duckdb:////tmp/x.duckdb").path == Path("/tmp/x.duckdb")


def test_postgres_url_is_split_into_libpq_parts():
    wh = parse_warehouse_url("postgresql://ana:s%40cret@db.example:6543/sales")
    assert (wh.kind, wh.host, wh.port, wh.user, wh.password, wh.database) == (
        "postgres", "db.example", 6543, "ana", "s@cret", "sales",
    )
    assert "dbname=sales" in wh.dsn()


@pytest.mark.parametrize(
    "url", ["sqlite:///x.db", "duckdb:///", "postgresql://localhost", "postgresql://h:notaport/db", "warehouse"]
)
def test_bad_url_names_the_variable_and_shows_an_example(url):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"TIDEMARK_WAREHOUSE_URL": url})
    message = str(err.value)
    assert "TIDEMARK_WAREHOUSE_URL" in message
    assert "postgresql://postgres@127.0.0.1:5432/tidemark" in message


def test_settings_are_frozen():
    s = Settings.from_env({})
    with pytest.raises(AttributeError):
        s.home = Path("/elsewhere")


def test_dbt_env_carries_the_target_and_turns_off_telemetry(tmp_path):
    duck = Settings.from_env({"TIDEMARK_HOME": str(tmp_path)}).dbt_env()
    assert duck["TIDEMARK_DBT_TARGET"] == "duckdb"
    assert duck["TIDEMARK_DUCKDB_PATH"] == str(tmp_path / "warehouse.duckdb")
    assert duck["DBT_SEND_ANONYMOUS_USAGE_STATS"] == "false"
    pg = Settings.from_env({"TIDEMARK_WAREHOUSE_URL": "postgresql://postgres@127.0.0.1:5432/w"}).dbt_env()
    assert (pg["TIDEMARK_DBT_TARGET"], pg["TIDEMARK_PG_DATABASE"], pg["TIDEMARK_PG_PORT"]) == ("postgres", "w", "5432")


def test_airflow_state_stays_under_tidemark_home(tmp_path):
    env = Settings.from_env({"TIDEMARK_HOME": str(tmp_path)}).airflow_env()
    assert env["AIRFLOW_HOME"].startswith(str(tmp_path))
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path / 'airflow' / 'airflow.db'}"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(REPO_ROOT / "dags")


def test_redacted_url_hides_only_the_password():
    from ml.core.settings import redacted_url

    assert redacted_url("postgresql://u:s3cret@db:5432/wh") == "postgresql://u:***@db:5432/wh"
    assert redacted_url("postgresql+psycopg2://u:s3cret@db/af") == "postgresql+psycopg2://u:***@db/af"
    assert redacted_url("postgresql://postgres@127.0.0.1:5432/wh") == "postgresql://postgres@127.0.0.1:5432/wh"
    assert redacted_url("duckdb:////tmp/w.duckdb") == "duckdb:////tmp/w.duckdb"
    assert redacted_url("spark://local[2]") == "spark://local[2]"  # the demo's summary on Spark
    assert redacted_url("spark://spark-head:7077") == "spark://spark-head:7077"


def test_dbt_env_without_secrets_leaves_out_only_the_password():
    pg = Settings.from_env({"TIDEMARK_WAREHOUSE_URL": "postgresql://u:pa%3Ass@db:5433/w"})
    full, public = pg.dbt_env(), pg.dbt_env(secrets=False)
    assert full["TIDEMARK_PG_PASSWORD"] == "pa:ss"
    assert "TIDEMARK_PG_PASSWORD" not in public
    assert {k: v for k, v in full.items() if k != "TIDEMARK_PG_PASSWORD"} == public


def test_airflow_env_defines_the_warehouse_connection_that_airflow_reads(monkeypatch):
    from airflow.sdk import BaseHook

    assert WAREHOUSE_CONN_VARIABLE not in Settings.from_env({}).airflow_env()  # DuckDB: dbt reads profiles.yml
    pg = Settings.from_env({"TIDEMARK_WAREHOUSE_URL": "postgresql://ana:p%40ss%3Aw%2Frd@db.example:6543/sales"})
    monkeypatch.setenv(WAREHOUSE_CONN_VARIABLE, pg.airflow_env()[WAREHOUSE_CONN_VARIABLE])
    conn = BaseHook.get_connection(WAREHOUSE_CONN_ID)
    assert (conn.conn_type, conn.host, conn.port, conn.login, conn.password, conn.schema) == (
        "postgres", "db.example", 6543, "ana", "p@ss:w/rd", "sales",
    )


def test_duckdb_memory_and_spill_settings_reach_dbt_and_default_to_duckdbs_own():
    default = Settings.from_env({})
    assert default.warehouse.duckdb_config == {
        "memory_limit": "80%", "temp_directory": str(REPO_ROOT / "var" / "warehouse.duckdb.tmp")}
    capped = Settings.from_env({"TIDEMARK_DUCKDB_MEMORY_LIMIT": "6GB", "TIDEMARK_DUCKDB_TEMP_DIR": "/scratch/spill"})
    assert capped.warehouse.duckdb_config == {"memory_limit": "6GB", "temp_directory": "/scratch/spill"}
    env = capped.dbt_env()
    assert (env["TIDEMARK_DUCKDB_MEMORY_LIMIT"], env["TIDEMARK_DUCKDB_TEMP_DIR"]) == ("6GB", "/scratch/spill")


@pytest.mark.parametrize("value", ["lots", "6", "-1GB", "6 parsecs"])
def test_a_memory_limit_that_is_not_a_size_names_the_variable_and_examples(value):
    with pytest.raises(SettingsError, match=r"TIDEMARK_DUCKDB_MEMORY_LIMIT=.*e\.g\. 6GB, 512MB or 80%"):
        Settings.from_env({"TIDEMARK_DUCKDB_MEMORY_LIMIT": value})


def test_postgresql_sessions_of_dbt_and_ml_run_without_jit():
    s = Settings.from_env({"TIDEMARK_WAREHOUSE_URL": "postgresql://ana@db.example:5432/sales"})
    assert "options='-c jit=off'" in s.warehouse.dsn()
    assert s.dbt_env()["PGOPTIONS"] == "-c jit=off"


def test_spark_urls_give_a_local_master_or_a_standalone_one_and_the_catalog_under_home(tmp_path):
    local = Settings.from_env({"TIDEMARK_HOME": str(tmp_path), "TIDEMARK_WAREHOUSE_URL": "spark://local[2]"})
    assert (local.warehouse.kind, local.warehouse.master) == ("spark", "local[2]")
    assert local.warehouse.spark_dir == tmp_path / "spark"
    cluster = Settings.from_env({"TIDEMARK_HOME": str(tmp_path), "TIDEMARK_WAREHOUSE_URL": "spark://spark-head",
                                 "TIDEMARK_SPARK_CONF": "spark.executor.memory=4g, spark.sql.shuffle.partitions=64"})
    assert cluster.warehouse.master == "spark://spark-head:7077"
    assert cluster.warehouse.spark_conf == (("spark.executor.memory", "4g"), ("spark.sql.shuffle.partitions", "64"))
    assert cluster.airflow_env()["TIDEMARK_SPARK_DIR"] == str(tmp_path / "spark")


@pytest.mark.parametrize("url", ["spark://locl[2]", "spark://local[x]", "spark://host:99999", "spark://host:7077/db"])
def test_a_bad_spark_url_names_the_variable_and_the_two_forms(url):
    with pytest.raises(SettingsError) as caught:
        parse_warehouse_url(url)
    message = str(caught.value)
    assert "TIDEMARK_WAREHOUSE_URL" in message and "spark://local[2]" in message and "spark://host:7077" in message


def test_a_spark_setting_that_is_not_key_value_names_the_variable(tmp_path):
    with pytest.raises(SettingsError, match="TIDEMARK_SPARK_CONF"):
        Settings.from_env({"TIDEMARK_HOME": str(tmp_path), "TIDEMARK_WAREHOUSE_URL": "spark://local[2]",
                           "TIDEMARK_SPARK_CONF": "executor.memory"})


def test_dbt_and_tidemark_start_spark_with_one_conf_the_users_pairs_last(tmp_path):
    from ml.core.spark import settings_of, write_conf

    s = Settings.from_env({"TIDEMARK_HOME": str(tmp_path), "TIDEMARK_WAREHOUSE_URL": "spark://local[2]",
                           "TIDEMARK_SPARK_CONF": "spark.driver.memory=6g"})
    conf = settings_of(s.warehouse)
    # A partition filter that the embedded Derby metastore fails is pruned by Spark instead of failing the query.
    assert conf["spark.sql.hive.metastorePartitionPruningFallbackOnException"] == "true"
    assert conf["spark.driver.memory"] == "6g"
    written = (write_conf(s.warehouse) / "spark-defaults.conf").read_text().splitlines()
    assert written == [f"{key} {value}" for key, value in conf.items()]
