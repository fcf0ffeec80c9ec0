"""The station: the orchestrator over engine, gate, line I/O and evidence, plus its audit log and metrics."""
