"""Pure PyTorch models, one package per family (hrm_lm, hrm_act_v1, transformer_baseline, trm), built from the
shared layers of `layers.py` (and, for the puzzle families, the shared machinery of `puzzle/`) and looked up by
name in `registry.py`. Other layers of hrm_ray reach the families only through `registry`, `puzzle` and `lm`
(the language model's interface), never a family's package (tests/test_architecture.py). Nothing here imports
the rest of hrm_ray: the trainers depend on the models, never the reverse."""
