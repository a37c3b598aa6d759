"""The ``hep-executor`` command: run, status, worker, keygen, pack-env, submit-workers, factory, make-samples,
report."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from hep_executor.errors import HepExecutorError

__all__ = ["main"]


def _cmd_worker(args: argparse.Namespace) -> int:
    from hep_executor.engine.worker import run_from_args

    return run_from_args(args)


def _cmd_keygen(args: argparse.Namespace) -> int:
    from hep_executor.engine import write_key_file

    write_key_file(args.path)
    print(f"wrote a new key to {args.path} (mode 0600); give it to the manager and its workers")
    return 0


def _cmd_make_samples(args: argparse.Namespace) -> int:
    from hep_executor.demo import samples

    return samples.main(args.rest)


def _cmd_run(args: argparse.Namespace) -> int:
    from hep_executor.cli._run import run_main

    return run_main(args)


def _cmd_status(args: argparse.Namespace) -> int:
    from hep_executor.cli._dashboard import status_main

    return status_main(args)


def _cmd_report(args: argparse.Namespace) -> int:
    from hep_executor.cli._plots import report_main

    return report_main(args)


def _cmd_submit(args: argparse.Namespace) -> int:
    from hep_executor.batch import submit_main

    return submit_main(args)


def _cmd_pack_env(args: argparse.Namespace) -> int:
    from hep_executor.batch import pack_main

    return pack_main(args)


def _cmd_factory(args: argparse.Namespace) -> int:
    from hep_executor.batch import factory_main

    return factory_main(args)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import hep_executor

    try:
        installed = version("hep_executor")
    except PackageNotFoundError:
        installed = None
    return installed if installed == hep_executor.__version__ or installed is None else \
        f"{hep_executor.__version__} (installed metadata: {installed})"


def _add_run_parser(sub) -> None:
    """The options of ``hep-executor run``."""
    p = sub.add_parser("run", help="run an analysis: a YAML config, or --fileset and --processor "
                                   "(neither: the built-in demo)")
    p.add_argument("config", nargs="?", help="YAML run config (default: the built-in demo)")
    p.add_argument("--fileset", metavar="FILE.json",
                   help="coffea fileset JSON: {ds: [files]} or {ds: {files: {url: tree}, metadata: ...}}")
    p.add_argument("--processor", metavar="module:Class",
                   help="processor class; the module is looked for beside the config or fileset, "
                        "in the working directory, on --path, then among installed packages")
    p.add_argument("--path", action="append", default=[], metavar="DIR",
                   help="another folder to look for the processor module in (repeatable)")
    p.add_argument("--treename", help="tree to read where the fileset names none (default: Events)")
    p.add_argument("--schema", help="NanoEvents schema: NanoAOD (default), Base, PFNano, or a class name")
    p.add_argument("--out", metavar="DIR",
                   help="folder for the run folders (default: ./hep-executor-runs); each run "
                        "writes to a new DIR/<name>-<time>/, with DIR/latest linking to it")
    p.add_argument("--workers", type=int, help="local workers (overrides the config)")
    p.add_argument("--dask", metavar="ADDRESS",
                   help="run on the workers of the Dask cluster whose scheduler is at ADDRESS "
                        "(tcp://HOST:PORT; overrides workers.dask); the cluster is left running; "
                        "gateway://HOST:PORT: a new cluster of that dask-gateway, shut down after the run")
    p.add_argument("--chunksize", type=int, help="fixed chunk size (turns dynamic sizing off)")
    p.add_argument("--checkpoint", metavar="DIR",
                   help="keep the run's partial output in DIR (relative: to the working directory) and "
                        "resume from it: a second run with the same DIR processes only what is not in it")
    p.add_argument("--resume", metavar="DIR",
                   help="resume the run whose checkpoint is in DIR (its run folder, or its --checkpoint "
                        "folder): its config is read from there, so no other argument is needed")
    p.add_argument("--force", action="store_true",
                   help="where the checkpoint holds another run (fileset, processor, ... differ), "
                        "discard it and start over instead of refusing")
    p.add_argument("--no-cache", action="store_true",
                   help="read every file's metadata; use and keep no metadata cache")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--dashboard", nargs="?", type=int, const=0, default=None, metavar="PORT",
                   help="serve a live status page on 127.0.0.1, on PORT or any free port (URL printed; "
                        "'hep-executor status URL')")
    p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                   help="more log output; tracebacks on errors")
    p.set_defaults(func=_cmd_run)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``hep-executor``."""
    parser = argparse.ArgumentParser(
        prog="hep-executor",
        description="A self-tuning Coffea executor: ROOT analysis on ZeroMQ workers.")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output; tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    _add_run_parser(sub)

    p = sub.add_parser("status", help="print the numbers of a running 'hep-executor run --dashboard'")
    p.add_argument("address", help="the dashboard's HOST:PORT or URL")
    p.add_argument("--watch", action="store_true", help="print again every 2 s until interrupted")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("worker", help="run a worker that joins a manager")
    from hep_executor.engine.worker import add_arguments

    add_arguments(p)
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser("keygen", help="write a new key file for a manager and its remote workers")
    p.add_argument("path")
    p.set_defaults(func=_cmd_keygen)

    p = sub.add_parser("make-samples", help="write NanoAOD-like sample ROOT files", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_make_samples)

    p = sub.add_parser("report", help="write the plots of a run report (report.json)")
    p.add_argument("report_file")
    p.add_argument("--out", help="folder for the PNGs (default: beside the report)")
    p.set_defaults(func=_cmd_report)

    try:
        from hep_executor.batch import add_factory_arguments, add_submit_arguments
    except ImportError:
        add_submit_arguments = add_factory_arguments = None
    from hep_executor.batch import add_pack_arguments

    p = sub.add_parser("pack-env", help="pack this environment into a relocatable archive for workers")
    add_pack_arguments(p)
    p.set_defaults(func=_cmd_pack_env)
    if add_submit_arguments is not None:
        p = sub.add_parser("submit-workers", help="submit worker jobs to a batch system")
        add_submit_arguments(p)
        p.set_defaults(func=_cmd_submit)
        p = sub.add_parser("factory", help="keep worker jobs alive while a manager has work")
        add_factory_arguments(p)
        p.set_defaults(func=_cmd_factory)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``hep-executor`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["make-samples"]:  # its own parser takes every option after the name
        from hep_executor.demo import samples

        return samples.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "worker":
        level = logging.WARNING - 10 * min(args.verbose, 2)
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except HepExecutorError as exc:
        return _fail(args, exc, f"error: {exc}", 2)
    except KeyboardInterrupt as exc:
        return _fail(args, exc, "interrupted", 130)
    except Exception as exc:  # a bug or the user's code: one line, the traceback with -v
        return _fail(args, exc, f"error: {type(exc).__name__}: {exc}", 1)


def _fail(args: argparse.Namespace, exc: BaseException, line: str, code: int) -> int:
    """Print one line about ``exc`` (and its traceback with -v); return the exit code."""
    if args.verbose:
        traceback.print_exception(exc, file=sys.stderr)
    hint = "" if args.verbose or code != 1 else " (-v for the traceback)"
    first = line.splitlines()[0] if line else line
    print(f"hep-executor {args.command}: {first}{hint}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
