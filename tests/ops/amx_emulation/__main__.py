"""python -m tests.ops.amx_emulation [--sanitize] [--keep DIR] -- COMMAND...: runs COMMAND with the dense-attention
op built on the AMX emulation (see __init__.py), in a temporary folder unless --keep names one."""
import argparse
import subprocess
import sys
import tempfile

from tests.ops import amx_emulation


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sanitize", action="store_true", help="AddressSanitizer + UBSan build")
    parser.add_argument("--keep", help="folder for the emulated sources and their build (kept)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run")
    with tempfile.TemporaryDirectory() as scratch:
        env = amx_emulation.environment(args.keep or scratch, sanitize=args.sanitize)
        return subprocess.call(command, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
