"""The anomaly model: backbone, PatchCore/PaDiM, coreset, enrollment, calibration and export."""
