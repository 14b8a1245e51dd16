"""Build a arc puzzle dataset: same flags as `hrm-ray puzzle-data arc`."""
from __future__ import annotations

import sys

from hrm_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["puzzle-data", "arc", *sys.argv[1:]]))
