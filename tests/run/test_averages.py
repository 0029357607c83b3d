"""Per-step sums between records: host floats, device tensors and held predictions read alike."""
from __future__ import annotations

import io

import pytest
import torch

from phasetrain.run import averages
from phasetrain.run.averages import StepAccumulator


def scores(correct_rows: int, rows: int, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Class scores whose arg-max is right on the first `correct_rows` of `rows`."""
    targets = torch.arange(rows) % classes
    predicted = torch.where(torch.arange(rows) < correct_rows, targets, (targets + 1) % classes)
    return torch.nn.functional.one_hot(predicted, classes).float(), targets


def test_host_floats_device_tensors_and_held_predictions_give_the_same_weighted_means():
    window = StepAccumulator(torch.device("cpu"))
    window.add_batch(2.0, 4, None)  # a loss read to the host
    window.add_batch(torch.tensor(5.0), 2, None)  # a loss left on the device
    window.add_predictions(*scores(3, 4))
    window.add_predictions(*scores(1, 2))
    window.add_grad_norm(1.0)
    window.add_grad_norm(torch.tensor(4.0))
    means, weights = window.read()
    assert means == pytest.approx({"train_loss": (2 * 4 + 5 * 2) / 6, "train_acc": 4 / 6, "grad_norm": 2.5})
    assert weights == {"train_loss": 6, "train_acc": 6, "grad_norm": 2}
    assert window.read() == ({}, {})  # read resets


def test_held_outputs_past_the_limit_are_counted_at_once(monkeypatch):
    monkeypatch.setattr(averages, "PENDING_OUTPUTS_LIMIT", 10)
    window = StepAccumulator(torch.device("cpu"))
    window.add_predictions(*scores(2, 4))  # 12 elements: counted at once (on a CPU, read), nothing held
    assert window._outputs == [] and window._host[1] == 2
    window.add_batch(1.0, 4, None)
    assert window.read()[0]["train_acc"] == pytest.approx(0.5)


def test_the_open_window_round_trips_through_a_weights_only_checkpoint():
    window = StepAccumulator(torch.device("cpu"))
    window.add_batch(3.0, 2, torch.tensor(1.0))
    window.add_batch(torch.tensor(1.0), 2, None)
    window.add_predictions(*scores(2, 2))
    window.add_grad_norm(torch.tensor(2.0))
    buffer = io.BytesIO()
    torch.save(window.state_dict(), buffer)
    buffer.seek(0)
    restored = StepAccumulator(torch.device("cpu"))
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.read() == window.read()


def test_a_window_saved_by_the_earlier_layout_still_loads():
    """Checkpoints written before host sums held device lists only."""
    old = {"losses": [torch.tensor(2.0), torch.tensor(4.0)], "sizes": [1, 3], "correct": [torch.tensor(3.0)],
           "grad_norms": [torch.tensor(1.5)], "acc_samples": 4}
    window = StepAccumulator(torch.device("cpu"))
    window.load_state_dict(old)
    means, weights = window.read()
    assert means == pytest.approx({"train_loss": (2 + 12) / 4, "train_acc": 0.75, "grad_norm": 1.5})
    assert weights == {"train_loss": 4, "train_acc": 4, "grad_norm": 1}


def test_non_finite_device_values_are_left_out_with_their_weight():
    """An update skipped on the device (its loss or norm not finite) does not poison the means."""
    window = StepAccumulator(torch.device("cpu"))
    window.add_batch(torch.tensor(2.0), 4, None)
    window.add_batch(torch.tensor(float("nan")), 4, None)
    window.add_grad_norm(torch.tensor(3.0))
    window.add_grad_norm(torch.tensor(float("inf")))
    means, weights = window.read()
    assert means == {"train_loss": 2.0, "grad_norm": 3.0} and weights == {"train_loss": 4, "grad_norm": 1}


def test_a_view_of_a_large_tensor_is_counted_at_once_not_held(monkeypatch):
    """Last-position logits are a view that keeps the whole (N, T, C) tensor alive: the limit
    counts the storage, so such outputs are not held."""
    monkeypatch.setattr(averages, "PENDING_OUTPUTS_LIMIT", 100)
    window = StepAccumulator(torch.device("cpu"))
    outputs, targets = scores(2, 4)
    sequence = outputs[:, None, :].expand(4, 50, 3).contiguous()  # 600 elements
    window.add_predictions(sequence[:, -1, :], targets)  # a 12-element view of them
    assert window._outputs == [] and window.read()[0]["train_acc"] == pytest.approx(0.5)


def test_an_update_added_in_one_call_equals_its_parts_added_one_by_one():
    """`add_update` (the loop's hot path) sums what `add_batch`, `add_predictions` and
    `add_grad_norm` would, for host floats, device tensors and held predictions."""
    micro = [(2.0, 4, None, scores(3, 4)), (torch.tensor(5.0), 2, torch.tensor(1.0), None), (1.5, 3, 2.0, None)]
    for grad_norm in (3.0, torch.tensor(3.0), None):
        by_parts, at_once = StepAccumulator(torch.device("cpu")), StepAccumulator(torch.device("cpu"))
        for loss, n, correct, predictions in micro:
            by_parts.add_batch(loss, n, correct)
            if predictions is not None:
                by_parts.add_predictions(*predictions)
        by_parts.add_grad_norm(grad_norm)
        at_once.add_update(micro, grad_norm)
        expected = by_parts.read()
        assert at_once.read() == expected
        assert expected[1]["train_loss"] == 9 and expected[1]["train_acc"] == 9
