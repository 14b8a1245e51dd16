"""Pure PyTorch models, one package per family (hrm_lm, hrm_act_v1, transformer_baseline) built from the
shared layers of `layers.py` and looked up by name in `registry.py`. Nothing here imports the rest of
hrm_ray: the trainers depend on the models, never the reverse."""
