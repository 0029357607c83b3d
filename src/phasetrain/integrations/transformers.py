"""phasetrain inside the Hugging Face Trainer: `PhaseTransitionTrainerCallback`.

Where each number comes from (transformers 5.x `Trainer._inner_training_loop`):
- `train_loss`, `lr`, `grad_norm`: HF's own log record at each logging step (`logging_steps`):
  `loss` (mean over the steps since the last log, as the trainer's train_loss), `learning_rate`,
  and `grad_norm`. HF calls `on_pre_optimizer_step` AFTER clipping (`max_grad_norm`, default 1.0),
  so the gradients a callback sees there are clipped; HF's `grad_norm` is the pre-clipping norm
  (the value its `clip_grad_norm_` returns), which is our definition. It is the norm of the
  logging step itself, not a mean over the window: set `logging_steps=1` for every step;
- `train_acc`: the arg-max accuracy of the training forwards since the last log (or epoch end), counted by a
  forward hook on the model (`TrainingPredictions`) from the class scores against the `labels`
  keyword the model is called with: a tensor, or a `ModelOutput`'s `(N, C)` logits;
- monitors (weight norm every logging step, curvature, yours) run in `on_pre_optimizer_step`,
  after backward and before the update of step s. The Trainer hands callbacks no batch, so
  curvature needs fixed `hessian_batches`: dict batches as your collator yields them, with a
  "labels" entry, on which the model returns its own `loss`;
- `val_loss`, `val_acc`: `metrics["eval_loss"]` and `metrics["eval_accuracy"]` (or "eval_acc";
  `compute_metrics` returning {"accuracy": ...} gives it) in `on_evaluate`;
- step s is `state.global_step` after the s-th optimizer step (1-based); `epoch` is the 0-based
  epoch in progress (HF's fractional epoch rounded up, minus one).
`metrics.jsonl` streams every record; `metrics.json` is rewritten at evaluations, epoch ends,
checkpoint saves and at the end of training. On a resume (`trainer.train(resume_from_checkpoint=...)`)
the records of `log_dir/metrics.json` up to the checkpoint's step are kept.
"""
from __future__ import annotations

import math
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from phasetrain.loop.accuracy import class_scores, is_plain_classification
from phasetrain.monitors.base import Monitor, StepContext
from phasetrain.run.recorder import RunViews, callback_recorder
from phasetrain.run.summary import KEY_METRICS

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError as error:  # the extra is optional; say how to get it
    raise ImportError(
        "phasetrain.integrations.transformers needs transformers and accelerate: pip install 'phasetrain[transformers]'"
    ) from error

VAL_KEYS = {"val_loss": ("eval_loss",), "val_acc": ("eval_accuracy", "eval_acc")}
# What HF's own log records already hold; everything else phasetrain measures (weight_norm,
# hessian_*, your monitors' metrics, transitions) is added to HF's logs.
FRAMEWORK_METRICS = frozenset({"train_loss", "grad_norm", "lr", "epoch", "val_loss", "val_acc"})


class HFLogs:
    """A recorder stream that keeps phasetrain's own measurements until the Trainer's next log
    record, where the callback adds them (so `state.log_history` and every `report_to`
    destination get them)."""

    def __init__(self) -> None:
        self.pending: dict[str, float] = {}

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Keep the latest value of each metric HF does not already log."""
        self.pending.update({name: value for name, value in metrics.items() if name not in FRAMEWORK_METRICS})

    def take(self) -> dict[str, float]:
        """The values kept since the last call."""
        pending, self.pending = self.pending, {}
        return pending

    def flush(self) -> None:
        """Nothing to flush: the Trainer writes its logs."""

    def close(self) -> None:
        """Nothing to close."""


class KeywordModel(nn.Module):
    """`model(**dict(zip(keys, tensors)))` as `forward(*tensors)`: HF models take keyword batches,
    phasetrain's curvature code calls `model(*inputs)`. Shares (does not copy) the parameters."""

    def __init__(self, model: nn.Module, keys: Sequence[str]) -> None:
        super().__init__()
        self.model, self.keys = model, tuple(keys)

    def forward(self, *tensors: torch.Tensor) -> Any:
        return self.model(**dict(zip(self.keys, tensors)))


def model_loss(outputs: Any, targets: Any) -> torch.Tensor:
    """The loss an HF model computed itself (`outputs["loss"]`); `targets` only size the batch."""
    return outputs["loss"]


def keyword_batches(batches: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[tuple[list, Any]]]:
    """(keys, [(inputs, labels)]) from dict batches, for the curvature code; checks their shape."""
    if not isinstance(batches, (list, tuple)) or not batches:
        raise ValueError(f"hessian_batches must be a non-empty list of dict batches, got {batches!r}")
    keys = None
    pairs = []
    for index, batch in enumerate(batches):
        if not isinstance(batch, Mapping) or not all(isinstance(v, torch.Tensor) for v in batch.values()):
            raise TypeError(f"hessian_batches[{index}] must be a dict of tensors (a collated batch), "
                            f"got {type(batch).__name__}")
        if "labels" not in batch:
            raise ValueError(f"hessian_batches[{index}] must have a 'labels' entry so the model returns a loss; "
                             f"keys are {sorted(batch)}")
        if keys is None:
            keys = list(batch)
        elif sorted(batch) != sorted(keys):
            raise ValueError(f"hessian_batches[{index}] has keys {sorted(batch)}, the first batch has {sorted(keys)}")
        pairs.append(([batch[k] for k in keys], batch["labels"]))
    return keys, pairs


class PhaseTransitionTrainerCallback(RunViews, TrainerCallback):
    """Weight-norm and curvature monitors, phasetrain's metric names, `metrics.json` and transition
    detection for a Hugging Face `Trainer` run (see the module notes for each number's source).

    Arguments mean what they mean for `PhaseTransitionTrainer` (`RecordingConfig`); records follow
    HF's `logging_steps`, so there is no `log_freq`. `track_gradients=False` drops HF's grad_norm.
    `on_phase_transition(callback, transition)` is called for each transition confirmed online.
    phasetrain's own measurements are added to HF's log records; for them to reach the `report_to`
    destinations too, add the callback with `callback.attach(trainer)` (it must run before them).
    """

    def __init__(
        self,
        log_dir: str | Path,
        track_gradients: bool = True,
        track_hessian: bool = False,
        hessian_method: str = "diagonal",
        hessian_freq: int = 100,
        monitors: Sequence[Monitor] = (),
        *,
        hessian_k: int = 3,
        hessian_budget: float | None = None,
        hessian_batches: Sequence[Mapping[str, torch.Tensor]] | None = None,
        loggers: Sequence[Any] | None = ("jsonl",),
        keep_last_checkpoints: int | None = None,
        overwrite: bool = False,
        watch_metrics: Sequence[str] = KEY_METRICS,
        watch_window: int | None = None,
        watch_detector: Callable[..., Any] | None = None,
        watch_budget: float | None = 0.01,
        on_phase_transition: Callable[..., Any] | None = None,
    ) -> None:
        if track_hessian and hessian_batches is None:
            raise ValueError("hessian_batches is required when track_hessian=True: the HF Trainer gives callbacks no "
                             "batch; pass a list of collated dict batches with 'labels', got hessian_batches=None")
        keys, pairs = keyword_batches(hessian_batches) if hessian_batches is not None else (None, None)
        self.recorder = callback_recorder("transformers", self, on_phase_transition, log_dir=log_dir,
                                          track_gradients=bool(track_gradients), track_hessian=bool(track_hessian),
                                          hessian_method=hessian_method, hessian_freq=hessian_freq,
                                          hessian_k=hessian_k, hessian_budget=hessian_budget, hessian_batches=pairs,
                                          monitors=tuple(monitors), loggers=loggers,
                                          keep_last_checkpoints=keep_last_checkpoints, overwrite=overwrite,
                                          watch_metrics=watch_metrics,
                                          watch_window=watch_window, watch_detector=watch_detector,
                                          watch_budget=watch_budget)
        self._keys = keys
        self._wrapped: KeywordModel | None = None
        self._logs = HFLogs()
        self._accuracy_hook: Any = None  # the model's forward hook counting training predictions

    def attach(self, trainer: Any) -> "PhaseTransitionTrainerCallback":
        """Add this callback to an HF `trainer` ahead of its reporting callbacks, so that the
        `report_to` destinations (TensorBoard, W&B, MLflow, ...) receive phasetrain's metrics."""
        callbacks = trainer.callback_handler.callbacks
        if self in callbacks:
            callbacks.remove(self)
        callbacks.insert(0, self)
        return self

    # ------------------------------------------------------------------ TrainerCallback events
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: nn.Module | None = None, **kwargs: Any) -> None:
        if args.logging_strategy == "steps":
            self.recorder.set_log_freq(int(state.logging_steps))
        self.recorder.open_folder(resuming=state.global_step > 0)
        if state.global_step > 0 and not len(self.recorder.history):
            self.recorder.restore_from_file(state.global_step)
        optimizer = kwargs.get("optimizer")
        self.recorder.start(_device(model), planned_steps=int(state.max_steps) or None,
                            optimizer=getattr(optimizer, "optimizer", optimizer))
        self.recorder.streams.append(self._logs)
        if model is not None and self._accuracy_hook is None:
            counter = TrainingPredictions(self.recorder.window, model)
            self._accuracy_hook = model.register_forward_hook(counter, with_kwargs=True)

    def on_pre_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                              model: nn.Module | None = None, optimizer: Any = None, **kwargs: Any) -> None:
        step = state.global_step + 1
        due = self.recorder.monitors_due(step) if model is not None else []
        if due:
            ctx = StepContext(self._keyword_model(model), model_loss, getattr(optimizer, "optimizer", optimizer),
                              step, _epoch(state.epoch), (None, None), _device(model))
            self.recorder.run_monitors(ctx, due)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if logs is None:
            return
        self.recorder.state.step = state.global_step
        if "loss" in logs:
            record = {"train_loss": logs["loss"], "lr": logs.get("learning_rate"), "epoch": _epoch(state.epoch)}
            if self.recorder.config.track_gradients:
                record["grad_norm"] = logs.get("grad_norm")
            # with the window's train_acc: the training forwards' arg-max accuracy since the last log
            self.recorder.record_window(state.global_step, record)
        ours = self._logs.take()
        if ours:
            logs.update(ours)
            if state.log_history:
                state.log_history[-1].update(ours)

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    metrics: dict[str, float] | None = None, **kwargs: Any) -> None:
        metrics = metrics or {}
        found = {name: next((metrics[k] for k in keys if k in metrics), None) for name, keys in VAL_KEYS.items()}
        self.recorder.record(state.global_step, found)
        self.recorder.save_metrics()

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        self.recorder.state.step = state.global_step
        self.recorder.end_epoch()
        self.recorder.save_metrics()

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self.recorder.save_metrics()

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        if self._accuracy_hook is not None:
            self._accuracy_hook.remove()
            self._accuracy_hook = None
        self.recorder.finish()

    # ------------------------------------------------------------------ helpers
    def _log_transition(self, transition: Any) -> None:
        """Add a confirmed transition to HF's next log record: `transition_step/<metric>`."""
        self._logs.log(self.recorder.state.step, {f"transition_step/{transition.metric}": transition.step})

    def _keyword_model(self, model: nn.Module) -> nn.Module:
        """The model as monitors call it: wrapped for keyword batches when curvature is tracked."""
        if self._keys is None:
            return model
        if self._wrapped is None or self._wrapped.model is not model:
            self._wrapped = KeywordModel(model, self._keys)
        return self._wrapped


class TrainingPredictions:
    """A forward hook on the HF model: a training forward's class scores (a tensor, or a
    `ModelOutput`'s `(N, C)` logits) against its `labels` join `window` (a `StepAccumulator`),
    which counts them once per log as `train_acc`. Evaluation and curvature forwards (eval mode or
    no gradients) are not counted, nor forwards of any other module. It holds `window` and the
    model weakly, and a deep copy or pickle of the model carries an inert hook instead (an EMA
    copy, `torch.save(model)`), so the hook never keeps the run alive or breaks a copy."""

    def __init__(self, window: Any, model: nn.Module) -> None:
        self._window, self._model = weakref.ref(window), weakref.ref(model)

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
        window, labels = self._window(), kwargs.get("labels")
        if (window is None or module is not self._model() or not module.training or not torch.is_grad_enabled()
                or not isinstance(labels, torch.Tensor)):
            return
        scores = class_scores(output)
        if is_plain_classification(scores, labels):  # what the window counts: (N, C) scores, (N,) labels
            window.add_predictions(scores, labels)

    def __reduce__(self) -> tuple:
        return _inert_hook, ()


def _inert_hook() -> Callable[..., None]:
    """What a copied or unpickled `TrainingPredictions` becomes: a hook that does nothing."""
    return _ignore_forward


def _ignore_forward(*args: Any) -> None:
    return None


def _device(model: nn.Module | None) -> torch.device:
    parameter = next(model.parameters(), None) if model is not None else None
    return parameter.device if parameter is not None else torch.device("cpu")


def _epoch(epoch: float | None) -> int:
    """HF's fractional epoch (1.0 = end of the first) as the 0-based epoch in progress."""
    return max(math.ceil(round(epoch or 0.0, 6)) - 1, 0)
