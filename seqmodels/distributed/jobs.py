"""What a submitted Ray job runs on the cluster: the DVC pipeline, then the results handed back.

`seqmodels submit` builds the command line; nobody types it:

    python -m seqmodels.distributed.jobs TARGET --results URI [--set KEY=VALUE ...]

TARGET is a stage name (that stage and whatever it depends on, as `dvc repro TARGET`) or
`repro` (the whole pipeline). Why DVC runs here and not only on the submitting side: the
stages and their order stay defined in one place (dvc.yaml), and the dvc.lock written
here is the record the checkout commits afterwards.

Ray unpacks one copy of the uploaded project per content hash and reuses it for every job
with the same content, so the job works in a private copy: overrides and outputs of one
job never leak into the next.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from seqmodels.config import apply_override, load_config
from seqmodels.distributed.results import upload
from seqmodels.errors import SeqmodelsError

RECORDS = ("dvc.lock", "params.yaml")  # handed back with the outputs: what DVC compares against


def apply_overrides(params: Path, overrides: Sequence[str]) -> None:
    """Write `KEY=VALUE` overrides into params.yaml, keeping its comments (as `dvc exp run -S`)."""
    from dvc.utils.serialize import modify_yaml

    load_config(params, list(overrides))  # a bad key or value fails here with the usual message
    with modify_yaml(params) as document:
        for override in overrides:
            apply_override(document, override)  # the same parsing as every --set


def stage_outputs(root: Path, target: str | None) -> tuple[list[str], list[str]]:
    """(stage names, their output paths) that `dvc repro target` may write."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        stages = repo.stage.collect(target, with_deps=True)
        names = sorted(stage.name for stage in stages)
        outs = sorted({str(out.def_path) for stage in stages for out in stage.outs})
    return names, outs


def private_workspace(source: Path) -> Path:
    workspace = Path(tempfile.mkdtemp(prefix="seqmodels-job-"))
    shutil.copytree(source, workspace, dirs_exist_ok=True, symlinks=True)
    if not (workspace / ".git").exists():
        # The upload carries no git history; DVC runs without an SCM there (dvc.lock still works).
        (workspace / ".dvc" / "config.local").write_text("[core]\n    no_scm = true\n")
    return workspace


def run_job(target: str, results: str, overrides: Sequence[str]) -> int:
    workspace = private_workspace(Path.cwd())
    try:
        os.chdir(workspace)
        apply_overrides(workspace / "params.yaml", overrides)
        dvc_target = None if target == "repro" else target
        stages, outs = stage_outputs(workspace, dvc_target)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(workspace), os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, "-m", "dvc", "repro", *([dvc_target] if dvc_target else [])]
        print(f"seqmodels job: {' '.join(command[1:])} (stages: {', '.join(stages)})", flush=True)
        returncode = subprocess.call(command, env=env)
        if returncode != 0:
            print(f"seqmodels job: dvc repro failed with exit code {returncode}; no results written",
                  file=sys.stderr, flush=True)
            return returncode
        manifest = upload(workspace, [*outs, *RECORDS], results, stages)
        print(f"seqmodels job: results for {len(manifest['paths'])} paths written to {results}", flush=True)
        return 0
    except SeqmodelsError as error:
        print(f"seqmodels job: error: {error.message}", file=sys.stderr, flush=True)
        return error.exit_code
    finally:
        os.chdir(tempfile.gettempdir())
        shutil.rmtree(workspace, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqmodels.distributed.jobs", description=__doc__)
    parser.add_argument("target", help="a stage name, or repro for the whole pipeline")
    parser.add_argument("--results", required=True, help="where to hand the outputs back (URI or path)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    return run_job(args.target, args.results, args.overrides)


if __name__ == "__main__":
    raise SystemExit(main())
