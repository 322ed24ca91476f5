"""The Airflow assets that connect the DAGs, defined once.

An event on each carries the as-of interval it covers in its extra: {"start": ISO date, "end": ISO date}.
Every served model has its own predictions, monitoring, retrain request and champion; its score DAG
runs on the asset of its own feature relation.
"""

from airflow.sdk import Asset

RAW = Asset(name="raw", uri="tidemark://warehouse/raw")


def features_asset(relation: str) -> Asset:
    """The rows of a feature relation (a dbt model), announced when new as-of dates are built."""
    return Asset(name=f"features.{relation}", uri=f"tidemark://warehouse/features/{relation}")


def predictions_asset(model: str) -> Asset:
    """A model's rows of ml.predictions; the extra also names the version that scored: {"start", "end",
    "model", "version"}."""
    return Asset(name=f"predictions.{model}", uri=f"tidemark://warehouse/ml/predictions/{model}")


def monitoring_asset(model: str) -> Asset:
    """A model's drift and realized-performance rows for an interval (ml.drift_metrics, ml.model_performance)."""
    return Asset(name=f"monitoring.{model}", uri=f"tidemark://warehouse/ml/monitoring/{model}")


def retrain_requested_asset(model: str) -> Asset:
    """Monitoring asks for a retrain of the model; the extra holds the reason and the as-of date."""
    return Asset(name=f"retrain_requested.{model}", uri=f"tidemark://ml/retrain_requested/{model}")


def champion_asset(model: str) -> Asset:
    """The model's champion alias moved; the extra names the model and version."""
    return Asset(name=f"champion.{model}", uri=f"tidemark://registry/champion/{model}")
