#!/usr/bin/env python
"""Hyperparameter search for scientific PyTorch models: ``python launch.py --space resnet1d``.

A thin entry point; the command line lives in :mod:`cli` (see README.md).
"""

import logging
import os
import sys

from cli.main import main

if __name__ == "__main__":
    code = main()
    # Everything is written and closed by now (MLflow commits each write, Ray is shut down);
    # skipping the interpreter's teardown of torch, Ray and gRPC saves over a second per run.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
