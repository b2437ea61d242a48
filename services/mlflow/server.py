"""`mlflow` with one process less: the MLflow command line, except that `mlflow server`
becomes the web server instead of starting it as a child and waiting for it.

`mlflow server` (3.17) keeps its own Python process alive next to uvicorn's only to forward
signals and, when job execution is on, to run the job runner. With job execution off, as this
stack runs it, that parent holds about 240 MB for nothing: here it execs uvicorn in its place,
with the same command line and environment, so the server receives SIGTERM itself.
"""

import os
import sys

import mlflow.server
from mlflow.cli import cli


def _exec_instead(command, extra_env=None, **_options):
    env = {**os.environ, **(extra_env or {})}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(command[0], command, env)


if os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "").lower() in ("false", "0"):
    if not hasattr(mlflow.server, "_exec_cmd"):
        sys.exit(
            "mlflow.server no longer starts its server through _exec_cmd: "
            "check services/mlflow/server.py against this MLflow version"
        )
    mlflow.server._exec_cmd = _exec_instead

sys.exit(cli(prog_name="mlflow"))
