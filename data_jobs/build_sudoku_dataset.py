"""Build a sudoku puzzle dataset: same flags as `hrm-ray puzzle-data sudoku`."""
from __future__ import annotations

import sys

from hrm_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["puzzle-data", "sudoku", *sys.argv[1:]]))
