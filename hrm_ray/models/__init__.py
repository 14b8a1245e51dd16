"""Pure PyTorch models: the HRM x LM hybrid (`HRMLanguageModel`) and the puzzle HRM (`puzzle/`)."""
from __future__ import annotations

from hrm_ray.models.hybrid import GenerationResult, HRMLanguageModel, ModelOutput

__all__ = ["GenerationResult", "HRMLanguageModel", "ModelOutput"]
