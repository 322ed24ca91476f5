"""Training the PyTorch candidate on CUDA with bf16 autocast against the same training on the CPU, in one run.

Setup (untimed): a throwaway DuckDB warehouse gets `--rows` + `--test-rows` synthetic rows of
`marts.customer_features_daily`, generated in SQL by bench_scoring's helper (the columns and types of
the feature mart's dbt contract, from `range()` and `hash()`; no dbt run). The first `--rows` rows by
customer_id are the training rows, the rest the held-out test rows. The label is bench_scoring's: a
logistic function of a few features plus noise, so ROC-AUC measures something.

Measured on those rows, in this run: the churn spec's torch_mlp candidate, with its own parameters
but `--epochs` epochs and no validation set (so every epoch runs and none is spent scoring a
validation set), fitted through the candidate API

- on CUDA, where the candidate runs its forward passes under bf16 autocast;
- on the CPU in float32, with `--cpu-threads` torch threads (default: the spec's, else the candidate's 2).

Each path first fits one epoch on a few batches (CUDA context, cuBLAS handles, kernel loading), untimed.
Reported per path: seconds per epoch (the candidate's `fit_seconds_` over its epochs, the training loop
alone), the whole `fit` (encoding and the copy to the device included), and the test ROC-AUC of
`predict_proba` on the same held-out rows (sklearn.metrics.roc_auc_score); then the epoch-time ratio
CPU/CUDA and the ROC-AUC difference. Without a CUDA device the benchmark says so and exits 0, unless
`--cpu-only` asks for the CPU path alone.

    .venv/bin/python bench/bench_gpu.py                                   # 1,000,000 training rows, 3 epochs
    .venv/bin/python bench/bench_gpu.py --cpu-only --rows 200000 --epochs 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import console, fmt_ratio, print_table, ratio, scratch_settings, write_result  # noqa: E402
from bench.bench_scoring import DAY, FEATURES, _synthesize, synthetic_label  # noqa: E402

NAME = "bench_gpu"
WARM_UP_BATCHES = 4


def _synthetic_rows(spec, rows: int, test_rows: int) -> tuple:
    """Training and test frames of the feature schema with the synthetic label, from a scratch warehouse;
    also the test rows' true probability of the label."""
    from ml.core.spec import dbt_relation, feature_schema
    from ml.core.warehouse import Warehouse
    from ml.training.data import to_frame

    with scratch_settings(NAME, "duckdb") as settings:
        relation = dbt_relation(settings.dbt_manifest, spec.features.relation)
        schema = feature_schema(spec, relation)
        _synthesize(settings, spec, relation, DAY, rows + test_rows, 0)
        with Warehouse.connect(settings, read_only=True) as wh:
            table = wh.read_arrow(f"select * from {FEATURES} order by {spec.entity_key}")
    X = to_frame(table, schema)
    del table
    y, p = synthetic_label(X, spec.seed)
    return schema, X[:rows], y[:rows], X[rows:].reset_index(drop=True), y[rows:], p[rows:].to_numpy()


def _train(spec, schema, params: dict, train: tuple, test: tuple) -> dict:
    """Fit the candidate on `train` after an untimed warm-up fit; its epoch time and test ROC-AUC."""
    from sklearn.metrics import roc_auc_score

    from ml.training.candidates import build_candidate

    cand = spec.candidate("torch_mlp")
    (X, y), (X_test, y_test) = train, test
    warm_rows = WARM_UP_BATCHES * int(params["batch_size"])
    build_candidate(cand.kind, {**params, "max_epochs": 1}, schema, spec.seed).fit(X[:warm_rows], y[:warm_rows])
    model = build_candidate(cand.kind, params, schema, spec.seed)
    started = time.perf_counter()
    model.fit(X, y)
    fit_seconds = time.perf_counter() - started
    scores = model.predict_proba(X_test)[:, 1]
    return {"device": model.device_, "threads": params["num_threads"], "epochs": model.epochs_,
            "epoch_seconds": model.fit_seconds_ / model.epochs_, "train_seconds": model.fit_seconds_,
            "fit_seconds": fit_seconds, "train_log_loss": model.history_[-1]["train_log_loss"],
            "roc_auc": float(roc_auc_score(y_test, scores))}


def run(rows: int, test_rows: int, epochs: int, cpu_threads: int | None, cpu_only: bool) -> dict:
    import torch
    from sklearn.metrics import roc_auc_score

    from ml.core.spec import load_spec
    from ml.training.candidates import TorchTabularCandidate

    spec = load_spec("churn")
    spec_params = dict(spec.candidate("torch_mlp").params)
    params = {**TorchTabularCandidate.defaults, **spec_params, "max_epochs": epochs}
    gpu = None if cpu_only else torch.cuda.get_device_name()
    console.print(f"[bold]{NAME}[/bold]: spec {spec.name!r} torch_mlp {spec_params}, --epochs {epochs}; "
                  f"{rows:,} training rows, {test_rows:,} test rows; {gpu or 'CPU only'}, torch {torch.__version__}")
    started = time.perf_counter()
    schema, X, y, X_test, y_test, p_test = _synthetic_rows(spec, rows, test_rows)
    console.print(f"  synthesized {rows + test_rows:,} rows of {len(schema.columns)} features in "
                  f"{time.perf_counter() - started:.1f}s; positive rate {y.mean():.3f}")

    paths = {}
    if not cpu_only:
        paths["cuda"] = {**_train(spec, schema, {**params, "device": "cuda"}, (X, y), (X_test, y_test)),
                         "autocast": "bf16", "gpu": gpu}
        console.print(f"  cuda: {paths['cuda']['epoch_seconds']:.2f}s per epoch")
    cpu_params = {**params, "device": "cpu", "num_threads": cpu_threads or params["num_threads"]}
    paths["cpu"] = {**_train(spec, schema, cpu_params, (X, y), (X_test, y_test)), "autocast": None}
    console.print(f"  cpu: {paths['cpu']['epoch_seconds']:.2f}s per epoch")

    result = {
        "rows": rows, "test_rows": test_rows, "epochs": epochs,
        "oracle_roc_auc": float(roc_auc_score(y_test, p_test)),
        "params": {k: v for k, v in params.items() if k != "device"}, "torch": torch.__version__,
        "data": "synthetic marts.customer_features_daily from SQL range()/hash() with the dbt contract's columns "
                "(bench_scoring's helper) and bench_scoring's logistic label; no dbt run",
        **paths,
    }
    if "cuda" in paths:
        result["ratios"] = {
            "cpu_over_cuda_epoch_seconds": ratio(paths["cpu"]["epoch_seconds"], paths["cuda"]["epoch_seconds"]),
            "roc_auc_cuda_minus_cpu": paths["cuda"]["roc_auc"] - paths["cpu"]["roc_auc"],
        }
    _print(result)
    path = write_result(NAME, result)
    console.print(f"wrote {path}")
    return result


def _print(r: dict) -> None:
    columns, rows = ["path", "torch threads", "epochs", "s/epoch", "fit s (all)", "test ROC-AUC"], []
    for key, label in (("cuda", "CUDA, bf16 autocast"), ("cpu", "CPU, float32")):
        if key in r:
            p = r[key]
            rows.append([label, p["threads"], p["epochs"], f"{p['epoch_seconds']:.2f}", f"{p['fit_seconds']:.2f}",
                         f"{p['roc_auc']:.4f}"])
            if "cuda" in r:
                rows[-1].append(fmt_ratio(ratio(p["epoch_seconds"], r["cuda"]["epoch_seconds"])))
    if "cuda" in r:
        columns.append("epoch time vs CUDA")
    print_table(f"training the churn torch_mlp on {r['rows']:,} rows, test ROC-AUC on {r['test_rows']:,} rows",
                columns, rows)
    console.print(f"test ROC-AUC of the label's true probability: {r['oracle_roc_auc']:.4f}")
    if "ratios" in r:
        console.print(f"CPU/CUDA epoch time: {fmt_ratio(r['ratios']['cpu_over_cuda_epoch_seconds'])}; "
                      f"ROC-AUC CUDA - CPU: {r['ratios']['roc_auc_cuda_minus_cpu']:+.4f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="training rows (default: 1,000,000)")
    parser.add_argument("--test-rows", type=int, default=200_000, help="held-out test rows (default: 200,000)")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs on each path (default: 3)")
    parser.add_argument("--cpu-threads", type=int, default=None,
                        help="torch threads of the CPU path (default: the spec's num_threads, else 2)")
    parser.add_argument("--cpu-only", action="store_true", help="time the CPU path alone; runs without CUDA")
    args = parser.parse_args(argv)
    for name in ("rows", "test_rows", "epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.cpu_threads is not None and args.cpu_threads < 1:
        parser.error("--cpu-threads must be at least 1")

    import torch

    if not args.cpu_only and not torch.cuda.is_available():
        console.print(f"{NAME}: torch {torch.__version__} sees no CUDA device, so there is no GPU to compare; "
                      "nothing was run (--cpu-only times the CPU path alone)", soft_wrap=True)
        return
    run(args.rows, args.test_rows, args.epochs, args.cpu_threads, args.cpu_only)


if __name__ == "__main__":
    main()
