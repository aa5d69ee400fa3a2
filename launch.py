#!/usr/bin/env python
"""Hyperparameter search for scientific PyTorch models: ``python launch.py --space resnet1d``.

A thin entry point; the command line lives in :mod:`experiment.cli` (see README.md).
"""

import sys

from experiment.cli import main

if __name__ == "__main__":
    sys.exit(main())
