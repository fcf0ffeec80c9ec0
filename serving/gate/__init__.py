"""The deterministic PASS/FAIL gate: a pure function of its inputs and rules (imports only its own models)."""

from serving.gate.decide import Decision, GateInput, History, decide
from serving.gate.rules import ERROR_KINDS, Detection, GateRules, SopRule

__all__ = ["ERROR_KINDS", "Decision", "Detection", "GateInput", "GateRules", "History", "SopRule", "decide"]
