"""Bring your own model: `new-model` scaffolds from a raw table, `spec check` names each problem with its fix.

A copy of the dbt project in a temporary folder takes the scaffolded staging model, so the repository is
left as it was; the warehouse is a DuckDB file beside it and the spec goes to TIDEMARK_SPECS_DIR.
"""

from __future__ import annotations

import csv
import json
import shutil
from datetime import date, timedelta

import pytest
import yaml
from typer.testing import CliRunner

from ml.cli import app
from ml.core.settings import REPO_ROOT, Settings, parse_warehouse_url
from ml.core.spec import SPEC_DIR, SpecError, load_spec
from ml.features.dbt import run_dbt
from ml.ingest.load import load_days
from ml.training.steps import train

CLIENTS, DAYS, START = 30, 6, date(2025, 1, 1)
RELATION = "stg_acme__clients"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A parsed copy of the dbt project, an empty DuckDB warehouse and a specs folder, and the CLI's environment."""
    root = tmp_path_factory.mktemp("byom")
    dbt_project = root / "repo" / "dbt_project"
    shutil.copytree(REPO_ROOT / "dbt_project", dbt_project, ignore=shutil.ignore_patterns("target", "logs"))
    settings = Settings(home=root, warehouse=parse_warehouse_url(f"duckdb:///{root / 'warehouse.duckdb'}"),
                        repo_root=root / "repo", specs_dir=root / "specs")
    _dbt(settings, "parse")
    env = {"TIDEMARK_HOME": str(root), "TIDEMARK_WAREHOUSE_URL": settings.warehouse.url,
           "TIDEMARK_SPECS_DIR": str(settings.specs_dir)}
    return {"settings": settings, "root": root, "dbt_project": dbt_project, "env": env}


def _dbt(settings: Settings, *args: str, vars: dict | None = None) -> None:
    result = run_dbt(list(args), settings=settings, vars=vars, capture=True, env={"DBT_TARGET_PATH": "target"})
    assert result.success, result.output[-3000:]


def _cli(project, *args: str):
    return CliRunner().invoke(app, list(args), env=project["env"])


def _check(project, spec: str):
    return _cli(project, "spec", "check", spec, "--dbt-project", str(project["dbt_project"]))


def _load(project, rows: list[dict], table: str = "clients") -> None:
    path = project["root"] / f"{table}.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    loaded = _cli(project, "load-csv", str(path), table)
    assert loaded.exit_code == 0, loaded.output


def _clients() -> list[dict]:
    """One row per client per day; about one in seven churned."""
    return [{"client_id": str(c), "snapshot_date": str(START + timedelta(days=d)), "plan": "ab"[c % 2],
             "monthly_fee": f"{9.5 + c % 3:.2f}", "churned": str(int((c + d) % 7 == 0))}
            for d in range(DAYS) for c in range(1, CLIENTS + 1)]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def test_a_scaffolded_model_is_checked_from_unparsed_to_ready_and_each_data_problem_is_named(project):
    _load(project, _clients())
    made = _cli(project, "new-model", "acme", "--table", "clients", "--label", "churned", "--time", "snapshot_date",
                "--dbt-project", str(project["dbt_project"]))
    assert made.exit_code == 0, made.output
    folder = project["dbt_project"] / "models" / "staging" / "acme"
    assert sorted(p.name for p in folder.iterdir()) == ["_acme__models.yml", "_acme__sources.yml", f"{RELATION}.sql"]
    assert (project["root"] / "specs" / "acme.yaml").exists()
    assert f"python -m ml dbt build --select +{RELATION}" in made.output
    contract = {c["name"]: c["data_type"] for c in yaml.safe_load((folder / "_acme__models.yml").read_text())
                ["models"][0]["columns"]}
    assert contract == {"client_id": "integer", "snapshot_date": "date", "plan": "varchar",
                        "monthly_fee": "double precision", "churned": "integer"}
    # the user declares the label's horizon on the model, and the spec agrees with it
    models_yml, spec_path = folder / "_acme__models.yml", project["root"] / "specs" / "acme.yaml"
    models_yml.write_text(models_yml.read_text().replace(
        "        enforced: true\n", "        enforced: true\n      meta: {label_horizon_days: 7}\n", 1))
    spec_path.write_text(spec_path.read_text().replace("horizon_days: 0", "horizon_days: 7"))
    again = _cli(project, "new-model", "acme", "--table", "clients", "--label", "churned", "--time", "snapshot_date",
                 "--dbt-project", str(project["dbt_project"]))
    assert again.exit_code == 2 and "--force" in again.output and "Traceback" not in again.output

    unparsed = _check(project, "acme")
    assert unparsed.exit_code == 2, unparsed.output
    assert f"features.relation '{RELATION}' is not a model in the dbt project" in _one_line(unparsed.output)
    assert "then run `python -m ml dbt parse`" in _one_line(unparsed.output)

    _dbt(project["settings"], "parse")
    unbuilt = _check(project, "acme")
    assert unbuilt.exit_code == 2, unbuilt.output
    assert f"{RELATION} (staging.{RELATION}) is not built in the warehouse" in _one_line(unbuilt.output)
    assert f"run `python -m ml dbt build --select +{RELATION}`" in _one_line(unbuilt.output)

    _dbt(project["settings"], "build", "--select", f"+{RELATION}")
    ready = _check(project, "acme")
    assert ready.exit_code == 0, ready.output
    positives = sum(row["churned"] == "1" for row in _clients())
    shown = _one_line(ready.output)
    assert "ok: spec acme is ready to train" in shown
    assert f"{CLIENTS * DAYS} rows" in shown and f"{DAYS} as-of dates, {START} .. {START + timedelta(days=DAYS - 1)}" in shown
    assert f"label rate {positives / (CLIENTS * DAYS):.4f}" in shown

    rows = _clients()
    _load(project, rows + [dict(rows[CLIENTS + 2])])  # client 3 twice on the second day
    duplicated = _check(project, "acme")
    assert duplicated.exit_code == 2
    assert ("1 client_id value(s) with more than one row per snapshot_date "
            f"(e.g. client_id = 3 on {START + timedelta(days=1)}: 2 rows)") in _one_line(duplicated.output)

    _load(project, [{**row, "churned": "2"} if i == 5 else row for i, row in enumerate(rows)])
    counted = _check(project, "acme")
    assert counted.exit_code == 2
    assert f"label.column 'churned' of {RELATION} is not binary: it holds 0, 1, 2" in _one_line(counted.output)
    assert "is not ready" not in counted.output and "Traceback" not in counted.output

    _load(project, rows)
    spec_path.write_text(spec_path.read_text().replace("horizon_days: 7", "horizon_days: 3"))
    horizon = _check(project, "acme")
    assert horizon.exit_code == 2
    assert (f"label.horizon_days is 3 in the spec but {RELATION} declares 7 (meta label_horizon_days in the dbt "
            "project): labels would leak across the split") in _one_line(horizon.output)


def test_a_spec_whose_horizon_differs_from_the_label_mart_is_named_and_train_stops_on_it(project, small_sim):
    settings = project["settings"]
    load_days(small_sim, None, settings=settings)
    _dbt(settings, "run", "--select", "+churn_labels")
    assert _check(project, "churn").exit_code == 0
    manifest = json.loads((project["dbt_project"] / "target" / "manifest.json").read_text())
    labels = next(node for node in manifest["nodes"].values() if node["name"] == "churn_labels")
    assert labels["config"]["meta"] == {"label_horizon_days": 30}

    data = yaml.safe_load((SPEC_DIR / "churn.yaml").read_text())
    data["label"]["horizon_days"] = 90
    path = project["root"] / "churn_90.yaml"
    path.write_text(yaml.safe_dump(data))
    checked = _check(project, str(path))
    assert checked.exit_code == 2
    shown = _one_line(checked.output)
    assert ("label.horizon_days is 90 in the spec but churn_labels declares 30 (its horizon_days column): "
            "labels would leak across the split") in shown
    assert "set label.horizon_days: 30 in the spec" in shown

    with pytest.raises(SpecError) as stopped:
        train(load_spec(path), settings, as_of=None, run_id="horizon", actor="test")
    assert "spec 'churn' is not ready to train" in str(stopped.value) and "declares 30" in str(stopped.value)
    assert not (settings.home / "runs").exists()


@pytest.mark.parametrize("args, message", [
    (["--table", "no_such_table", "--label", "churned"],
     "raw.no_such_table is not in the warehouse"),
    (["--table", "accounts", "--label", "churn"],
     "--label 'churn' is not a column of raw.accounts (near names: churned)"),
    (["--table", "accounts", "--label", "plan"],
     "--label 'plan': raw.accounts.plan is not binary (it holds 'a', 'b')"),
    (["--table", "accounts", "--label", "churned"],
     "raw.accounts: no column is named id or accounts_id or account_id; name the column that identifies a row "
     "with --entity COLUMN (columns unique: source_row)"),
])
def test_new_model_refuses_what_it_cannot_scaffold_in_one_line(project, args, message):
    rows = [{k: v for k, v in row.items() if k != "client_id"} for row in _clients()[:CLIENTS]]
    _load(project, rows, table="accounts")
    refused = _cli(project, "new-model", "refused", *args, "--dbt-project", str(project["dbt_project"]))
    assert refused.exit_code == 2
    assert message in _one_line(refused.output) and "Traceback" not in refused.output
    assert not (project["root"] / "specs" / "refused.yaml").exists()
