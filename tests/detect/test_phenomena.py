import numpy as np
import pytest

from phasetrain.detect import Transition
from phasetrain.detect.phenomena import Phenomenon, find_phenomena, loss_phenomena, story, story_of_run

from .curves import eos_sharpness, sigmoid


def grokking_run(seed: int = 0):
    """train_acc jumps at 1000, val_acc at 8000; train_loss drops at 1000 and 3000."""
    rng = np.random.default_rng(seed)
    t = np.arange(10, 10_001, 10)
    train_acc = 0.1 + 0.89 * sigmoid(t, 1000, 100) + rng.normal(0, 0.005, t.size)
    val_acc = 0.02 + 0.95 * sigmoid(t, 8000, 300) + rng.normal(0, 0.005, t.size)
    loss = (2.0 * np.exp(-1.5 * sigmoid(t, 1000, 100) - 2.0 * sigmoid(t, 3000, 100))
            * np.exp(rng.normal(0, 0.02, t.size)))
    return {"train_acc": (t, train_acc), "val_acc": (t, val_acc), "train_loss": (t, loss)}


def test_memorisation_grokking_and_saddle_to_saddle_are_named_with_the_delay_ratio():
    found = {p.name: p for p in find_phenomena(grokking_run())}
    assert set(found) == {"memorisation", "grokking", "saddle_to_saddle"}
    assert abs(found["memorisation"].step - 1000) <= 50 and found["memorisation"].evidence == ("train_acc",)
    grok = found["grokking"]
    assert abs(grok.step - 8000) <= 100 and grok.value == pytest.approx(8.0, rel=0.08)
    assert grok.evidence == ("train_acc", "val_acc") and 0.5 <= grok.confidence < 1
    drops = [p for p in find_phenomena(grokking_run()) if p.name == "saddle_to_saddle"]
    assert [abs(p.step - c) <= 50 for p, c in zip(drops, (1000, 3000))] == [True, True]


def test_val_acc_rising_with_train_acc_is_generalisation_not_grokking():
    run = grokking_run()
    t, _ = run["val_acc"]
    run["val_acc"] = (t, 0.02 + 0.9 * sigmoid(t, 1300, 100) + np.random.default_rng(1).normal(0, 0.005, t.size))
    names = [p.name for p in find_phenomena(run)]
    assert "generalisation" in names and "grokking" not in names


def test_edge_of_stability_from_the_ratio_or_from_sharpness_alone():
    t, sharp = eos_sharpness(0, oscillate=True)  # 2/lr = 40 reached at step 1200
    (eos,) = [p for p in find_phenomena({"hessian_eig_1": (t, sharp)}) if p.name == "edge_of_stability"]
    assert abs(eos.step - 1200) <= 150 and eos.evidence == ("hessian_eig_1",)
    found = find_phenomena({"hessian_eig_1": (t, sharp), "hessian_eos_ratio": (t, sharp / 40)})
    (eos,) = [p for p in found if p.name == "edge_of_stability"]
    assert abs(eos.step - 1200) <= 30 and eos.evidence == ("hessian_eos_ratio",) and eos.confidence > 0.9
    assert [p.name for p in found].count("oscillation_regime") == 1


def test_an_early_loss_spike_with_a_sharpness_drop_is_a_catapult():
    rng = np.random.default_rng(2)
    t = np.arange(1, 3001)
    loss = 1.5 * np.exp(-t / 2000) * np.exp(rng.normal(0, 0.02, t.size))
    loss[300:320] *= 6 * np.sin(np.linspace(0, np.pi, 20)) + 1  # a 20-step spike up to 7x
    sharp = np.where(t < 320, 30.0, 12.0) + rng.normal(0, 0.2, t.size)
    (cat,) = [p for p in find_phenomena({"train_loss": (t, loss), "hessian_eig_1": (t, sharp)}) if p.name == "catapult"]
    assert 300 <= cat.step <= 320 and cat.value == pytest.approx(0.4, abs=0.05)
    names = [p.name for p in find_phenomena({"train_loss": (t, loss), "hessian_eig_1": (t, np.full(t.size, 30.0))})]
    assert "loss_spike" in names and "catapult" not in names


def test_a_smooth_run_has_no_story_and_a_story_has_a_line_per_phenomenon():
    rng = np.random.default_rng(3)
    t = np.arange(1, 5001)
    smooth = {"train_loss": (t, 2.5 * (t / 10 + 1) ** -0.5 * np.exp(rng.normal(0, 0.03, t.size)))}
    assert find_phenomena(smooth) == [] and story_of_run(smooth) == ""
    text = story(find_phenomena(grokking_run()))
    lines = text.splitlines()
    assert len(lines) == 4 and lines[-1].startswith("step 8,000: grokking: val_acc jumps") and "x later" in lines[-1]


def test_a_duck_typed_history_reads_like_a_mapping():
    run = grokking_run()

    class History:
        def names(self):
            return list(run)

        def steps(self, name):
            return run[name][0]

        def values(self, name):
            return run[name][1]

    assert find_phenomena(History()) == find_phenomena(run)
    with pytest.raises(TypeError, match="curves must be"):
        find_phenomena([1, 2, 3])
    assert Phenomenon("x", 1, ("a",), 0.5, "d").to_dict()["evidence"] == ["a"]


def test_memorisation_in_the_first_records_still_makes_a_later_jump_grokking():
    steps = np.arange(10, 2010, 10)
    rng = np.random.default_rng(3)
    train = np.minimum(1.0, 0.05 + steps / 60.0)  # 99% by step 60: the 6th record, too early to test a change
    val = np.where(steps < 900, 0.01, 0.97) + np.abs(rng.normal(0, 0.01, steps.size))
    found = find_phenomena({"train_acc": (steps, train), "val_acc": (steps, val)})
    names = [(p.name, p.step) for p in found]
    assert names[0] == ("memorisation", 60) and names[1][0] == "grokking" and abs(names[1][1] - 900) <= 10
    assert found[1].value == pytest.approx(names[1][1] / 60)
    never = find_phenomena({"train_acc": (steps, np.full(steps.size, 0.3)), "val_acc": (steps, val)})
    assert [p.name for p in never] == ["generalisation"]


def test_loss_drops_while_the_sharpness_oscillates_are_not_saddle_to_saddle():
    def drop(step):
        return Transition(step, step - 10, step + 10, 0.15, 0.13, 0.02, 0.13, "down", 12.0)

    regime = Transition(300, 300, 1500, 15.0, 14.0, 0.3, 0.07, "down", 9.0, kind="regime", ongoing=True)
    assert [p.name for p in loss_phenomena([drop(785), drop(880)])] == ["saddle_to_saddle"] * 2
    assert loss_phenomena([drop(785), drop(880)], [regime]) == []
    assert [p.name for p in loss_phenomena([drop(200), drop(880)], [regime])] == ["plateau_exit"]
