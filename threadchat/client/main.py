"""The terminal client (placeholder until the client lands)."""

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("address", nargs="?", default="127.0.0.1:7000", help="HOST[:PORT]")
    parser.add_argument("--name", help="your nickname")


def run(args: argparse.Namespace) -> int:
    raise SystemExit("the client is not written yet")
