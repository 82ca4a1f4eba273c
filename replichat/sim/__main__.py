"""`python -m replichat.sim`: see replichat.sim.cli."""
from replichat.sim.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
