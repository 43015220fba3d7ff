"""Shared command-line flag for the examples: `--tiny` shrinks them for CI."""

import argparse


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (CI)")
    parser.add_argument("--logdir", default=None, help="TensorBoard log dir")
    return parser.parse_args()
