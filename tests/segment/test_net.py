"""Training: the loss falls, the masks beat a trivial floor, the run is deterministic and cached."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pacs_workbench.segment import SegmentationError, TrainConfig, assign_splits, dice, read_cases, train_network
from pacs_workbench.segment.data import load_case
from pacs_workbench.segment.net import predict_probability
from tests.segment.fixtures import TINY, write_cases


def _train(tmp_path, name):
    frame = assign_splits(read_cases(write_cases(tmp_path / "cases")), 1.0)
    cases = [load_case(row, with_reference=True) for _, row in frame.iterrows()]
    train = [c for c, s in zip(cases, frame["split"], strict=True) if s == "train"]
    validation = [c for c, s in zip(cases, frame["split"], strict=True) if s == "validation"]
    files = [(r.case_id, r.image, r.mask) for r in frame.itertuples()]
    return train_network(train, validation, files, tmp_path / name, TINY, progress=False), validation


def test_training_lowers_the_loss_and_beats_a_trivial_floor(tmp_path) -> None:
    result, validation = _train(tmp_path, "model")
    losses = [p["loss"] for p in result.history]
    assert losses[-1] < 0.7 * losses[0]
    assert validation, "a validation patient is kept out"
    for case in validation:
        prediction = predict_probability(result.network, case.image, TINY["patch"]) >= 0.5
        everything = dice(np.ones_like(case.reference), case.reference)
        assert dice(prediction, case.reference) > max(0.5, everything)


def test_training_is_deterministic_and_cached(tmp_path) -> None:
    first, validation = _train(tmp_path, "a")
    second, _ = _train(tmp_path, "b")
    for (name, p), q in zip(first.network.state_dict().items(), second.network.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    image = validation[0].image
    first_prob = predict_probability(first.network, image, 16, flips=(0,))
    assert np.array_equal(first_prob, predict_probability(second.network, image, 16, flips=(0,)))
    again, _ = _train(tmp_path, "a")
    assert again.cached and again.checkpoint_sha256 == first.checkpoint_sha256 and not first.cached


def test_no_labelled_case_is_a_clear_error(tmp_path) -> None:
    frame = assign_splits(read_cases(write_cases(tmp_path / "cases", 2)), 0.0)
    cases = [load_case(row, with_reference=False) for _, row in frame.iterrows()]
    with pytest.raises(SegmentationError, match="no labelled case"):
        train_network(cases, [], [], tmp_path / "m", TINY, progress=False)


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig.coerce({"epochs": 3})
