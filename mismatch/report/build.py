"""``build_report``: a study's Parquet rows -> ``index.html`` plus every table as CSV/Markdown/LaTeX
(``tables/``) and, on request, every figure as SVG/PDF/PNG (``figures/``)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from plotly.offline import get_plotlyjs

from mismatch.atomic import disk_full_names, write_atomic
from mismatch.report import comparison, sections, tuning
from mismatch.report.aggregate import METRICS, image_subset, per_trial
from mismatch.report.cases import case_values
from mismatch.report.design import REFERENCE_METHOD, detect_design
from mismatch.report.export import FORMATS, export_figures
from mismatch.report.html import Section, bullets, page, paragraph
from mismatch.report.load import StudyData, load_study
from mismatch.report.paper_tables import default_at
from mismatch.report.sequential import apply_sequential, read_sequential
from mismatch.report.stats import ALTERNATIVES
from mismatch.report.table_format import Table, write_table

MWU_METHODS = ("auto", "exact", "asymptotic")


@dataclass(frozen=True)
class ReportOptions:
    """How the report is computed (every option is printed in its provenance section).

    ``at``: count of Table III (default: the largest where the reference has results);
    ``calibration_at``: count of Figs. 7-9 (default: ``at``); ``reference``: the method (or
    column key) tested against every other column; ``mwu_alternative``/``mwu_method``: the
    Mann-Whitney variant (the paper's: ``greater``/``asymptotic``); ``max_points``: most
    per-image points drawn per method in Fig. 9; ``visual_slices``: slices in Fig. 7;
    ``exclude_empty``: drop test images whose ground truth is empty.
    """

    metric: str = "iou"
    at: int | None = None
    calibration_at: int | None = None
    reference: str = REFERENCE_METHOD
    mwu_alternative: str = "two-sided"
    mwu_method: str = "auto"
    max_points: int = 3000
    visual_slices: int = 4
    exclude_empty: bool = False
    title: str | None = None

    def validate(self) -> None:
        """Raise ValueError naming the first bad option."""
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.mwu_alternative not in ALTERNATIVES:
            raise ValueError(f"mwu_alternative must be one of {', '.join(ALTERNATIVES)}")
        if self.mwu_method not in MWU_METHODS:
            raise ValueError(f"mwu_method must be one of {', '.join(MWU_METHODS)}")
        if self.max_points < 1 or self.visual_slices < 0:
            raise ValueError("max_points must be >= 1 and visual_slices >= 0")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "study"


def study_name(data: StudyData) -> str:
    """The study's name from its rows, else the name of the input path."""
    rows = data.trials if data.trials is not None else data.images
    names = rows["study"].dropna().unique() if "study" in rows else []
    if len(names) == 1 and str(names[0]) not in ("", "unknown"):
        return str(names[0])
    return Path(data.source.rstrip("/")).stem or "study"


def _check_value(value: int | None, allowed: tuple[int, ...], name: str) -> None:
    if value is not None and value not in allowed:
        raise ValueError(f"{name}={value} is not a count of this study; counts: {', '.join(map(str, allowed))}")


def make_context(data: StudyData, opts: ReportOptions) -> sections.Context:
    """Aggregate rows, detect the design and resolve the counts the sections use."""
    trials = per_trial(data, opts.metric, opts.exclude_empty)
    design = detect_design(trials, opts.reference)
    _check_value(opts.at, design.axis_values, "at")
    _check_value(opts.calibration_at, design.axis_values, "calibration_at")
    at = opts.at if opts.at is not None else default_at(trials, design)
    cal = opts.calibration_at if opts.calibration_at is not None else at
    options = {k: v for k, v in dataclasses.asdict(opts).items() if k != "title"}
    options.update(at=at, calibration_at=cal)
    images = image_subset(data, opts.exclude_empty)
    ctx = sections.Context(data, images, trials, design, opts.metric, METRICS[opts.metric], at, cal, options)
    ctx.cases = case_values(data, images, trials, opts.metric, use_cases_table=not opts.exclude_empty)
    if ctx.cases is not None:
        ctx.units = comparison.all_units(ctx.cases.frame, trials, design)
        ctx.intervals = comparison.cell_intervals(ctx.units, design)
        ctx.comparisons = comparison.comparison_rows(ctx.units, design)
        ctx.sequential = read_sequential(data)
        if ctx.sequential is not None and not ctx.comparisons.empty:
            ctx.comparisons = apply_sequential(ctx.comparisons, ctx.sequential, design.axis)
    return ctx


def _overview(ctx: sections.Context, name: str) -> Section:
    d, t = ctx.design, ctx.trials
    status = t["status"].value_counts()
    facts = [
        f"Study {name}: {len(t)} trials ({status.get('completed', 0)} completed, {status.get('failed', 0)} failed, "
        f"{status.get('no-images', 0)} without image rows), {len(ctx.images):,} per-image rows.",
        f"Metric: {ctx.metric_label}. Rows vary {d.axis} ({', '.join(map(str, d.axis_values))}); "
        f"replicates are {d.replicate}s ({len(d.replicates)}).",
        f"Reference method: {d.reference.key if d.reference else 'none found'}; Table III at {d.axis_label} = "
        f"{ctx.at}; calibration and visual results at {ctx.calibration_at}.",
        f"Columns: {', '.join(c.key for c in d.columns)}.",
    ]
    body = [bullets(facts)]
    if ctx.data.corrupt:  # read errors of trials/ and images/ files are known by now
        body.append(paragraph(f"{len(ctx.data.corrupt)} corrupt results files were left out: "
                              f"{', '.join(ctx.data.corrupt)} (details under What is missing).", "warn"))
    return Section("overview", "Overview", body)


def _tuning_section(ctx: sections.Context) -> sections.Built:
    return tuning.tuning_section(ctx.data, ctx.data.trials)


def render(ctx: sections.Context, name: str, title: str) -> tuple[str, list[Table]]:
    """The page and the tables it shows."""
    builders = [sections.main_section, sections.significance_section, sections.rank_section, sections.runs_section,
                sections.curves_section, sections.ablation_section, sections.calibration_section, sections.visual_section,
                sections.search_section, _tuning_section, sections.missing_section, sections.provenance_section]
    summary, _ = sections.verdict_section(ctx)
    parts, written = [summary, _overview(ctx, name)], []
    for build in builders:
        built = build(ctx)
        if built is not None:
            parts.append(built[0])
            written += built[1]
    subtitle = [f"Source: {ctx.data.source}", f"Metric: {ctx.metric_label}"]
    plotly_js = get_plotlyjs().replace("</script", "<\\/script")  # never closes our tag early
    return page(title, subtitle, parts, plotly_js), written


def build_report(results: str | Path, out_dir: str | Path | None = None, metric: str = "iou",
                 figures: str | None = None, **options: object) -> Path:
    """Build the report of a study folder or merged Parquet file; returns ``<out_dir>/index.html``.

    ``out_dir`` defaults to ``reports/<study>/``. ``figures`` (``svg``, ``pdf`` or ``png``) also
    writes every plotly figure of the page as ``<out_dir>/figures/<figure id>.<format>`` in the
    manuscript style of :mod:`mismatch.report.export` (raises its FigureExportError without a
    browser). Keyword ``options`` are the fields of :class:`ReportOptions` (``at``,
    ``calibration_at``, ``reference``, ``mwu_alternative``, ``mwu_method``, ``max_points``,
    ``visual_slices``, ``exclude_empty``, ``title``).
    """
    opts = ReportOptions(metric=metric, **options)  # type: ignore[arg-type]
    opts.validate()
    if figures is not None and figures not in FORMATS:
        raise ValueError(f"figures must be one of {', '.join(FORMATS)}, got {figures!r}")
    data = load_study(results, opts.metric, opts.exclude_empty)
    name = study_name(data)
    ctx = make_context(data, opts)
    html_text, tables = render(ctx, name, opts.title or f"Study report: {name}")
    out = Path(out_dir) if out_dir is not None else Path("reports") / _slug(name)
    index = out / "index.html"
    with disk_full_names(out.absolute()):  # a full disk: DiskFullError naming the report folder
        for table in tables:
            write_table(table, out / "tables")
        write_atomic(index, html_text)
    if figures is not None:  # after the page: a missing browser still leaves the page and tables
        with disk_full_names(out.absolute()):
            export_figures(ctx.figures, out / "figures", figures)
    return index
