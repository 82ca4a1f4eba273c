"""replichat server: `python3 server.py --help`."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from replichat.server.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
