"""`python -m hrm_ray.train ...` is `hrm-ray train ...`."""
from __future__ import annotations

import sys

from hrm_ray.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
