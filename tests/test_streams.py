"""Stream protocols: equal budgets under two-stream, equal steps under streaming + steps, today's
counts under streaming + paper; label draws; trial ids of specs without the new keys."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mismatch.config import SpecError, load_trial_spec
from mismatch.data import load_trial_data
from mismatch.data.splits import make_splits
from mismatch.trial.batches import epoch_batches, steps_per_epoch
from mismatch.trial.run import run_trial

SMALL_POOL = {"unlabelled_slices": 4}  # a 4-slice unlabelled pool keeps full trials fast


def _counts(data, train, use_unlabelled: bool, epochs: int = 2) -> tuple[int, int, int]:
    """(steps, labelled presentations, unlabelled presentations) over ``epochs`` epochs."""
    steps = lab = unl = 0
    for epoch in range(epochs):
        for batch in epoch_batches(data, epoch, train, use_unlabelled):
            steps, lab, unl = steps + 1, lab + batch.n_labelled, unl + batch.n_unlabelled
    return steps, lab, unl


def _spec(tiny_dict, method="mismatch", **train):
    return load_trial_spec(tiny_dict(method={"name": method, "width": 4}, train={"epochs": 1, "snapshot_k": 1, **train}))


@pytest.mark.parametrize("batch_size", [1, 3])
def test_stream_counts_of_each_protocol(tiny_dict, batch_size):
    spec = _spec(tiny_dict, batch_size=batch_size)
    data = load_trial_data(spec.data, spec.protocol)
    n_lab, n_unl = len(data.labelled.images), len(data.unlabelled.images)
    assert n_lab == 2 and n_unl > n_lab
    paper = spec.train
    steps_mode = paper.model_copy(update={"budget": "steps"})
    two = paper.model_copy(update={"stream": "two-stream"})
    # streaming + paper: today's counts (supervised methods stream the labelled slices alone)
    assert _counts(data, paper, False) == (2 * math.ceil(n_lab / batch_size), 2 * n_lab, 0)
    assert _counts(data, paper, True) == (2 * math.ceil((n_lab + n_unl) / batch_size), 2 * n_lab, 2 * n_unl)
    # streaming + steps: supervised methods take the semi-supervised stream's steps
    semi = _counts(data, steps_mode, True)
    sup = _counts(data, steps_mode, False)
    assert sup[0] == semi[0] == 2 * math.ceil((n_lab + n_unl) / batch_size)
    assert sup[1] == 2 * (n_lab + n_unl) and semi[1] == 2 * n_lab and sup[2] == 0
    # two-stream: the same steps and labelled presentations; unlabelled slices in addition
    semi, sup = _counts(data, two, True), _counts(data, two, False)
    steps = 2 * math.ceil(n_unl / batch_size)
    assert semi[:2] == sup[:2] == (steps, steps * batch_size)
    assert semi[2] == 2 * n_unl and sup[2] == 0
    for train, use in ((paper, True), (paper, False), (steps_mode, False), (two, True), (two, False)):
        assert _counts(data, train, use, epochs=1)[0] == steps_per_epoch(data, train, use)


def test_two_stream_batches_put_labelled_slices_first_and_cycle_each_pass(tiny_dict):
    spec = _spec(tiny_dict, stream="two-stream", batch_size=1)
    data = load_trial_data(spec.data, spec.protocol)
    batches = list(epoch_batches(data, 0, spec.train, True))
    for batch in batches:
        assert batch.n_labelled == 1 and batch.labelled.tolist() == [True, False]
        assert float(batch.label[1].abs().sum()) == 0  # the unlabelled slice's label is hidden
    seen = [next(i for i, img in enumerate(data.labelled.images) if np.array_equal(img, b.image[0].numpy()))
            for b in batches]
    for start in range(0, len(seen) - 1, 2):  # every pass of 2 labelled slices shows both once
        assert sorted(seen[start : start + 2]) == [0, 1]
    again = [b.image.numpy() for b in epoch_batches(data, 0, spec.train, True)]
    assert all(np.array_equal(a, b.image.numpy()) for a, b in zip(again, batches))  # (seed, epoch) fixes it


def test_two_stream_trials_have_equal_budgets_across_methods(tiny_dict):
    rows = {}
    for method in ("sup1", "mismatch", "mean-teacher"):
        spec = load_trial_spec(tiny_dict(method={"name": method, "width": 4}, protocol=SMALL_POOL,
                                         train={"epochs": 2, "snapshot_k": 1, "stream": "two-stream"}))
        rows[method] = run_trial(spec).trial
    budgets = {m: (r["optimizer_steps"], r["labelled_presentations"]) for m, r in rows.items()}
    assert set(budgets.values()) == {(8, 8)}, budgets  # 2 epochs x 4 unlabelled slices, one labelled each
    assert {r["stream"] for r in rows.values()} == {"two-stream"}
    assert rows["sup1"]["unlabelled_slices"] == 0 and rows["mismatch"]["unlabelled_slices"] == 4


def test_streaming_trials_record_the_budget_and_todays_counts(tiny_dict):
    paper = run_trial(load_trial_spec(tiny_dict(method={"name": "sup1", "width": 4}, protocol=SMALL_POOL,
                                                train={"epochs": 2, "snapshot_k": 1}))).trial
    steps = run_trial(load_trial_spec(tiny_dict(method={"name": "sup1", "width": 4}, protocol=SMALL_POOL,
                                                train={"epochs": 2, "snapshot_k": 1, "budget": "steps"}))).trial
    assert (paper["stream"], paper["budget"]) == ("streaming", "paper")
    assert (paper["optimizer_steps"], paper["labelled_presentations"]) == (4, 4)  # 2 epochs x 2 labelled
    assert (steps["optimizer_steps"], steps["labelled_presentations"]) == (12, 12)  # 2 x (2 + 4), all labelled


def test_counts_survive_a_resume(tiny_dict, tmp_path):
    spec = load_trial_spec(tiny_dict(method={"name": "sup1", "width": 4}, protocol=SMALL_POOL,
                                     train={"epochs": 2, "snapshot_k": 1, "stream": "two-stream"}))
    first = run_trial(spec.model_copy(update={"train": spec.train.model_copy(update={"epochs": 1})}),
                      checkpoint_dir=tmp_path)
    assert first.trial["optimizer_steps"] == 4
    resumed = run_trial(spec, checkpoint_dir=tmp_path).trial
    assert resumed["resumed_from_epoch"] == 1
    assert (resumed["optimizer_steps"], resumed["labelled_presentations"]) == (8, 8)


def test_specs_without_the_new_keys_keep_their_ids(tiny_spec, tiny_dict):
    assert tiny_spec.trial_id() == "mismatch-1c5998f23ff3"  # the id before stream protocols existed
    explicit = load_trial_spec(tiny_dict(train={"stream": "streaming", "budget": "paper"},
                                         protocol={"label_draw": 0}))
    assert explicit.trial_id() == tiny_spec.trial_id()
    others = {load_trial_spec(tiny_dict(**change)).trial_id() for change in (
        {"train": {"stream": "two-stream"}}, {"train": {"budget": "steps"}}, {"protocol": {"label_draw": 1}})}
    assert len(others) == 3 and tiny_spec.trial_id() not in others


def test_budget_steps_under_two_stream_is_an_error(tiny_dict):
    with pytest.raises(SpecError, match="budget applies to stream: streaming"):
        load_trial_spec(tiny_dict(train={"stream": "two-stream", "budget": "steps"}))


def test_label_draws_pick_other_cases_and_slices_and_draw_0_is_todays(tiny_dict):
    base = load_trial_spec(tiny_dict())
    cases = load_trial_data(base.data, base.protocol).cases
    today = make_splits(cases, base.protocol)
    assert make_splits(cases, base.protocol.model_copy(update={"label_draw": 0})) == today
    refs = {}
    for draw in range(3):
        spec = load_trial_spec(tiny_dict(protocol={"label_draw": draw}))
        data = load_trial_data(spec.data, spec.protocol)
        split = make_splits(cases, spec.protocol)
        assert split["test"] == today["test"] and split["validation"] == today["validation"]
        assert sorted(split["labelled"] + split["unlabelled"]) == sorted(today["labelled"] + today["unlabelled"])
        assert data.splits == split
        refs[draw] = list(zip(data.labelled.case_ids, data.labelled.slice_index.tolist()))
    assert refs[0][0][0] == today["labelled"][0]
    assert len({r[0][0] for r in refs.values()}) == 3  # three different labelled cases
    again = load_trial_data(load_trial_spec(tiny_dict(protocol={"label_draw": 2})).data,
                            load_trial_spec(tiny_dict(protocol={"label_draw": 2})).protocol)
    assert list(zip(again.labelled.case_ids, again.labelled.slice_index.tolist())) == refs[2]  # deterministic


def test_label_draw_moves_the_first_labelled_slice_when_no_other_case_is_there(tiny_dict):
    from mismatch.data.selection import select_labelled

    qualifying = {"a": np.arange(10)}
    assert select_labelled(qualifying, ["a"], 3) == [("a", 0), ("a", 1), ("a", 2)]
    starts = {select_labelled(qualifying, ["a"], 3, np.random.default_rng([0, 0, 3, d]))[0][1] for d in range(1, 9)}
    assert len(starts) > 1 and max(starts) <= 7
    only = make_splits([f"c{i}" for i in range(4)], load_trial_spec(tiny_dict(
        protocol={"unlabelled_cases": 0, "label_draw": 2, "test_cases": 2})).protocol)
    assert only["labelled"] == ["c0"] and only["unlabelled"] == []
