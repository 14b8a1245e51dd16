"""Task evaluation of a model and its tokenizer: scoring, answer checking, the task registry, the runner.

Layer between `data` and `train`: the training loop calls it for task metrics; `infer/` loads runs and
hands their models here."""
