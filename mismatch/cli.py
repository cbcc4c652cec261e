"""The ``mismatch`` command: parses arguments and calls the library; no logic of its own."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

DESCRIPTION = """\
Semi-supervised medical image segmentation studies: MisMatch and its baselines (supervised,
mean teacher, FixMatch, CCT, ...) trained on 2D slices of NIfTI volumes. Check and prepare a
dataset (`data`), train one trial (`train`), run a whole study file of methods x labelled
counts x folds on Ray Tune with resume (`study run`), tune hyper-parameters with Optuna
(`search`), and turn the results into one HTML report with tables and statistical tests
(`report`). Every command prints its own help with an example: mismatch COMMAND --help."""

EPILOG = """\
examples:
  mismatch data synth vessels data/vessels          # a small synthetic dataset
  mismatch train --data-root data/vessels --epochs 2
  mismatch study run studies/quickstart.yaml        # 12 small trials on this machine
  mismatch report runs/quickstart                   # writes reports/quickstart/index.html
docs: README.md (quickstart), docs/studies.md, docs/data.md"""


def _verb(sub: argparse._SubParsersAction, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    """A sub-command whose help ends with worked examples (kept as written)."""
    return sub.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".",
                          epilog="examples:\n" + examples, formatter_class=argparse.RawDescriptionHelpFormatter)


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Spec keys given as dedicated flags, as dotted paths."""
    flags = {
        "study": args.study,
        "data.root": args.data_root,
        "data.prepared": args.data_prepared,
        "data.synthetic.kind": args.synthetic,
        "method.name": args.method,
        "method.model": args.model,
        "method.alpha": args.alpha,
        "protocol.fold": args.fold,
        "protocol.labelled_slices": args.labelled_slices,
        "train.epochs": args.epochs,
        "train.seed": args.seed,
        "train.device": args.device,
    }
    return {k: v for k, v in flags.items() if v is not None}


def build_train_spec(args: argparse.Namespace) -> Any:
    """A TrialSpec from an optional YAML file, the dedicated flags and ``--set key=value``."""
    from mismatch.config import SpecError, load_trial_spec, parse_yaml, set_dotted

    tree: dict[str, Any] = {}
    source = None
    if args.spec:
        source = str(args.spec)
        try:
            tree = parse_yaml(Path(args.spec).read_text()) or {}
        except (OSError, yaml.YAMLError, RecursionError) as err:
            raise SpecError(f"cannot read spec {args.spec}: {err}") from None
    tree.setdefault("method", {"name": "mismatch"})
    if "data" not in tree and not args.data_root and not args.data_prepared:
        tree["data"] = {"synthetic": {"kind": "vessels"}}
    for dotted, value in _train_overrides(args).items():
        set_dotted(tree, dotted, value)
    for item in args.set or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SpecError(f"--set expects key=value, got {item!r}")
        set_dotted(tree, key, yaml.safe_load(raw))
    return load_trial_spec(tree, source=source)


def cmd_train(args: argparse.Namespace) -> int:
    """Run one trial and write its Parquet rows."""
    from mismatch.study.store import write_result
    from mismatch.study.worker import write_failed_row
    from mismatch.summary import format_summary
    from mismatch.trial.run import run_trial
    from mismatch.trial.state import NON_FINITE_ERRORS, PERMANENT_ERRORS

    spec = build_train_spec(args)
    if args.dry_run:
        missing = _missing_data_root(spec)
        if missing:
            print(f"error: no dataset at {missing}; run `mismatch data synth vessels {missing}` first "
                  "(or give --data-root an existing dataset)", file=sys.stderr)
            return 1
        print(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
        return 0
    try:
        result = run_trial(spec, on_epoch_end=_print_epoch if not args.quiet else None)
    except PERMANENT_ERRORS as err:  # the failed row a study would store for this trial
        folder = write_failed_row(args.out, spec, err)
        print(f"error: trial {spec.trial_id()} failed: {err} (recorded in {folder}/trials/)", file=sys.stderr)
        return 1 if isinstance(err, NON_FINITE_ERRORS) else 2
    folder = write_result(args.out, result)
    print(format_summary(result, folder))
    return 0


def _missing_data_root(spec: Any) -> str | None:
    """The spec's local ``data.root`` where that folder does not exist (a URL is not checked)."""
    root = spec.data.root
    if root is None or "://" in str(root) or Path(root).expanduser().is_dir():
        return None
    return str(root)


def _print_epoch(report: Any) -> None:
    losses = " ".join(f"{k}={v:.4g}" for k, v in report.losses.items())
    print(f"epoch {report.epoch + 1}: {losses} val_iou={report.val['val_iou']:.4f} ({report.time_s:.1f}s)", flush=True)


ERF_UNITS = ("radius and rms_radius in pixels (from the centre pixel); area: pixels in the disc; "
             "edge_mass: share of the ERF on the outermost pixel ring (not small: raise --size)")
ERF_UNITS_3D = ("3D blocks: radius and rms_radius in voxels (from the centre voxel); area: voxels in the sphere; "
                "edge_mass: share of the ERF on the outermost voxel shell (not small: raise --size)")
# Probe settings by dims (channels, size, inits, inputs): 3D probes cost about size times more.
ERF_DEFAULTS = {2: (24, 33, 8, 8), 3: (16, 25, 4, 4)}


def cmd_erf(args: argparse.Namespace) -> int:
    """Measure the effective receptive fields of the block branches (a progress line per probe)."""
    import time

    from mismatch.models.erf import format_erf_table, measure_erf

    defaults = ERF_DEFAULTS[args.dims]
    channels, size, inits, inputs = (given if given is not None else default for given, default in
                                     zip((args.channels, args.size, args.inits, args.inputs), defaults))
    probes = [(depth, branch) for depth in args.depths for branch in args.branches]
    rows = []
    for i, (depth, branch) in enumerate(probes):
        start = time.perf_counter()
        rows.append(measure_erf(branch, depth=depth, channels=channels, size=size, n_inits=inits,
                                n_inputs=inputs, seed=args.seed, norm_stats=args.norm_stats,
                                spatial_dims=args.dims))
        print(f"[{i + 1}/{len(probes)}] {branch} at depth {depth}: {time.perf_counter() - start:.1f} s",
              file=sys.stderr, flush=True)
    print(format_erf_table(rows))
    print(ERF_UNITS if args.dims == 2 else ERF_UNITS_3D)
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    """Write a synthetic phantom dataset in the MSD / nnU-Net raw layout (or an h5 benchmark layout)."""
    from mismatch.data import write_synthetic_dataset
    from mismatch.data.synth import synth_defaults

    cases, size, slices = synth_defaults(args.kind)
    cases = cases if args.cases is None else args.cases
    out = write_synthetic_dataset(
        args.out, args.kind, cases=cases, size=size if args.size is None else tuple(args.size),
        slices=slices if args.slices is None else args.slices, seed=args.seed, overwrite=args.overwrite,
    )
    what = f"patients ({2 * cases} volumes)" if args.kind == "acdc-h5" else "cases"
    print(f"wrote {cases} {args.kind} {what} to {out}")
    return 0


def _data_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """DataSpec fields given as flags or ``--set key=value`` (over the preset's values)."""
    flags = {
        "foreground_labels": args.foreground_labels,
        "label_values": args.label_values,
        "min_foreground": getattr(args, "min_foreground", None),
        "crop": getattr(args, "crop", None),
        "crop_size": getattr(args, "crop_size", None),
        "context_slices": getattr(args, "context_slices", None),
    }
    out = {k: v for k, v in flags.items() if v is not None}
    for item in getattr(args, "set", None) or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        out[key.removeprefix("data.")] = yaml.safe_load(raw)
    return out


def _print_progress(i: int, n: int, case_id: str) -> None:
    print(f"[{i + 1}/{n}] {case_id}", file=sys.stderr, flush=True)


def cmd_check(args: argparse.Namespace) -> int:
    """Check a raw dataset; print every problem as 'file: problem'; exit 1 if any."""
    from mismatch.data.check import check_dataset
    from mismatch.data.layouts import check_foreground
    from mismatch.data.presets import data_spec_for

    overrides = _data_overrides(args)
    every_class = check_foreground(args.layout)
    if every_class is not None and args.preset is None and "foreground_labels" not in overrides:
        overrides["foreground_labels"] = every_class  # multi-class: a case is empty only without any class
    spec = data_spec_for(args.layout, args.raw_dir, args.preset, overrides)
    report = check_dataset(spec.layout, args.raw_dir, label_values=spec.label_values,
                           foreground_labels=spec.foreground_labels, allow_empty=args.allow_empty,
                           progress=_print_progress if args.progress else None)
    for problem in report.problems:
        print(problem)
    if report.ok:
        print(f"ok: {len(report.cases)} {args.layout} cases in {args.raw_dir}, no problem found")
        return 0
    print(f"{len(report.problems)} problem(s); cases with problems: {len(report.bad_cases())} of {len(report.cases)}",
          file=sys.stderr)
    return 1


def cmd_prepare(args: argparse.Namespace) -> int:
    """Check and prepare a raw dataset into a prepared-slice cache a study can name."""
    from mismatch.data.cache import prepare_dataset
    from mismatch.data.errors import DataCheckError
    from mismatch.data.presets import data_spec_for

    spec = data_spec_for(args.layout, args.raw_dir, args.preset, _data_overrides(args))
    try:
        result = prepare_dataset(spec, args.prepared_dir, dtype=args.dtype, allow_empty=args.allow_empty,
                                 force=args.force, overwrite=args.overwrite,
                                 progress=None if args.quiet else _print_progress)
    except DataCheckError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        print(f"{len(err.problems)} problem(s) in {args.raw_dir}: nothing was written", file=sys.stderr)
        return 1
    for tmp in result.removed_stale:
        print(f"removed {tmp}: left by an earlier prepare that was killed")
    if result.up_to_date:
        print(f"{result.path} is up to date ({result.cases} cases, {result.samples} samples): nothing to do")
    else:
        print(f"prepared {result.cases} cases ({result.samples} samples) into {result.path} in {result.seconds:.1f} s")
    print("a study names it with:")
    print(yaml.safe_dump({"data": result.study_data}, sort_keys=False).rstrip())
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    """List the data and protocol presets with their values."""
    from mismatch.data.presets import describe_presets

    print(describe_presets())
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """List the registered networks with their dims, width and parameter counts."""
    from mismatch.models import build_model, list_models, network_card

    for name in list_models():
        card = network_card(name)
        width = args.width or card.default_width
        net = build_model(name, in_channels=args.in_channels, width=width)
        print(f"{name:8s} {card.spatial_dims}D  w={width:<3d} {sum(p.numel() for p in net.parameters()):>12,d}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Build a study's HTML report and write its tables as CSV, Markdown and LaTeX (figures on request)."""
    from mismatch.report import build_report
    from mismatch.report.export import FigureExportError

    try:
        index = build_report(
            args.results, args.out, metric=args.metric, figures=args.figures, at=args.at,
            calibration_at=args.calibration_at,
            reference=args.reference, mwu_alternative=args.mwu_alternative, mwu_method=args.mwu_method,
            max_points=args.max_points, visual_slices=args.visual_slices, exclude_empty=args.exclude_empty,
            title=args.title,
        )
    except (FileNotFoundError, ValueError, FigureExportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {Path(index).resolve()}")
    if args.figures:
        print(f"wrote figures to {(Path(index).parent / 'figures').resolve()}")
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = _verb(sub, "report", "a study's rows -> one HTML page, tables as CSV / Markdown / LaTeX",
              "  mismatch report runs/quickstart                 # writes reports/quickstart/index.html\n"
              "  mismatch report runs/carve_table1 --metric dice --at 40 --out reports/table1-dice\n"
              "  mismatch report runs/quickstart --figures pdf      # also reports/quickstart/figures/*.pdf")
    p.add_argument("results", help="a study folder <storage>/<study>/ or a Parquet file of per-image rows")
    p.add_argument("--out", help="output folder (default: reports/<study>/)")
    p.add_argument("--metric", choices=["iou", "dice", "mean_dice_2class"], default="iou",
                   help="foreground IoU (default), foreground Dice, or the authors' two-class mean Dice")
    p.add_argument("--at", type=int, help="count of Table III (default: the largest with reference results)")
    p.add_argument("--calibration-at", type=int, help="count of Figs. 7-9 (default: --at)")
    p.add_argument("--reference", default="mismatch", help="method (or column) tested against every other")
    p.add_argument("--mwu-alternative", choices=["two-sided", "less", "greater"], default="two-sided",
                   help="Mann-Whitney sidedness; the paper's: greater")
    p.add_argument("--mwu-method", choices=["auto", "exact", "asymptotic"], default="auto",
                   help="auto: exact for small samples without ties; the paper's: asymptotic")
    p.add_argument("--max-points", type=int, default=3000, help="most images drawn per method in Fig. 9")
    p.add_argument("--visual-slices", type=int, default=4, help="slices shown in Fig. 7")
    p.add_argument("--exclude-empty", action="store_true", help="drop test images with an empty ground truth")
    p.add_argument("--title", help="page title (default: 'Study report: <study>')")
    p.add_argument("--figures", choices=["svg", "pdf", "png"],
                   help="also write every figure to <out>/figures/ in this format, one manuscript style "
                        "(needs kaleido and Chrome/Chromium; BROWSER_PATH picks the browser)")
    p.set_defaults(func=cmd_report)


def cmd_methods(args: argparse.Namespace) -> int:
    """List the registered training methods with their reference and parameter count."""
    from mismatch.methods.describe import describe_methods, format_methods

    print(format_methods(describe_methods(width=args.width, in_channels=args.in_channels)))
    return 0


def _add_methods(sub: argparse._SubParsersAction) -> None:
    p = _verb(sub, "methods", "list registered methods, their references and parameter counts",
              "  mismatch methods\n  mismatch methods --width 32 --in-channels 3")
    p.add_argument("--width", type=int, help="channels of the first level (default: each network's own, "
                                             "24 in 2D, 16 in 3D)")
    p.add_argument("--in-channels", type=int, default=1, help="input channels (default: 1)")
    p.set_defaults(func=cmd_methods)


def cmd_study_run(args: argparse.Namespace) -> int:
    """Run the trials of a study file that have no stored result yet (in rounds of seeds with
    ``--until-decided``)."""
    from mismatch.study.best import record_tuning
    from mismatch.study.trials import load_study

    study = load_study(args.file, args.profile, args.storage)
    if args.tracking is not None:
        from mismatch.tracking.config import TrackingSpec

        study.file = study.file.model_copy(update={"tracking": TrackingSpec(kind=args.tracking)})
    record_tuning(study)  # the searches it trains with, for the report's leakage check and ledger
    if args.max_seeds is not None and not args.until_decided:
        print("error: --max-seeds needs --until-decided", file=sys.stderr)
        return 2
    if args.until_decided:
        from mismatch.study.sequential import run_until_decided

        return run_until_decided(study, args.max_seeds, lambda s: _run_once(s, args), sys.stdout)
    return _run_once(study, args)


def _run_once(study: Any, args: argparse.Namespace) -> int:
    """One `study run` of ``study``'s missing trials; the command's exit code."""
    from mismatch.study.lock import LockHeld
    from mismatch.study.resources import ResourceError  # torch and Ray only once the file is known good
    from mismatch.study.runner import run_study
    from mismatch.tracking import TrackingError

    try:
        outcome = run_study(study, address=args.address, verbose=args.verbose, retry_failed=args.retry_failed,
                            wait_resources_s=args.wait_resources, stale_lock_s=args.stale_lock_after,
                            fuse=args.fuse)
    except (LockHeld, ResourceError, TrackingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 130 if outcome.unfinished else 1 if outcome.failed or outcome.failed_before else 0


def _fuse_arg(text: str) -> int | str:
    """``--fuse K|auto`` (argparse turns the ValueError's message into a usage error)."""
    from mismatch.study.study_file import parse_fuse

    try:
        return parse_fuse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def cmd_study_status(args: argparse.Namespace) -> int:
    """Print done / running / failed / pending trials and an ETA (and the rounds of a sequential study)."""
    from mismatch.study.sequential import current_round, read_state, status_line, with_seeds
    from mismatch.study.status import format_eta, study_status
    from mismatch.study.trials import load_study

    study = load_study(args.file, args.profile, args.storage)
    state = read_state(study.storage, study.name)
    if state is not None:  # count the trials of the round in progress (or the last one run)
        study = with_seeds(study, current_round(state))
    st = study_status(study, study.storage)
    print(f"{study.name}: {st.total} trials: {st.done} done, {st.running} running, {st.failed} failed, "
          f"{st.pending} pending; ETA {format_eta(st.eta_s)}")
    for trial_id, error in st.failures:
        print(f"  failed {trial_id}: {error}")
    for item in st.corrupt:
        print(f"  corrupt {item.path}: {item.error} (trial {item.trial_id} counts as pending; "
              "`mismatch study run` moves the file to quarantine/ and runs it again)")
    if state is not None:
        print(status_line(state))
    return 0


def cmd_study_plan(args: argparse.Namespace) -> int:
    """Size a study before it runs: trials, device-hours, variance components, MDD, seeds needed."""
    from mismatch.study.plan import check_target, format_plan, pilot_path, plan_study
    from mismatch.study.trials import load_study

    check_target(args.target_mdd)
    study = load_study(args.file, args.profile, args.storage)
    pilot = pilot_path(args.pilot, study) if args.pilot else None
    print(format_plan(plan_study(study, pilot, args.target_mdd)))
    return 0


def cmd_study_export(args: argparse.Namespace) -> int:
    """Merge a study's per-image rows into one Parquet file."""
    from mismatch.study.store import export_images
    from mismatch.study.trials import load_study

    study = load_study(args.file, args.profile, args.storage)
    rows = export_images(study.storage, study.name, args.out)
    print(f"wrote {rows} per-image rows to {args.out}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """Run (or resume) the Optuna searches of a study file; write best.json."""
    from mismatch.study.search import ALPHA, run_search
    from mismatch.study.trials import load_study

    if len(args.target) > 2 or (len(args.target) == 2 and args.target[0] != ALPHA):
        print("error: usage: mismatch search [alpha] FILE", file=sys.stderr)
        return 2
    param, file = (ALPHA, args.target[1]) if len(args.target) == 2 else (None, args.target[0])
    study = load_study(file, args.profile, args.storage)
    if study.file.search is None or (param and study.file.search.param != param):
        print(f"error: {file} has no search{f' of {param!r}' if param else ''} (a 'search:' section)", file=sys.stderr)
        return 2
    from mismatch.study.lock import LockHeld
    from mismatch.study.resources import ResourceError

    try:
        best = run_search(study, address=args.address, verbose=args.verbose, param=param)
    except (LockHeld, ResourceError) as err:  # another driver holds the study; a trial could never start
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, found in best["methods"].items():
        values = ", ".join(f"{k} = {v:.6g}" if isinstance(v, float) else f"{k} = {v}" for k, v in found["params"].items())
        print(f"[{study.name}] {name}: best {values} (mean validation IoU {found['objective']:.4f} over folds "
              f"{best['folds']}, {found['candidates']} candidates)")
    print(f"[{study.name}] written to {study.storage}/{study.name}/best.json")
    return 0


def _add_search(sub: argparse._SubParsersAction) -> None:
    p = _verb(sub, "search", "Optuna searches on Ray Tune: every method of a study file, the same budget "
                             "each (`search alpha FILE`: the first method's alpha)",
              "  mismatch search studies/tuning.yaml --profile smoke   # writes runs/tuning-smoke/best.json\n"
              "  mismatch search alpha studies/alpha_search.yaml")
    p.add_argument("target", nargs="+", metavar="[alpha] FILE",
                   help="study file with a 'search:' section, optionally preceded by 'alpha'")
    p.add_argument("--profile", help="a profile of the study file, e.g. smoke")
    p.add_argument("--storage", help="results storage: a folder or a URI (default: the file's 'storage')")
    p.add_argument("--address", help="a running Ray cluster (default: start an embedded local Ray)")
    p.add_argument("--verbose", action="store_true", help="Ray's own tables and logs")
    p.set_defaults(func=cmd_search)


STUDY_EXAMPLES = {
    "run": "  mismatch study run studies/quickstart.yaml --profile smoke   # a laptop-sized run\n"
           "  mismatch study run studies/carve_table1.yaml --address auto --storage s3://BUCKET/PATH",
    "status": "  mismatch study status studies/quickstart.yaml",
    "plan": "  mismatch study plan studies/la_ssl.yaml\n"
            "  mismatch study plan studies/quickstart.yaml --pilot runs/quickstart-smoke --target-mdd 2",
    "export": "  mismatch study export studies/quickstart.yaml --out quickstart.parquet",
}


def _add_study(sub: argparse._SubParsersAction) -> None:
    from mismatch.tracking.config import TRACKERS  # pydantic only: no tracker package loads

    p = _verb(sub, "study", "run a study file on Ray Tune; status; export",
              "  mismatch study run studies/quickstart.yaml --profile smoke\n"
              "  mismatch study status studies/quickstart.yaml")
    study_sub = p.add_subparsers(dest="study_command", required=True)
    for name, func, text in (("run", cmd_study_run, "run the study's missing trials"),
                             ("status", cmd_study_status, "done / running / failed / pending and ETA"),
                             ("plan", cmd_study_plan, "trials, device-hours, variance components, MDD and the "
                                                      "seeds a decision needs, before anything runs"),
                             ("export", cmd_study_export, "merge the per-image rows into one Parquet file")):
        s = _verb(study_sub, name, text, STUDY_EXAMPLES[name])
        s.add_argument("file", help="study file (YAML)")
        s.add_argument("--profile", help="a profile of the study file, e.g. smoke")
        s.add_argument("--storage", help="results storage: a folder or a URI (default: the file's 'storage')")
        s.set_defaults(func=func)
        if name == "run":
            s.add_argument("--address", help="a running Ray cluster (default: start an embedded local Ray)")
            s.add_argument("--verbose", action="store_true", help="Ray's own tables and logs")
            s.add_argument("--retry-failed", action="store_true", help="run trials that failed for good again")
            s.add_argument("--tracking", choices=TRACKERS.names(), default=None,
                           help="the experiment tracker for this run, overriding the study file's 'tracking' "
                                "(e.g. none for a quick run; default: the file's, mlflow if it names none)")
            s.add_argument("--wait-resources", type=float, default=300, metavar="SECONDS",
                           help="with --address: how long to wait for a node that fits one trial's "
                                "'resources' (an autoscaler may add one) before failing (default: 300)")
            s.add_argument("--fuse", type=_fuse_arg, default=None, metavar="K|auto",
                           help="train up to K compatible trials as one fused group (one Ray trial), "
                                "overriding the file's resources.fuse; auto: K from memory (default: the file's, 1)")
            s.add_argument("--until-decided", action="store_true",
                           help="run seeds in rounds (the file's seeds, then one more per round) until every "
                                "comparison is decided by a group-sequential test (O'Brien-Fleming alpha spending); "
                                "state in <storage>/<study>/sequential.json, resumable")
            s.add_argument("--max-seeds", type=int, default=None, metavar="N",
                           help="with --until-decided: the most seeds per (fold, count) (default: the file's + 3)")
            s.add_argument("--stale-lock-after", type=float, default=300, metavar="SECONDS",
                           help="take over another driver's lock on this study after this long without "
                                "its heartbeat (default: 300; a dead pid on this host at once)")
        if name == "export":
            s.add_argument("--out", required=True, help="merged Parquet file")
        if name == "plan":
            s.add_argument("--pilot", metavar="STORAGE",
                           help="a pilot's study folder (or the storage holding this study's folder): its trial times "
                                "and variances replace the estimates")
            s.add_argument("--target-mdd", type=float, default=None, metavar="POINTS",
                           help="the difference (points, percent of the metric) the study should detect; prints the "
                                "seeds or folds that reach it")


def _names(kind: str) -> str:
    """The registered names of ``kind`` for a help text (the registries are the authority)."""
    from mismatch.config import DATA_PRESETS, LAYOUTS, METHODS
    from mismatch.models.catalog import NETWORKS

    registry = {"methods": METHODS, "networks": NETWORKS, "layouts": LAYOUTS, "data presets": DATA_PRESETS}[kind]
    return " | ".join(registry.names())


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = _verb(sub, "train", "train and evaluate one trial, write its Parquet rows",
              "  mismatch data synth vessels data/vessels    # once: a small synthetic dataset\n"
              "  mismatch train --data-root data/vessels --method mismatch --fold 0 --epochs 5\n"
              "  mismatch train trial.yaml --set method.alpha=0.004 --dry-run   # print the resolved spec")
    p.add_argument("spec", nargs="?", help="YAML trial spec (optional: flags alone give a synthetic-phantom trial)")
    p.add_argument("--out", default="runs", help="results storage: a folder or a URI (default: runs)")
    p.add_argument("--study", help="study name: the results folder under --out (default: the spec's)")
    p.add_argument("--data-root", help="a dataset in the MSD / nnU-Net raw layout")
    p.add_argument("--data-prepared", help="a prepared-slice cache written by `mismatch data prepare`")
    p.add_argument("--synthetic", choices=["vessels", "tumours"], help="train on a generated phantom")
    p.add_argument("--method", help=f"training method: {_names('methods')}")
    p.add_argument("--model", help=f"network (methods accept them by capability): {_names('networks')}")
    p.add_argument("--alpha", type=float, help="weight of the method's unsupervised loss (method.alpha)")
    p.add_argument("--fold", type=int, help="cross-validation fold (protocol.fold)")
    p.add_argument("--labelled-slices", type=int, help="labelled training slices (protocol.labelled_slices)")
    p.add_argument("--epochs", type=int, help="training epochs (train.epochs)")
    p.add_argument("--seed", type=int, help="random seed (train.seed)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where to train (default: auto, a GPU if any)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any spec key, e.g. train.batch_size=4")
    p.add_argument("--dry-run", action="store_true", help="print the resolved spec and exit")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    p.set_defaults(func=cmd_train)


def _add_erf(sub: argparse._SubParsersAction) -> None:
    p = _verb(sub, "erf", "measure effective receptive fields (Luo et al. 2016) of the block branches",
              "  mismatch erf\n  mismatch erf --branches pasb nasb --depths 0 8 --size 49 --inits 4\n"
              "  mismatch erf --dims 3    # the 3D blocks of unet3d / mm3d (about 40 s)")
    p.add_argument("--branches", nargs="+", default=["main", "pasb", "nasb"],
                   help="main | pasb | nasb (side branches) | plain | pasb-block | nasb-block")
    p.add_argument("--depths", type=int, nargs="+", default=[0, 4, 8],
                   help="plain 3x3 conv layers before the branch (the paper's n)")
    p.add_argument("--dims", type=int, choices=[2, 3], default=2,
                   help="2: the 2D blocks (default); 3: the 3D blocks on a size^3 volume")
    p.add_argument("--channels", type=int, help="channels of every layer (default: 24 in 2D, 16 in 3D)")
    p.add_argument("--size", type=int, help="probe image size (odd: a true centre pixel; default: 33 in 2D, 25 in 3D)")
    p.add_argument("--inits", type=int, help="random initialisations (default: 8 in 2D, 4 in 3D)")
    p.add_argument("--inputs", type=int, help="random inputs per initialisation (default: 8 in 2D, 4 in 3D)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--norm-stats", choices=["frozen", "live"], default="frozen",
                   help="treat InstanceNorm statistics as constants in the backward pass (see docs/models.md)")
    p.set_defaults(func=cmd_erf)


def _add_recipe_flags(s: argparse.ArgumentParser, prepare: bool) -> None:
    s.add_argument("layout", help=f"dataset layout: {_names('layouts')}")
    s.add_argument("raw_dir", help="the raw dataset folder (see docs/data.md for each layout's tree)")
    if prepare:
        s.add_argument("prepared_dir", help="where the prepared cache is written")
    s.add_argument("--preset", help=f"{_names('data presets')} (default: the layout's; "
                                    "`mismatch data presets` lists them)")
    s.add_argument("--foreground-labels", type=int, nargs="+", metavar="L", help="label values that are foreground")
    s.add_argument("--label-values", type=int, nargs="+", metavar="L",
                   help="label values allowed in the files (default: the layout's / dataset.json)")
    s.add_argument("--allow-empty", action="store_true", help="a case without foreground is not a problem")
    if prepare:
        s.add_argument("--crop", choices=["none", "corners", "random-corner", "centre"],
                       help="how slices are cropped (default: the preset's)")
        s.add_argument("--crop-size", type=int, help="side of the crop in pixels (default: the preset's)")
        s.add_argument("--context-slices", type=int, choices=[1, 3],
                       help="input slices per sample: 1, or 3 (the slice and its neighbours)")
        s.add_argument("--min-foreground", type=int, help="keep slices with MORE foreground pixels than this")
        s.add_argument("--set", action="append", metavar="KEY=VALUE", help="any data spec key, e.g. clip=[-1000,400]")
        s.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                       help="storage of the prepared images (float16 halves the size; not bit-identical)")
        s.add_argument("--force", action="store_true", help="prepare again even if the cache is up to date")
        s.add_argument("--overwrite", action="store_true", help="replace a non-empty folder that is not a cache")
        s.add_argument("--quiet", action="store_true", help="no per-case progress lines")
    else:
        s.add_argument("--progress", action="store_true", help="a line per case on stderr")


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = _verb(sub, "data", "datasets: check, prepare, presets, synthetic phantoms",
              "  mismatch data synth vessels data/vessels\n  mismatch data check msd data/vessels")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    c = _verb(data_sub, "check", "list every problem of a raw dataset (exit status 1 if any)",
              "  mismatch data check carve14 ~/data/CARVE14\n  mismatch data check msd data/vessels --progress")
    _add_recipe_flags(c, prepare=False)
    c.set_defaults(func=cmd_check)
    r = _verb(data_sub, "prepare", "check a raw dataset and write a prepared-slice cache a study can name",
              "  mismatch data prepare carve14 ~/data/CARVE14 data/carve14-prepared --preset carve\n"
              "  mismatch data prepare msd data/vessels data/vessels-prepared --dtype float16")
    _add_recipe_flags(r, prepare=True)
    r.set_defaults(func=cmd_prepare)
    _verb(data_sub, "presets", "list the data and protocol presets",
          "  mismatch data presets").set_defaults(func=cmd_presets)
    s = _verb(data_sub, "synth", "write a synthetic phantom dataset (MSD layout, or the LA / ACDC h5 layouts)",
              "  mismatch data synth vessels data/vessels\n"
              "  mismatch data synth tumours data/tumours --cases 20 --size 96 96 --slices 32\n"
              "  mismatch data synth la2018-h5 data/la --cases 10   # then: mismatch data check la2018-h5 data/la\n"
              "  mismatch data synth organs3d data/organs3d         # 3D, three classes: 12 cases of 48x64x64")
    s.add_argument("kind", choices=["vessels", "tumours", "organs3d", "la2018-h5", "acdc-h5"],
                   help="phantom: thin vessels or round tumours (MSD layout), 3D kidneys with three nested "
                        "classes (organs3d, MSD layout), an LA-like atrium (la2018-h5 layout) or a "
                        "three-class ACDC-like heart (acdc-h5 layout)")
    s.add_argument("out", help="output folder (a dataset in the MSD layout, or in the layout the kind names)")
    s.add_argument("--cases", type=int,
                   help="number of cases, patients for acdc-h5 (default: 10; organs3d: 12)")
    s.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="slice height and width in pixels (default: 64 64)")
    s.add_argument("--slices", type=int, help="slices per case (default: 24; organs3d: 48)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    s.set_defaults(func=cmd_synth)


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = _verb(sub, "models", "list registered networks and their parameter counts",
              "  mismatch models\n  mismatch models --width 32")
    p.add_argument("--width", type=int, help="channels of the first level (default: each network's own, "
                                             "24 in 2D, 16 in 3D)")
    p.add_argument("--in-channels", type=int, default=1, help="input channels (default: 1)")
    p.set_defaults(func=cmd_models)


def _version() -> str:
    """The installed package's version (read from its metadata: imports nothing heavy)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mismatch")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from mismatch import __version__

        return __version__


def make_parser() -> argparse.ArgumentParser:
    """The ``mismatch`` argument parser."""
    parser = argparse.ArgumentParser(prog="mismatch", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}",
                        help="print the installed version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    adders: list[Callable[[argparse._SubParsersAction], None]] = [
        _add_study, _add_search, _add_train, _add_report, _add_erf, _add_data, _add_models, _add_methods,
    ]
    for add in adders:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mismatch`` console script."""
    from mismatch.config import SpecError
    from mismatch.data.errors import DataError

    args = make_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (SpecError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `| head` closed the pipe: the reader has what it wanted
        return 0
    except OSError as err:
        from mismatch.atomic import as_disk_full, is_disk_full

        if not is_disk_full(err):
            raise
        print(f"error: {as_disk_full(err, err.filename or 'the output')}", file=sys.stderr)
        return 1


def run() -> None:
    """The console script and ``python -m mismatch``: :func:`main`, then leave without the
    interpreter's teardown of its modules.

    Tearing down torch, Ray, pandas and pyarrow takes about a second after a command has done
    its work (measured: 1.2 s after `study run`, 0.5 s after importing torch alone). Exit
    handlers still run (Ray's shutdown, logging's flush, a tracker's end of run); a command that
    left a non-daemon thread running, or raised, exits the normal way.
    """
    import atexit
    import os
    import threading

    code = main()
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if others:
        sys.exit(code)
    atexit._run_exitfuncs()  # documented as private, but the one way to run exit handlers before os._exit
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`) or stream: nothing left to say
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
