"""Prefect flows and deployments: each task wraps a plain step function."""
