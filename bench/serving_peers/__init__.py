"""Apps that `bench/serving.py` starts: the floor (our venv) and the peers (their own venvs).

The peer modules import MLServer, BentoML or Ray, which live only in `bench/.venvs/`, so they
carry `# mypy: ignore-errors`; exclude `bench/serving_peers/` from type checks if preferred.
"""
