"""Lineguard station runtime: lean (numpy, onnxruntime, opencv); never imports the training stack."""

__version__ = "0.1.0"
