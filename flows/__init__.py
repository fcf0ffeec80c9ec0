"""Lineguard pipeline: enrollment, calibration, export, evaluation, tracking and orchestration."""
