#!/usr/bin/env python
"""Train SAELens SAEs on hooks of any sae_ooc activation cache, standalone: `python train_sae.py --help`.

The command is `sae_ooc.train_sae_cli` (`main`, `build_parser`, `sae_params`; `train_standalone` from `sae_ooc.saes.standalone`).
"""

import sys

from sae_ooc.train_sae_cli import build_parser, main, sae_params, train_standalone  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
