"""Data layer: source formats, tokenizer, triplets, Ray Data jobs, mixing and streaming ingest.

Jobs (each also `hrm-ray data <job>` and a data_jobs/ script): prepare.prepare_language_dataset,
merge.merge_prepared_batches, mix.mix_prepared, qa.normalize_qa_dataset,
reasoning.build_reasoning_dataset, validate.validate_dataset. Training reads data through
`hrm_ray.data.ingest` (see its docstring).
"""
