"""``python -m minillm.bench`` / ``minillm-bench``: the Hydra app over ``conf/bench.yaml``."""

from __future__ import annotations

from minillm.bench.app import bench
from minillm.cli import hydra_app

main = hydra_app("bench")(bench)


if __name__ == "__main__":
    main()
