"""`hrm-ray import`: a released checkpoint of the HRM or TRM papers' trainers as an hrm-ray model directory."""
from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="CHECKPOINT",
                        help="a reference run directory (all_config.yaml + step_N files: the newest is taken; or a "
                             "released model's checkpoint file) or the weights file itself")
    parser.add_argument("--out", required=True, help="the model directory to write (new): config.yaml, "
                                                     "model.safetensors, meta.json")
    parser.add_argument("--config", default=None, help="the run's all_config.yaml (default: beside the weights)")
    parser.add_argument("--dataset", default="", help="an hrm-ray puzzle dataset to check the model against and "
                                                      "record as its data (its seq_len, vocabulary, puzzle ids)")


def run(args: argparse.Namespace) -> int:
    from hrm_ray.infer.reference_import import import_reference

    imported = import_reference(args.source, args.out, args.config, args.dataset)
    for note in imported.notes:
        print(f"note: {note}")
    print(f"imported {imported.arch} as {imported.model_name}: {imported.directory}")
    print(f"evaluate it: hrm-ray eval --checkpoint {imported.directory} --dataset PUZZLE_DATASET")
    return 0
