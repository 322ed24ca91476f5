"""The Airflow assets that connect the DAGs, defined once.

An event on each carries the as-of interval it covers in its extra: {"start": ISO date, "end": ISO date}.
"""

from airflow.sdk import Asset

RAW = Asset(name="raw", uri="tidemark://warehouse/raw")
FEATURES = Asset(name="features", uri="tidemark://warehouse/marts/customer_features_daily")
RETRAIN_REQUESTED = Asset(name="retrain_requested", uri="tidemark://ml/retrain_requested")
CHAMPION = Asset(name="champion", uri="tidemark://registry/champion")
# Its extra also names the model and version that scored: {"start", "end", "model", "version"}.
PREDICTIONS = Asset(name="predictions", uri="tidemark://warehouse/ml/predictions")
# Drift and realized-performance rows written for the interval (ml.drift_metrics, ml.model_performance).
MONITORING = Asset(name="monitoring", uri="tidemark://warehouse/ml/drift_metrics")
