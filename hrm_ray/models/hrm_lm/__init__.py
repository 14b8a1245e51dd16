"""The HRM x LM hybrid (`hrm_lm`): prompt encoder -> HRM core -> gated bridge -> causal decoder."""
from hrm_ray.models.hrm_lm.config import HRMLMConfig
from hrm_ray.models.hrm_lm.model import GenerationResult, HRMLanguageModel, ModelOutput, compile_units

__all__ = ["GenerationResult", "HRMLMConfig", "HRMLanguageModel", "ModelOutput", "compile_units"]
