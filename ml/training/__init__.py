"""Training: the labelled rows, the candidates, metrics, the promotion gate, and the steps each train_<model> DAG runs."""
