"""`voxsight keys generate DIR`: CURVE key pairs for a bus that listens beyond loopback."""

from __future__ import annotations

import argparse

from streams.endpoints import generate_keys


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="voxsight keys", description=__doc__)
    sub = ap.add_subparsers(dest="verb", required=True)
    gen = sub.add_parser("generate", help="write server and client key pairs into DIR")
    gen.add_argument("dir")
    args = ap.parse_args(argv)
    d = generate_keys(args.dir)
    print(f"wrote {d}/server.key[_secret] and {d}/client.key[_secret]\n"
          f"bus: server_keys:={d}   nodes: --curve-dir {d}  (copy server.key + client.key_secret to clients)")
    return 0
