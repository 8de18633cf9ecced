"""In-process reference inference for ``bench relevance`` (run with the model env's python: it imports torch).

    python bench/relevance_ref.py MODEL WEIGHTS_DIR IN.npy [IN2.npy ...]    writes IN.out.npy next to each input

MODEL is a name modeltools/reference.py knows (segformer, resnet50, ...); one process for all files, so the model
loads once. Exit 3 when the reference does not know MODEL (the benchmark then says so and uses Triton directly).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "modeltools"))


def main(argv: list[str]) -> int:
    import numpy as np
    import torch

    import reference

    model, weights, files = argv[0], Path(argv[1]), [Path(f) for f in argv[2:]]
    torch.set_num_threads(1)  # as each Triton instance
    try:
        run = reference.load(model, weights)
    except SystemExit:
        print(json.dumps({"unknown_model": model}))
        return 3
    for f in files:
        out = reference.infer(run, np.load(f), 8)
        np.save(f.with_suffix(".out.npy"), out)
        print(json.dumps({"file": str(f), "shape": list(out.shape)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
