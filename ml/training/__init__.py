"""Training: the labelled rows, the candidates, metrics, the promotion gate, and the steps train_model runs."""
