"""The language-model interface the trainer, the evaluation and inference use: the HRM×LM hybrid's model type
(for type hints; build it with hrm_ray.models.registry.build_model), its outputs, the label padding, the
per-example loss sums, the memory bias of its bridge and the name of mamba_ssm's kernel path. Other layers
import these from here, never from the family's package."""
from hrm_ray.models.hrm_lm.bridge import memory_bias
from hrm_ray.models.hrm_lm.config import HRMLMConfig
from hrm_ray.models.hrm_lm.mamba2 import MAMBA_SSM_PATH
from hrm_ray.models.hrm_lm.model import (
    IGNORE_INDEX,
    GenerationResult,
    HRMLanguageModel,
    ModelOutput,
    example_ce_sums,
)

__all__ = ["GenerationResult", "HRMLMConfig", "HRMLanguageModel", "IGNORE_INDEX", "MAMBA_SSM_PATH", "ModelOutput",
           "example_ce_sums", "memory_bias"]
