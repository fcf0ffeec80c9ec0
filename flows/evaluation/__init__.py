"""Evaluation through the serving engine: metrics, plots and reports."""
