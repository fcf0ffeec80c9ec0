"""MLflow: runs, registered bundles and their lineage."""
