"""Studies: study files, the Ray Tune runner, the Optuna search and the Parquet results store.

Ray is imported only inside the runner modules, never here, so the results store can be used
without Ray (``mismatch train`` writes the same rows).
"""
