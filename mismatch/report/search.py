"""The study's Optuna search, when it has one: optimisation history and objective against alpha.

The journal (``optuna/journal.log``, a ``JournalFileBackend`` file) is only read. Optuna is
imported lazily, so reports of studies without a search never pay for the import.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import plotly.graph_objects as go

from mismatch.report.figures import label, layout


@dataclass
class SearchResult:
    """Figures and facts of every study found in the journal, and any error met reading it."""

    figures: list[tuple[str, go.Figure]] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    error: str | None = None


def _alpha_param(names: set[str]) -> str | None:
    exact = [n for n in names if n.split(".")[-1] == "alpha"]
    loose = sorted(n for n in names if "alpha" in n.lower())
    return (sorted(exact) or loose or [None])[0]


def _escape_text(fig: go.Figure) -> None:
    """Escape hover texts Optuna builds from parameter values (which may be user strings)."""
    for trace in fig.data:
        text = getattr(trace, "text", None)
        if text is not None and not isinstance(text, str):
            trace.text = [label(t) for t in text]
        elif isinstance(text, str):
            trace.text = label(text)


def _alpha_figure(trials: list, param: str, study_name: str) -> go.Figure:
    points = [(t.params[param], t.value) for t in trials if param in t.params and t.value is not None]
    x = [p for p, _ in points]
    fig = go.Figure(go.Scatter(x=x, y=[v for _, v in points], mode="markers", name="trial",
                               marker={"size": 8, "color": "#636efa"}))
    positive = bool(x) and all(isinstance(v, (int, float)) and v > 0 for v in x)
    fig.update_layout(**layout(460), xaxis={"type": "log" if positive else "linear", "title": label(param)},
                      yaxis_title="objective", title=f"Objective against {label(param)} ({label(study_name)})")
    return fig


def load_search(journal: str) -> SearchResult:
    """Read every study in ``journal`` and make its figures; errors are reported, not raised."""
    result = SearchResult()
    try:
        import optuna  # lazy: a heavy import only searches need
        from optuna.storages.journal import JournalFileBackend

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = optuna.storages.JournalStorage(JournalFileBackend(journal))
        for summary in optuna.get_all_study_summaries(storage):
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            best = ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}"
                             for k, v in study.best_params.items()) if done else ""
            result.facts.append(f"study {summary.study_name}: {len(study.trials)} trials, {len(done)} complete"
                                + (f", best value {study.best_value:.6g} at {best}" if done else ""))
            if not done:
                continue
            history = optuna.visualization.plot_optimization_history(study)
            _escape_text(history)
            history.update_layout(**layout(460),
                                  title=f"Optimisation history ({label(summary.study_name)})")
            result.figures.append((summary.study_name, history))
            param = _alpha_param({p for t in done for p in t.params})
            if param:
                result.figures.append((summary.study_name, _alpha_figure(done, param, summary.study_name)))
    except Exception as err:  # a broken journal must not cost the rest of the report
        result.error = f"{type(err).__name__}: {err}"
    return result
