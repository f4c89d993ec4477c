"""``python -m minillm.bench`` / ``minillm-bench``: the Hydra app over ``conf/bench.yaml``."""

from __future__ import annotations

import sys

from minillm.bench.app import bench
from minillm.bench.settings import refuse_renamed_keys
from minillm.cli import hydra_app, user_errors

app = hydra_app("bench")(bench)


def main():
    """Refuse bench's old key names in one line (before Hydra, which would only say the key is unknown),
    then run the app."""
    user_errors(refuse_renamed_keys)(sys.argv[1:])
    return app()


if __name__ == "__main__":
    main()
