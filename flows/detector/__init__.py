"""YOLO defect detectors: datasets (from masks or labels, with copy-paste), offline training, ONNX detector bundles."""
