"""The search driver, MLflow tracking and the end-of-search summary."""
