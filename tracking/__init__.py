"""The books of a search: the MLflow writer and store, the experiment state, the Optuna
journal, and models logged in MLflow's own format."""
