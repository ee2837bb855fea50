#!/usr/bin/env python
"""Train SAELens SAEs on hooks of any sae_ooc activation cache, standalone: `python train_sae.py --help`.

The command is `sae_ooc.saes.standalone` (`main`, `train_standalone`, `build_parser`, `sae_params`).
"""

import sys

from sae_ooc.saes.standalone import build_parser, main, sae_params, train_standalone  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
