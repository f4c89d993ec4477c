"""``python -m minillm.bench`` / ``minillm-bench``: the Hydra app over ``conf/bench.yaml``."""

from __future__ import annotations

import hydra

from minillm.bench.app import bench
from minillm.cli import CONF_DIR

main = hydra.main(config_path=CONF_DIR, config_name="bench", version_base="1.3")(bench)


if __name__ == "__main__":
    main()
