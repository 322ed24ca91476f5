"""`python -m ml`: the registry commands, one short message for a user's error, and `score` and `monitor`
running the steps of the score_batch and monitor_model DAGs on the scoring tests' trained world."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date

import pytest
from typer.testing import CliRunner

import ml.monitoring.steps
import ml.scoring.score
from ml.cli import app
from ml.core.settings import REPO_ROOT
from ml.core.warehouse import Warehouse
from ml.monitoring.drift import DATASET_ROW
from ml.registry import Registry
from tests.integration.test_scoring import world  # noqa: F401  (simulated, features built, a champion trained)


@pytest.fixture
def registry_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path))
    monkeypatch.delenv("TIDEMARK_REGISTRY_URI", raising=False)
    monkeypatch.setenv("TIDEMARK_ACTOR", "ops:alice")
    registry = Registry.from_uri((tmp_path / "registry").as_uri())
    for auc in (0.71, 0.74, 0.73):
        source = tmp_path / f"src-{auc}"
        source.mkdir()
        (source / "model.json").write_text(json.dumps({"kind": "logistic", "auc": auc}))
        version = registry.publish("churn", source, {"candidate": "logistic", "metrics": {"roc_auc": auc}, "as_of": "2025-03-01"})
        registry.promote("churn", version.version, actor="train_model", reason=f"gate passed at {auc}")
    return registry


def test_list_show_rollback_and_promote_from_the_command_line(registry_env):
    runner = CliRunner()
    listed = runner.invoke(app, ["registry", "list", "churn"])
    assert listed.exit_code == 0, listed.output
    assert "v0001" in listed.output and "0.7400" in listed.output and "champion" in listed.output

    shown = runner.invoke(app, ["registry", "show", "churn"])
    assert shown.exit_code == 0, shown.output
    manifest = json.loads(shown.stdout)
    assert manifest["version"] == "v0003" and "sha256" in json.dumps(manifest["files"])

    rolled = runner.invoke(app, ["registry", "rollback", "churn", "--reason", "v0003 misbehaves in production"])
    assert rolled.exit_code == 0, rolled.output
    assert "champion -> v0002" in rolled.output
    assert registry_env.alias("churn").version == "v0002"
    last = registry_env.alias("churn").history[-1]
    assert (last["action"], last["from"], last["to"], last["actor"]) == ("rollback", "v0003", "v0002", "ops:alice")
    assert last["reason"] == "v0003 misbehaves in production"

    promoted = runner.invoke(app, ["registry", "promote", "churn", "v0003", "--reason", "fixed upstream"])
    assert promoted.exit_code == 0, promoted.output
    assert registry_env.alias("churn").version == "v0003"

    history = runner.invoke(app, ["registry", "show", "churn", "--history"])
    assert [e["to"] for e in json.loads(history.stdout)] == ["v0001", "v0002", "v0003", "v0002", "v0003"]


def test_promoting_a_version_that_does_not_exist_is_refused_and_changes_nothing(registry_env):
    result = CliRunner().invoke(app, ["registry", "promote", "churn", "v0009", "--reason", "typo"])
    assert result.exit_code == 2
    assert "v0009" in result.output
    assert registry_env.alias("churn").version == "v0003"


@pytest.fixture
def gated_registry(tmp_path, monkeypatch):
    """A registry holding v0001, promoted by the gate, and v0002, rejected by it."""
    from ml.registry import promotion

    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path))
    monkeypatch.delenv("TIDEMARK_REGISTRY_URI", raising=False)
    registry = Registry.from_uri((tmp_path / "registry").as_uri())
    gates = (("promoted", ["no champion yet: the first model is promoted", "pass: roc_auc 0.7400 >= floor 0.7000"]),
             ("rejected", ["pass: scores span 0.02..0.97", "FAIL: roc_auc 0.6900 < floor 0.7000",
                           "FAIL: ece 0.0900 > 0.0500"]))
    for i, (verdict, reasons) in enumerate(gates):
        source = tmp_path / f"src-{i}"
        source.mkdir()
        (source / "model.json").write_text(json.dumps({"kind": "logistic", "i": i}))
        version = registry.publish("churn", source, {"candidate": "logistic", "metrics": {"roc_auc": 0.74 - i / 20}})
        before, promote = registry.alias("churn").version, verdict == "promoted"
        decision = {"decision": verdict, "reasons": reasons, "champion_before": before,
                    "champion_after": version.version if promote else before}
        promotion.begin(registry, "churn", version.version, decision, promote=promote, expected=before,
                        actor="train_model", reason="gate", row={})
        promotion.finish(registry, "churn", version.version, lambda row: None)
    return registry


def test_list_shows_each_versions_gate_decision_and_first_failing_reason(gated_registry):
    listed = CliRunner().invoke(app, ["registry", "list", "churn"])
    assert listed.exit_code == 0, listed.output
    assert "gate decisions of churn" in listed.output
    promoted, rejected = _line_with(listed.output, "│ v0001 "), _line_with(listed.output, "│ v0002 ")
    assert "promoted" in promoted and "FAIL" not in promoted and "roc_auc" not in promoted
    assert "rejected" in rejected and "roc_auc 0.6900 < floor 0.7000" in rejected and "ece" not in rejected
    assert gated_registry.alias("churn").version == "v0001"


def test_list_says_when_no_decision_was_recorded(registry_env):
    listed = CliRunner().invoke(app, ["registry", "list", "churn"])
    assert listed.exit_code == 0, listed.output
    assert "none recorded" in _line_with(listed.output, "│ v0003 ")


def test_train_names_the_challenger_and_marks_its_row(empty_home, monkeypatch):
    import ml.training.steps

    def board(candidate: str, val: float) -> dict:
        test = {"roc_auc": val - 0.01, "pr_auc": 0.5, "brier": 0.1, "ece": 0.02}
        return {"candidate": candidate, "device": "cpu", "fit_seconds": 1.5, "validation": {"roc_auc": val},
                "test": test}

    leaderboard = [board("lightgbm", 0.8123), board("logistic", 0.7911)]
    outcome = {"version": "v0001", "decision": "promoted", "champion_before": None, "champion_after": "v0001",
               "reasons": ["pass: roc_auc 0.8023 >= floor 0.7000"]}
    monkeypatch.setattr(ml.training.steps, "train", lambda *args, **kwargs: {
        "evaluation": {"leaderboard": leaderboard, "challenger": leaderboard[0]}, "outcome": outcome})
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["train", "--spec", "churn"])
    assert result.exit_code == 0, result.output
    assert "challenger: lightgbm (best validation roc_auc 0.8123)" in result.output
    assert "│ lightgbm * " in _line_with(result.output, "│ lightgbm")
    assert "│ logistic " in _line_with(result.output, "│ logistic") and "*" not in _line_with(result.output, "0.7911")
    assert "* the challenger: best validation roc_auc" in result.output


# -- errors ---------------------------------------------------------------------------------------
@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    """TIDEMARK_* pointing at an empty home: no warehouse tables, no registry versions."""
    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path))
    for name in ("TIDEMARK_WAREHOUSE_URL", "TIDEMARK_REGISTRY_URI", "TIDEMARK_MODEL_SPEC"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.mark.parametrize("args, message", [
    (["score", "--spec", "nosuch", "--date", "2025-03-01"], "error: model spec 'nosuch' not found"),
    (["registry", "show", "nosuch"], "error: model 'nosuch' has no champion in the registry"),
    (["monitor", "--date", "2025-03-01"], "error: 'churn' has no champion to monitor"),
])
def test_a_user_error_is_one_line_on_stderr_and_exit_code_2(empty_home, args, message):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert result.stdout == ""


def test_a_bad_date_is_a_usage_error_naming_the_option(empty_home):
    result = CliRunner().invoke(app, ["monitor", "--start", "2025-03-01", "--end", "2025-13-01"])
    assert result.exit_code == 2
    shown = " ".join(result.stderr.replace("│", " ").split())
    assert "Invalid value for --end: '2025-13-01' is not a date; use YYYY-MM-DD" in shown
    both = CliRunner().invoke(app, ["score", "--date", "2025-03-01", "--start", "2025-03-01"])
    assert both.exit_code == 2 and "not both" in both.stderr


def test_debug_shows_the_traceback_of_a_user_error(empty_home):
    env = {**os.environ, "TIDEMARK_HOME": str(empty_home)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ml", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                              text=True, timeout=120)

    quiet = run("registry", "show", "nosuch")
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    assert quiet.stderr.startswith("error: model 'nosuch' has no champion"), quiet.stderr
    loud = run("--debug", "registry", "show", "nosuch")
    assert loud.returncode == 1
    assert "Traceback" in loud.stderr and "NoChampion" in loud.stderr and "champion_version" in loud.stderr


def test_an_unexpected_exception_is_not_dressed_up_as_a_user_error(empty_home, monkeypatch):
    import ml.registry.champion

    def broken(settings, model):
        raise KeyError("a defect")

    monkeypatch.setattr(ml.registry.champion, "champion_version", broken)
    result = CliRunner().invoke(app, ["registry", "show", "churn"])
    assert isinstance(result.exception, KeyError) and result.exit_code == 1
    assert "error:" not in result.output


# -- score and monitor on a trained world ---------------------------------------------------------
SCORED = (date(2025, 2, 24), date(2025, 3, 10))  # the monitored day and the day one 14-day horizon before it


@pytest.fixture
def world_env(request, monkeypatch):
    """The command line pointed at the scoring tests' world; `returned` records what score/monitor functions give."""
    trained = request.getfixturevalue("world")
    settings = trained["settings"]
    for key, value in {"TIDEMARK_HOME": str(settings.home), "TIDEMARK_WAREHOUSE_URL": settings.warehouse.url,
                       "TIDEMARK_REGISTRY_URI": settings.registry_uri}.items():
        monkeypatch.setenv(key, value)
    returned = {}
    for module, name in ((ml.scoring.score, "score_days"), (ml.monitoring.steps, "monitor_days")):
        def recording(*args, _real=getattr(module, name), _name=name, **kwargs):
            returned[_name] = _real(*args, **kwargs)
            return returned[_name]
        monkeypatch.setattr(module, name, recording)
    return {**trained, "returned": returned}


def _line_with(output: str, text: str) -> str:
    """The last line of `output` that holds `text`: a summary table's row, printed after the progress log."""
    return [line for line in output.splitlines() if text in line][-1]


def _rows(settings, sql: str) -> list[dict]:
    with Warehouse.connect(settings, read_only=True) as wh:
        return wh.read_arrow(sql).to_pylist()


def test_score_runs_the_score_batch_steps_and_prints_the_version_and_rows(world_env):
    settings = world_env["settings"]
    result = CliRunner().invoke(app, ["score", "--spec", str(world_env["spec_path"]),
                                      "--start", SCORED[0].isoformat(), "--end", SCORED[1].isoformat()])
    assert result.exit_code == 0, result.output
    published = world_env["returned"]["score_days"]
    assert published["version"] == "v0001" and len(published["rows"]) == (SCORED[1] - SCORED[0]).days + 1
    assert "shard 0/2: " in result.output and "shard 1/2: " in result.output
    stored = {str(r["day"]): r for r in _rows(settings, "select as_of_date as day, count(*) as n, "
                                                       "min(model_version) as lo, max(model_version) as hi "
                                                       "from ml.predictions group by as_of_date")}
    for day, rows in published["rows"].items():
        assert rows > 300 and (stored[day]["n"], stored[day]["lo"], stored[day]["hi"]) == (rows, "v0001", "v0001")
        line = _line_with(result.output, f" {day} ")
        assert f"{rows:,}" in line and "v0001" in line, line
    assert f"{sum(published['rows'].values()):,} rows of churn v0001 published" in result.output
    mart = _rows(settings, "select count(*) as n from marts.customer_churn_scores_latest")[0]["n"]
    customers = _rows(settings, "select count(distinct entity_id) as n from ml.predictions")[0]["n"]
    assert mart == customers > 300


def test_monitor_runs_the_monitor_model_steps_and_prints_drift_and_realized_metrics(world_env):
    settings, day = world_env["settings"], SCORED[1].isoformat()
    scored = CliRunner().invoke(app, ["score", "--spec", str(world_env["spec_path"]), "--start",
                                      SCORED[0].isoformat(), "--end", day, "--no-mart"])
    assert scored.exit_code == 0 and "scores mart left as it was (--no-mart)" in scored.output, scored.output
    result = CliRunner().invoke(app, ["monitor", "--spec", str(world_env["spec_path"]), "--date", day])
    assert result.exit_code == 0, result.output
    watched = world_env["returned"]["monitor_days"]
    assert watched["version"] == "v0001" and [d["as_of_date"] for d in watched["drift"]] == [day]
    drift = watched["drift"][0]
    stored = _rows(settings, f"select model_version, drift_share from ml.drift_metrics where as_of_date = "
                             f"date '{day}' and column_name = '{DATASET_ROW}'")
    assert stored == [{"model_version": "v0001", "drift_share": pytest.approx(drift["drift_share"])}]
    line = _line_with(result.output, f" {day} ")
    assert f"{drift['drift_share']:.2f}" in line and ("DRIFT" if drift["dataset_drift"] else "stable") in line
    assert f"report {day}: {drift['report_html']}" in result.output
    [realized] = watched["performance"]
    assert realized["as_of_date"] == SCORED[0].isoformat() and realized["model_version"] == "v0001"
    assert f"{realized['roc_auc']:.4f}" in _line_with(result.output, f" {SCORED[0]} ")
    request = watched["request"]
    assert ("no retrain requested" if request is None else f"because of {request['reason']}") in result.output


# -- known failures: a short message that says what to do, never a traceback -----------------------
def _cli(home, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`python -m ml ARGS` in a child process, TIDEMARK_HOME at `home` and the given variables set."""
    variables = {**os.environ, "TIDEMARK_HOME": str(home), "COLUMNS": "400", **env}
    for name in ("TIDEMARK_WAREHOUSE_URL", "TIDEMARK_REGISTRY_URI", "TIDEMARK_S3_ENDPOINT_URL"):
        if name not in env:
            variables.pop(name, None)
    return subprocess.run([sys.executable, "-m", "ml", *args], cwd=REPO_ROOT, env=variables, capture_output=True,
                          text=True, timeout=180)


def _short_error(result: subprocess.CompletedProcess, *expected: str) -> str:
    """The stderr of a refused command, checked: exit code 2, a few lines, no traceback, each `expected` text."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) < 5, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr
    return result.stderr


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_missing_postgresql_database_says_how_to_create_it_and_hides_the_password(tmp_path):
    name = f"tidemark_missing_{os.getpid()}_{tmp_path.name[-12:].replace('-', '_')}"
    url = f"postgresql://postgres:pw-never-shown@127.0.0.1:5432/{name}"
    stderr = _short_error(_cli(tmp_path, "features", TIDEMARK_WAREHOUSE_URL=url),
                          f"has no database '{name}'", f"createdb -h 127.0.0.1 -p 5432 -U postgres {name}",
                          "TIDEMARK_WAREHOUSE_URL")
    assert "pw-never-shown" not in stderr


def test_postgresql_where_nothing_listens_asks_whether_it_is_running(tmp_path):
    port = _closed_port()
    csv_file = tmp_path / "rows.csv"
    csv_file.write_text("a,b\n1,2\n")
    url = f"postgresql://postgres:pw-never-shown@127.0.0.1:{port}/tidemark"
    stderr = _short_error(_cli(tmp_path, "load-csv", str(csv_file), "rows", TIDEMARK_WAREHOUSE_URL=url),
                          f"is PostgreSQL running at 127.0.0.1:{port}?", "TIDEMARK_WAREHOUSE_URL")
    assert "pw-never-shown" not in stderr


@pytest.mark.parametrize("args", [["features"], ["load-csv", "{csv}", "rows"], ["dbt", "build"]])
def test_a_file_that_is_not_a_duckdb_database_is_named_and_left_as_it_was(tmp_path, args):
    not_duckdb = tmp_path / "notes.duckdb"
    not_duckdb.write_text("shopping list: milk, eggs\n")
    csv_file = tmp_path / "rows.csv"
    csv_file.write_text("a,b\n1,2\n")
    args = [arg.format(csv=csv_file) for arg in args]
    _short_error(_cli(tmp_path, *args, TIDEMARK_WAREHOUSE_URL=f"duckdb:///{not_duckdb}"),
                 f"{not_duckdb} is not a DuckDB database", "point TIDEMARK_WAREHOUSE_URL at a DuckDB file")
    assert not_duckdb.read_text() == "shopping list: milk, eggs\n"


def test_a_duckdb_file_held_by_another_process_names_that_process(tmp_path):
    import duckdb

    held = tmp_path / "warehouse.duckdb"
    csv_file = tmp_path / "rows.csv"
    csv_file.write_text("a,b\n1,2\n")
    with duckdb.connect(str(held)):
        result = _cli(tmp_path, "load-csv", str(csv_file), "rows", TIDEMARK_WAREHOUSE_URL=f"duckdb:///{held}")
    _short_error(result, f"{held} is in use by another process (PID {os.getpid()})")


def test_debug_shows_the_traceback_of_a_warehouse_that_cannot_be_opened(tmp_path):
    not_duckdb = tmp_path / "notes.duckdb"
    not_duckdb.write_text("not a database\n")
    loud = _cli(tmp_path, "--debug", "features", TIDEMARK_WAREHOUSE_URL=f"duckdb:///{not_duckdb}")
    assert loud.returncode == 1
    assert "Traceback" in loud.stderr and "WarehouseError" in loud.stderr and "is not a DuckDB database" in loud.stderr


def test_an_s3_endpoint_that_is_down_is_named_with_its_variable_within_seconds(tmp_path):
    import time

    from ml.tools.s3local import DUMMY_AWS_ENV

    endpoint = f"http://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    result = _cli(tmp_path, "registry", "list", TIDEMARK_REGISTRY_URI="s3://models/churn",
                  TIDEMARK_S3_ENDPOINT_URL=endpoint, **DUMMY_AWS_ENV)
    _short_error(result, endpoint, "TIDEMARK_S3_ENDPOINT_URL")
    assert time.monotonic() - started < 60


def test_an_endpoint_that_is_no_s3_api_is_a_message_not_a_crash(tmp_path):
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from ml.tools.s3local import DUMMY_AWS_ENV

    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path))  # answers 404 to every S3 request
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        result = _cli(tmp_path, "registry", "list", TIDEMARK_REGISTRY_URI="s3://models/churn",
                      TIDEMARK_S3_ENDPOINT_URL=endpoint, **DUMMY_AWS_ENV)
        server.shutdown()
    _short_error(result, endpoint, "TIDEMARK_S3_ENDPOINT_URL")


# -- text from users and files is printed as written, never read as markup -------------------------
def test_paths_and_names_with_brackets_are_printed_verbatim(tmp_path):
    folder = tmp_path / "[abc]" / ":cow:"
    url = f"duckdb:///{folder / 'f.db'}"
    csv_file = tmp_path / "rows.csv"
    csv_file.write_text("a,b\n1,2\n")
    loaded = _cli(tmp_path, "load-csv", str(csv_file), "rows", TIDEMARK_WAREHOUSE_URL=url)
    assert loaded.returncode == 0, loaded.stderr
    assert f"1 rows loaded into raw.rows in {url}" in loaded.stderr

    simulated = _cli(tmp_path, "simulate", "--customers", "20", "--days", "1", TIDEMARK_WAREHOUSE_URL=url)
    assert simulated.returncode == 0, simulated.stderr
    assert "raw tables loaded into" in simulated.stderr and "/[abc]/" in simulated.stderr  # a title, wrapped

    missing = tmp_path / "[bold]x[/bold]" / "f.csv"
    _short_error(_cli(tmp_path, "load-csv", str(missing), "rows", TIDEMARK_WAREHOUSE_URL=url),
                 f"CSV file not found: {missing}")
    _short_error(_cli(tmp_path, "registry", "show", "[bold]x[/bold]"),
                 "bad model name '[bold]x[/bold]': must match [a-z][a-z0-9_-]*")


def test_a_usage_error_keeps_the_brackets_of_the_value(tmp_path):
    result = _cli(tmp_path, "monitor", "--date", "[bold]x[/bold]")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    shown = " ".join(result.stderr.replace("│", " ").split())
    assert "Invalid value for --date: '[bold]x[/bold]' is not a date" in shown


def test_the_demo_ui_says_to_run_the_demo_first_and_starts_nothing(tmp_path):
    result = _cli(tmp_path, "airflow", "start", "--demo")
    _short_error(result, "no demo has run here yet", "run `make demo` first")
    assert not (tmp_path / "demo" / "airflow" / "service").exists()
    status = _cli(tmp_path, "airflow", "status", "--demo")
    assert status.returncode == 1 and "no Airflow started" in status.stdout + status.stderr
