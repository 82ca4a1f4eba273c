"""Interactive replichat client: `python3 client.py [--servers host:port,...]`; type help."""
import os
import sys

# Run from a checkout without installing: make the `replichat` package next to us importable.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from replichat.client.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
