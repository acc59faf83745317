"""`seqmodels` console script: every stage (the same runner as the pipelines/ entry
points), ONNX export, versioned outputs (read, and pushed to the DVC remote) and cluster jobs.

Each command ends through seqmodels.console.guarded: a SeqmodelsError is one readable
message on stderr and exit 2, never a stack trace.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from seqmodels.console import guarded
from seqmodels.errors import ConfigError
from seqmodels.stages import STAGES, stage_runner
from seqmodels.stages.runner import add_stage_arguments, run_with_params

SUBMIT_ACTIONS = ("status", "logs", "stop", "fetch")
REMOTE_HELP = ("DVC remote to read data missing from the cache from: a name in the repository's "
               ".dvc/config or a URL (default: the revision's default remote)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqmodels", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in STAGES:
        if name != "score":  # takes its own arguments (add_score_parser)
            add_stage_arguments(commands.add_parser(name, help=f"run the {name} stage"))
    add_score_parser(commands)
    export = commands.add_parser("export", help="write the trained encoder as ONNX")
    export.add_argument("--model", default="models/latest", help="trained model (default: %(default)s)")
    export.add_argument("--output", default="models/onnx", help="target folder (default: %(default)s)")
    outputs = commands.add_parser("outputs", help="published batch outputs at any git revision (via DVC)")
    outputs.add_argument("action", choices=("show", "read"),
                         help="show: manifest summary; read: the rows (to stdout or --to FILE)")
    outputs.add_argument("--rev", default=None, help="git commit, tag or branch (default: the workspace)")
    outputs.add_argument("--path", default="outputs/latents", help="outputs folder (default: %(default)s)")
    outputs.add_argument("--repo", default=None, help="repository path or git URL (default: this one)")
    outputs.add_argument("--remote", default=None, help=REMOTE_HELP)
    outputs.add_argument("--columns", default=None, help="comma-separated columns to read")
    outputs.add_argument("--to", default=None, help="write the rows to this Parquet file")
    outputs.add_argument("--head", type=int, default=5, help="rows to print without --to")
    push = commands.add_parser(
        "push", help="push this checkout's DVC-tracked outputs to the DVC remote (consumers read them)",
        description="Push every output dvc.lock records (latents, scored batches, models) to the default "
                    "DVC remote, so consumers on other machines read them at this revision. `make repro` "
                    "runs it with --if-configured.")
    push.add_argument("stages", nargs="*", help="only these stages' outputs (default: all)")
    push.add_argument("--if-configured", action="store_true",
                      help="with no remote configured, say so and exit 0 instead of failing")
    submit = commands.add_parser(
        "submit", help="run stages on a Ray cluster as a Ray job, or manage such a job",
        description="Submit a stage (with what it depends on) or the whole pipeline (repro) as a Ray "
                    "job, follow it and fetch its outputs into this checkout; or status/logs/stop/fetch "
                    "a job submitted earlier. See cluster/README.md.")
    submit.add_argument("action", choices=(*STAGES, "repro", *SUBMIT_ACTIONS),
                        help="a stage or repro to submit; status|logs|stop|fetch JOB_ID to manage a job")
    submit.add_argument("job_id", nargs="?", help="the job, for status|logs|stop|fetch")
    submit.add_argument("--address", default=None,
                        help="the cluster's job API, e.g. http://127.0.0.1:8265 "
                             "(default: RAY_API_SERVER_ADDRESS or an http RAY_ADDRESS)")
    submit.add_argument("--params", default="params.yaml", help="parameters file (default: %(default)s)")
    submit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a parameter for this job (written into params.yaml with the results)")
    submit.add_argument("--results", default=None,
                        help="storage both sides reach for the job's outputs "
                             "(default: TRAIN_STORAGE/jobs/ID)")
    submit.add_argument("--runtime-env", default="cluster/runtime_env.yaml",
                        help="Ray runtime_env YAML to extend (default: %(default)s)")
    submit.add_argument("--no-pip", dest="with_pip", action="store_false",
                        help="do not pip-install the pinned dependencies (the cluster image has them)")
    submit.add_argument("--no-wait", dest="wait", action="store_false",
                        help="return once submitted; fetch the outputs later with `fetch JOB_ID`")
    submit.add_argument("--follow", action="store_true", help="logs: keep streaming until the job ends")
    return parser


def add_score_parser(commands: argparse._SubParsersAction) -> None:
    score = commands.add_parser(
        "score", help="score a new batch of data with a versioned detector",
        description="Score new data (a CSV/Parquet file, a folder of them, or s3://) with a detector "
                    "folder or the detector of a past git revision; the scores are published "
                    "atomically with a manifest. With --batch, input and output come from params.yaml "
                    "(score.batches, paths.scores): what the DVC score stage runs.")
    add_stage_arguments(score)
    score.add_argument("--input", help="file, folder of Parquet/CSV files, or s3:// URI")
    score.add_argument("--output", help="output folder or s3:// URI")
    source = score.add_mutually_exclusive_group()
    source.add_argument("--model", help="detector folder (default: paths.detector, models/latest)")
    source.add_argument("--rev", help="git commit, tag or branch whose detector to use (read through DVC)")
    score.add_argument("--repo", default=None, help="with --rev: repository path or URL (default: this one)")
    score.add_argument("--remote", default=None, help="with --rev: " + REMOTE_HELP)
    score.add_argument("--batch", help="a score.batches name: its input, into paths.scores/NAME")


def _score(args: argparse.Namespace, cfg) -> None:
    if args.batch and (args.input or args.output):
        raise ConfigError("--batch takes its input and output from params.yaml",
                          where="seqmodels score", fix="give either --batch or --input/--output")
    if not args.batch and (not args.input or not args.output):
        raise ConfigError("seqmodels score needs --input and --output (or --batch NAME)",
                          where="seqmodels score",
                          fix="e.g. seqmodels score --input new.csv --output scores/new")
    from seqmodels.distributed.runtime import ray_starting

    with ray_starting(cfg.ray):  # Ray starts while the detector loads and the batch is read
        from seqmodels.stages.score import run, score_with

        if args.batch:
            run(cfg, args.batch)
        else:
            score_with(cfg, args.input, args.output, model=args.model, rev=args.rev, repo=args.repo,
                       remote=args.remote)


def _submit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from seqmodels.distributed import submit

    if args.action in SUBMIT_ACTIONS:
        return submit.manage(args.action, args.job_id, address=args.address, follow_logs=args.follow,
                             results=args.results)
    return submit.submit(args.action, args.overrides, address=args.address, params=args.params,
                         results=args.results, runtime_env_file=Path(args.runtime_env),
                         with_pip=args.with_pip, wait=args.wait)


def _export(args: argparse.Namespace) -> None:
    from seqmodels.export import export_onnx

    print(f"wrote {export_onnx(args.model, args.output)}")


def _outputs(args: argparse.Namespace) -> None:
    import itertools
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from seqmodels.data.tables import parquet_write_options
    from seqmodels.publish import writing_file
    from seqmodels.versions import iter_outputs, read_manifest

    if args.action == "show":
        manifest = read_manifest(args.rev, path=args.path, repo=args.repo, remote=args.remote)
        summary = {key: manifest.get(key) for key in ("created", "git", "rows", "rows_per_split", "model",
                                                        "input", "versions", "schema")}
        print(json.dumps(summary, indent=2))
        return
    columns = args.columns.split(",") if args.columns else None
    groups = iter_outputs(args.rev, path=args.path, repo=args.repo, columns=columns, remote=args.remote)
    rows = 0
    if args.to:  # streamed into place: one row group in memory, no partial file on failure
        with writing_file(args.to) as partial:
            first = next(groups)
            with pq.ParquetWriter(partial, first.schema, **parquet_write_options(first.schema)) as writer:
                for table in itertools.chain([first], groups):
                    writer.write_table(table)
                    rows += table.num_rows
        print(f"wrote {rows} rows to {args.to}")
        return
    shown = []
    for table in groups:
        if rows < args.head or not shown:  # the first group at least: its columns, for --head 0
            shown.append(table.slice(0, max(args.head - rows, 0)))
        rows += table.num_rows
    print(pa.concat_tables(shown).to_pandas().to_string())
    print(f"({rows} rows)")


def _push(args: argparse.Namespace) -> None:
    from seqmodels import remote

    print(remote.push_report(".", args.stages, require=not args.if_configured), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "export":
        return guarded("export", lambda: _export(args))
    if args.command == "outputs":
        return guarded("outputs", lambda: _outputs(args))
    if args.command == "submit":
        return guarded("submit", lambda: _submit(args))
    if args.command == "push":
        return guarded("push", lambda: _push(args))
    if args.command == "score":
        return run_with_params("score", lambda cfg: _score(args, cfg), args.params, args.overrides)
    return run_with_params(args.command, stage_runner(args.command), args.params, args.overrides)


if __name__ == "__main__":
    raise SystemExit(main())
