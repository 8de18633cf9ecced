"""Model-environment tooling (runs under the model env's python, may import torch).

``modeltools/weights.py`` materialises weights into ``triton_models/*/1/weights`` and ``modeltools/reference.py``
runs the same models in-process (the reference the Triton tests and the benchmark compare against). The worker
venv never imports this package: ``workers/local/model_repo.py`` runs these files with the model env's python.
"""
