"""Entry point of ``python -m agir_retrain.tasks.training`` (and ``accelerate launch -m ...``)."""

import logging
import os
import sys

from agir_retrain.tasks.training.program import main, parse

if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    main(parse(sys.argv[1:]))
