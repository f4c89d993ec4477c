"""``make smollm2``: convert a GGUF model into the cache ahead of time, with its layer-pruned students.

``python -m minillm.models.convert [NAME_OR_FILE] [--keep-every K ...] [--cache-dir DIR]`` makes the folders that
``teacher.gguf`` / ``student.keep_every`` would make on first use (``minillm.models.gguf``,
``minillm.models.pruning``) and prints them; runs then load them. Default: ``smollm2_135m`` into ``.cache``
(or ``$MINILLM_CACHE``).
"""

from __future__ import annotations

import argparse
import logging
import os

from minillm.cli import quiet_libraries, user_errors


@user_errors
def main(argv: list[str] | None = None) -> None:
    quiet_libraries()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", nargs="?", default="smollm2_135m", help="packaged name or .gguf file")
    parser.add_argument("--cache-dir", default=os.environ.get("MINILLM_CACHE", ".cache"))
    parser.add_argument(
        "--keep-every", type=int, nargs="*", default=[], help="also make students of every k-th layer"
    )
    args = parser.parse_args(argv)
    from minillm.models.gguf import converted_folder
    from minillm.models.pruning import pruned_folder

    folder = converted_folder(args.source, args.cache_dir, "source")
    print(f"{args.source}: {folder}")
    for every in args.keep_every:
        print(
            f"{args.source} keep_every={every}: {pruned_folder(folder, every, args.cache_dir, 'keep_every')}"
        )


if __name__ == "__main__":
    main()
