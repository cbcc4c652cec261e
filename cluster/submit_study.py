"""Run a mismatch study on the Ray cluster this script is started on.

`ray submit` uploads only this file; the package reaches the nodes through the cluster
config's file_mounts and setup_commands. The script runs the study through the same code as
`mismatch study run`, joining the running cluster (``--address auto``)::

    ray submit cluster/aws-gpu.yaml cluster/submit_study.py -- studies/carve_table1.yaml --storage s3://BUCKET/PATH
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python cluster/submit_study.py studies/carve_table1.yaml --storage s3://BUCKET/PATH

A relative study path is looked up in the current folder, then in the mounted repository
($MISMATCH_REPO, default ~/mismatch). Every other argument is passed to `mismatch study run`
(``--profile``, ``--storage``, ``--retry-failed``, ``--verbose``, ``--address``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def resolve_study(path: str) -> str:
    """The study file: as given, or inside the repository mounted on the cluster."""
    if Path(path).exists():
        return path
    repo = Path(os.environ.get("MISMATCH_REPO", "~/mismatch")).expanduser()
    candidate = repo / path
    if candidate.exists():
        return str(candidate)
    raise SystemExit(f"study file not found: {path} (nor {candidate})")


def main(argv: list[str]) -> int:
    """Hand the study to `mismatch study run`, on the cluster (``--address auto`` by default)."""
    if not argv or argv[0].startswith("-"):
        raise SystemExit(__doc__)
    from mismatch.cli import main as mismatch_main

    args = ["study", "run", resolve_study(argv[0]), *argv[1:]]
    if "--address" not in argv:
        args += ["--address", "auto"]
    return mismatch_main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
