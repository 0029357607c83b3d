"""Stock `transformers` models built from small configs (default SDPA attention, no download),
trained with curvature on through every front end: the native trainer with dict batches, a
Lightning module, and the Hugging Face Trainer; both curvature methods."""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

transformers = pytest.importorskip("transformers")
pl = pytest.importorskip("lightning.pytorch")

from transformers import PrinterCallback, Trainer, TrainingArguments  # noqa: E402

from phasetrain import PhaseTransitionTrainer, accuracy  # noqa: E402
from phasetrain.integrations.lightning import PhaseTransitionCallback  # noqa: E402
from phasetrain.integrations.transformers import PhaseTransitionTrainerCallback  # noqa: E402

CURVATURE = {"diagonal": "hessian_diag_mean", "eigenvalues": "hessian_eig_1"}


def bert():
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=3)
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config)


def gpt2():
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50,
                                                                n_positions=16))


def token_batches(n_batches: int = 4, size: int = 4, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_batches):
        ids = torch.randint(0, 50, (size, 8), generator=generator)
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids[:, 0] % 3})
    return batches


def assert_curvature_recorded(history, method, steps):
    name = CURVATURE[method]
    assert history.steps(name).tolist() == steps
    assert all(math.isfinite(v) for v in history.values(name))


@pytest.mark.parametrize("method", ["diagonal", "eigenvalues"])
def test_bert_with_dict_batches_in_the_native_trainer(tmp_path, method):
    model = bert()
    assert model.config._attn_implementation == "sdpa"
    batches = [(dict(b), b["labels"]) for b in token_batches()]
    trainer = PhaseTransitionTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1),
                                     lambda outputs, labels: F.cross_entropy(outputs.logits, labels), device="cpu",
                                     log_dir=tmp_path, track_hessian=True, hessian_method=method, hessian_freq=2,
                                     hessian_k=1, log_freq=2, checkpoint_freq=None, progress_bar=False)
    trainer.train(batches, num_epochs=2)
    assert_curvature_recorded(trainer.history, method, [2, 4, 6, 8])


class CausalLM(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.model = gpt2()

    def forward(self, **inputs):  # curvature calls the module as model(**batch) for a dict batch
        return self.model(**inputs)

    def training_step(self, batch, batch_idx):
        return self.model(**batch).loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("method", ["diagonal", "eigenvalues"])
def test_gpt2_in_lightning(tmp_path, method):
    batches = [{"input_ids": b["input_ids"], "labels": b["input_ids"]} for b in token_batches()]
    callback = PhaseTransitionCallback(tmp_path, log_freq=2, track_hessian=True, hessian_method=method,
                                       hessian_freq=2, hessian_k=1, loss_fn=lambda outputs, _: outputs.loss)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[callback])
    trainer.fit(CausalLM(), DataLoader(batches, batch_size=None))
    assert_curvature_recorded(callback.history, method, [2, 4])


class Items(Dataset):
    def __init__(self, batches) -> None:
        self.items = [{k: v[i] for k, v in b.items()} for b in batches for i in range(len(b["labels"]))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.mark.parametrize("method", ["diagonal", "eigenvalues"])
def test_bert_in_the_hugging_face_trainer(tmp_path, method):
    callback = PhaseTransitionTrainerCallback(tmp_path / "run", track_hessian=True, hessian_method=method,
                                              hessian_freq=2, hessian_k=1, hessian_batches=token_batches(1, seed=1))
    args = TrainingArguments(output_dir=str(tmp_path / "hf"), report_to=[], use_cpu=True, per_device_train_batch_size=4,
                             num_train_epochs=1, logging_steps=2, save_strategy="no", disable_tqdm=True,
                             dataloader_num_workers=0, seed=0)
    trainer = Trainer(model=bert(), args=args, train_dataset=Items(token_batches()), callbacks=[callback])
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    assert_curvature_recorded(callback.history, method, [2, 4])


def tiny_bert_classifier():
    config = transformers.BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                                     vocab_size=100, num_labels=3)
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config)


def labelled_encodings(sizes, seed):
    """BatchEncodings (what a Hugging Face tokenizer or padding collator returns) with "labels"."""
    generator = torch.Generator().manual_seed(seed)
    encodings = []
    for size in sizes:
        ids = torch.randint(0, 100, (size, 6), generator=generator)
        encodings.append(transformers.BatchEncoding({"input_ids": ids, "attention_mask": torch.ones_like(ids),
                                                     "labels": torch.randint(0, 3, (size,), generator=generator)}))
    return encodings


@pytest.mark.parametrize("style", ["labels as targets", "the model's own loss"])
def test_bert_classifier_records_accuracy_from_its_logits(tmp_path, style):
    """A ModelOutput holding (N, C) logits gets train_acc and val_acc, as a tensor of scores would:
    equal to the arg-max accuracy of the logits the model produced, computed here from the logits
    the loss function was given (training: batch by batch; validation: sample-weighted)."""
    model = tiny_bert_classifier()
    seen: dict[str, list] = {"train": [], "val": []}

    if style == "labels as targets":  # the labels left out of the inputs, the loss computed from the logits
        def pair(encoding):
            return {k: v for k, v in encoding.items() if k != "labels"}, encoding["labels"]

        def loss_fn(outputs, labels):
            seen["train" if torch.is_grad_enabled() else "val"].append((outputs.logits.detach(), labels))
            return F.cross_entropy(outputs.logits, labels)
    else:  # the collator's batch as it is, and the labels as targets too (the README's recipe)
        def pair(encoding):
            return encoding, encoding["labels"]

        def loss_fn(outputs, labels):
            seen["train" if torch.is_grad_enabled() else "val"].append((outputs.logits.detach(), labels))
            return outputs.loss

    train = [pair(e) for e in labelled_encodings([5, 5, 5, 5], seed=0)]
    val = [pair(e) for e in labelled_encodings([5, 3], seed=1)]
    trainer = PhaseTransitionTrainer(model, torch.optim.SGD(model.parameters(), lr=0.5), loss_fn, device="cpu",
                                     log_dir=tmp_path, log_freq=1, checkpoint_freq=None, progress_bar=False)
    trainer.train(train, val, num_epochs=3)

    def correct(logits, labels):
        return (logits.argmax(dim=-1) == labels).sum().item()

    expected_train = [correct(*step) / len(step[1]) for step in seen["train"]]
    assert trainer.history.values("train_acc").tolist() == pytest.approx(expected_train)
    assert len(set(expected_train)) > 1  # accuracies that differ: a constant could not pass
    per_epoch = [seen["val"][i:i + 2] for i in range(0, len(seen["val"]), 2)]
    expected_val = [sum(correct(*batch) for batch in epoch) / 8 for epoch in per_epoch]
    assert len(expected_val) == 3
    assert trainer.history.values("val_acc").tolist() == pytest.approx(expected_val)
    assert isinstance(trainer.detect_phase_transitions(), list)  # the default metric, val_acc, is there


def test_the_accuracy_helper_reads_a_model_outputs_logits():
    model = tiny_bert_classifier().eval()
    encoding = labelled_encodings([7], seed=2)[0]
    with torch.no_grad():
        outputs = model(**encoding)
    labels = encoding["labels"]
    expected = (outputs.logits.argmax(dim=-1) == labels).double().mean().item()
    assert accuracy(outputs, labels) == pytest.approx(expected)
