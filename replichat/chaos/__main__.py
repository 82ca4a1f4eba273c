"""python -m replichat.chaos --seconds 30 --seed N"""
import argparse
import sys

from replichat.chaos.campaign import run_campaign


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m replichat.chaos", description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the fault phase")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", help="keep replica data and logs here (default: a temporary folder)")
    parser.add_argument("--quiet", action="store_true", help="only the summary")
    args = parser.parse_args()
    log = (lambda *a, **k: None) if args.quiet else (lambda *a, **k: print(*a, flush=True, **k))
    result = run_campaign(args.seconds, args.seed, args.data_dir, log)
    print(result.table(), flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
