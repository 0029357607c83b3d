"""The CUDA path: device auto-detection, curvature on the GPU, mixed precision, resume.

Skipped where no GPU is present (CI); run on a GPU machine with `pytest tests/gpu`.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn, optim

from phasetrain import Callback, Monitor, PhaseTransitionTrainer
from phasetrain.curvature import HessianOperator, lanczos, lobpcg, spectral_density
from phasetrain.monitors.base import StepContext
from phasetrain.monitors.hessian import HessianMonitor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def data(n_batches=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(32, 8, generator=generator), torch.randint(0, 3, (32,), generator=generator))
            for _ in range(n_batches)]


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 3))


def test_device_is_auto_detected_and_a_run_completes_on_cuda(tmp_path):
    model = mlp()
    trainer = PhaseTransitionTrainer(model, optim.Adam(model.parameters(), lr=1e-2), nn.CrossEntropyLoss(),
                                     log_dir=tmp_path, log_freq=2, progress_bar=False, track_hessian=True,
                                     hessian_method="eigenvalues", hessian_freq=3)
    assert trainer.device.type == "cuda" and next(model.parameters()).is_cuda
    results = trainer.train(data(), data(2, seed=1), num_epochs=2)
    assert results["total_training_steps"] == 12
    for name in ("train_loss", "train_acc", "grad_norm", "val_loss", "hessian_eig_1"):
        assert name in trainer.history, name
    cpu_model = mlp(seed=5)
    cpu = PhaseTransitionTrainer(cpu_model, optim.Adam(cpu_model.parameters(), lr=1e-2), nn.CrossEntropyLoss(),
                                 device="cpu", log_dir=tmp_path / "cpu", progress_bar=False)
    checkpoint = cpu.load_checkpoint(tmp_path / "final_model.pt")
    assert checkpoint["step"] == 12
    for (name, gpu_value), cpu_value in zip(model.state_dict().items(), cpu_model.state_dict().values()):
        assert torch.equal(gpu_value.cpu(), cpu_value), name


def test_hessian_eigenvalues_on_cuda_match_cpu():
    model = mlp().double()
    batch = (data(1)[0][0].double(), data(1)[0][1])
    values = {}
    for device in ("cpu", "cuda"):
        model.to(device)
        monitor = HessianMonitor(method="eigenvalues", freq=1, k=3, batches=[batch])
        ctx = StepContext(model, nn.functional.cross_entropy, optim.SGD(model.parameters(), lr=0.1), 1, 0, batch,
                          torch.device(device))
        values[device] = monitor.compute(ctx)
    for name in ("hessian_eig_1", "hessian_eig_2", "hessian_eig_3", "hessian_eos_ratio"):
        assert values["cuda"][name] == pytest.approx(values["cpu"][name], rel=1e-6), name


def test_lanczos_stays_on_the_gpu_and_matches_eigvalsh():
    generator = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(200, 200, device="cuda", dtype=torch.float64, generator=generator)
    matrix = (a + a.T) / 2
    result = lanczos(matrix, k=3, tol=1e-8, generator=generator, return_eigenvectors=True)
    exact = torch.linalg.eigvalsh(matrix).flip(0)[:3]
    torch.testing.assert_close(result.eigenvalues.to(exact.device), exact, rtol=1e-6, atol=1e-8)
    assert result.eigenvectors.is_cuda
    # A warm block start from slightly perturbed vectors: LOBPCG on the GPU, same certificate.
    start = result.eigenvectors + 1e-4 * torch.randn(200, 3, device="cuda", dtype=torch.float64, generator=generator)
    warm = lobpcg(matrix, start, k=2, tol=1e-8)
    assert warm.converged and warm.ritz_vectors.is_cuda
    torch.testing.assert_close(warm.eigenvalues.to(exact.device), exact[:2], rtol=1e-6, atol=1e-8)


def test_stock_transformers_model_on_cuda_matches_cpu():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50, n_positions=16)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).double()
    ids = torch.randint(0, 50, (4, 8), generator=torch.Generator().manual_seed(2))
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    products = {}
    for device in ("cpu", "cuda"):
        model.to(device)
        batch = ({"input_ids": ids.to(device), "labels": ids.to(device)}, None)
        with HessianOperator(model, lambda out, _: out.loss, [batch]) as operator:
            products[device] = (operator @ v.to(device)).cpu()
    torch.testing.assert_close(products["cuda"], products["cpu"], rtol=1e-6, atol=1e-8)


def test_hessian_operator_matvec_on_cuda_equals_dense():
    model = mlp().double().cuda()
    inputs, targets = data(1)[0]
    inputs, targets = inputs.double().cuda(), targets.cuda()
    params = dict(model.named_parameters())
    flat = torch.cat([p.detach().flatten() for p in params.values()])
    shapes = [(name, p.shape, p.numel()) for name, p in params.items()]

    def loss_of(vector):
        tensors, offset = {}, 0
        for name, shape, size in shapes:
            tensors[name] = vector[offset:offset + size].view(shape)
            offset += size
        return nn.functional.cross_entropy(torch.func.functional_call(model, tensors, (inputs,)), targets)

    dense = torch.func.hessian(loss_of)(flat)
    v = torch.randn(flat.numel(), device="cuda", dtype=torch.float64)
    with HessianOperator(model, nn.functional.cross_entropy, [(inputs, targets)]) as operator:
        torch.testing.assert_close(operator.matvec(v), dense @ v, rtol=1e-8, atol=1e-10)
        for group in operator.module_slices():
            torch.testing.assert_close(operator.block_matvec(group, v[group]), dense[group, group] @ v[group],
                                       rtol=1e-8, atol=1e-10)


def test_diagonal_statistics_and_spectral_density_on_cuda_match_cpu():
    model = mlp().double()
    batch = (data(1)[0][0].double(), data(1)[0][1])
    values, densities = {}, {}
    for device in ("cpu", "cuda"):
        model.to(device)
        monitor = HessianMonitor(method="diagonal", freq=1, batches=[batch])
        ctx = StepContext(model, nn.functional.cross_entropy, optim.SGD(model.parameters(), lr=0.1), 1, 0, batch,
                          torch.device(device))
        values[device] = monitor.compute(ctx)
        inputs, targets = batch[0].to(device), batch[1].to(device)
        with HessianOperator(model, nn.functional.cross_entropy, [(inputs, targets)]) as operator:
            densities[device] = spectral_density(operator, torch.Generator().manual_seed(0), num_probes=2,
                                                 num_steps=20)
    # The monitor draws its probes on the model's device (another random stream) and its allocation
    # prices operations by device type, so the two means agree within their standard errors.
    se = (values["cpu"]["hessian_diag_mean_stderr"] ** 2 + values["cuda"]["hessian_diag_mean_stderr"] ** 2) ** 0.5
    assert abs(values["cuda"]["hessian_diag_mean"] - values["cpu"]["hessian_diag_mean"]) <= 5 * se
    # The density's probes come from one CPU generator: the same quadrature on both devices.
    torch.testing.assert_close(densities["cuda"].nodes, densities["cpu"].nodes, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_cuda(tmp_path, precision):
    model = mlp()
    trainer = PhaseTransitionTrainer(model, optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                                     log_dir=tmp_path, log_freq=1, progress_bar=False, precision=precision)
    trainer.train(data(), num_epochs=1)
    reference_model = mlp()
    reference = PhaseTransitionTrainer(reference_model, optim.SGD(reference_model.parameters(), lr=0.1),
                                       nn.CrossEntropyLoss(), log_dir=tmp_path / "fp32", log_freq=1, progress_bar=False)
    reference.train(data(), num_epochs=1)
    assert trainer.history.values("grad_norm")[0] == pytest.approx(reference.history.values("grad_norm")[0], rel=3e-2)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    if precision == "fp16":
        assert trainer._update.scaler.get_scale() > 1000


def test_resume_on_cuda_matches_uninterrupted(tmp_path):
    torch.use_deterministic_algorithms(True, warn_only=True)

    def run(log_dir, epochs, resume=None):
        model = mlp()
        trainer = PhaseTransitionTrainer(model, optim.Adam(model.parameters(), lr=1e-2), nn.CrossEntropyLoss(),
                                         log_dir=log_dir, log_freq=2, checkpoint_freq=3, progress_bar=False)
        trainer.train(data(), num_epochs=epochs, resume_from=resume)
        return model

    full = run(tmp_path / "full", 3)
    run(tmp_path / "part", 2)
    resumed = run(tmp_path / "part", 3, resume="latest")
    for a, b in zip(full.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


class SyncWatch(Monitor):
    """Turns CUDA's sync debug mode to "error" from the end of each record (`on_log`) until the next
    record step begins its monitors: every step in between (forward, backward, gradient norm,
    finiteness check, update, scheduler, the per-step window) must not synchronise the host."""

    names = ()

    def __init__(self, log_freq: int) -> None:
        self.log_freq = log_freq
        self.strict_steps = 0  # steps whose forward, backward and checks ran under "error"

    def should_run(self, step: int) -> bool:
        if torch.cuda.get_sync_debug_mode() != 0:
            self.strict_steps += 1
        if step % self.log_freq == 0:
            torch.cuda.set_sync_debug_mode(0)  # the record reads its figures: syncs allowed
        return False

    def compute(self, ctx):
        return {}


class StrictAfterRecord(Callback):
    def on_log(self, trainer, step, metrics):
        torch.cuda.set_sync_debug_mode("error")


def test_steps_that_do_not_record_never_synchronise_the_host(tmp_path):
    """A fused optimizer takes the found-inf tensor: finiteness is checked on the device and read at
    the record, so a non-logging step makes no host-device synchronisation."""
    model = mlp().cuda()
    batches = [(x.cuda(), y.cuda()) for x, y in data(40)]
    watch = SyncWatch(log_freq=10)
    trainer = PhaseTransitionTrainer(model, optim.AdamW(model.parameters(), lr=1e-2, fused=True), nn.CrossEntropyLoss(),
                                     device="cuda", log_dir=tmp_path, log_freq=10, progress_bar=False,
                                     checkpoint_freq=None, monitors=[watch], watch_metrics=())
    assert trainer._checks_on_device
    try:
        results = trainer.train(batches, num_epochs=1, callbacks=[StrictAfterRecord()])
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert results["total_training_steps"] == 40 and watch.strict_steps == 30  # steps 11-40
    assert len(trainer.history.steps("train_loss")) == 4
