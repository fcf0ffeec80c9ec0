"""The drift loop, pipeline side: recalibration figures, scenario streams, Evidently reports of synced evidence."""
