"""Any model a user brings: stock transformers models (SDPA attention), dict batches, a model that
computes its own loss, torch.compile, tied and frozen parameters, buffers."""
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, hessian, jvp
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from phasetrain.curvature import HessianOperator
from phasetrain.monitors.base import StepContext
from phasetrain.monitors.hessian import HessianMonitor

transformers = pytest.importorskip("transformers")


def _ctx(model, batch, loss_fn) -> StepContext:
    return StepContext(model, loss_fn, torch.optim.SGD(model.parameters(), lr=0.1), 1, 0, batch, torch.device("cpu"))


def _reference_hvp(model: nn.Module, loss_of_outputs, inputs: dict, targets):
    """v -> H v by torch.func forward-over-reverse (an implementation independent of the operator's
    double backward), over the trainable parameters, tied ones once, in `model.parameters()` order,
    an embedding's padding row (never trained: zero gradient by convention) left out."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    sizes = [p.numel() for p in params.values()]
    keep = {n: torch.ones_like(p) for n, p in params.items()}
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            keep[f"{name}.weight"][module.padding_idx] = 0
    mask = torch.cat([keep[n].reshape(-1) for n in names])

    def loss(p):
        return loss_of_outputs(functional_call(model, p, (), inputs), targets)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        tangents = {n: t.view_as(params[n]) for n, t in zip(names, (v * mask).split(sizes))}
        with sdpa_kernel(SDPBackend.MATH):
            _, out = jvp(grad(loss), (params,), (tangents,))
        return torch.cat([out[n].reshape(-1) for n in names]) * mask

    return hvp, sum(sizes)


def _bert():
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=3)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).double()
    ids = torch.randint(0, 50, (6, 8), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0  # padding: the attention mask matters
    batch = ({"input_ids": ids, "attention_mask": mask}, torch.randint(0, 3, (6,)))
    return model, batch, lambda out, y: F.cross_entropy(out.logits, y)


def _gpt2():
    config = transformers.GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50, n_positions=16)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).double()
    ids = torch.randint(0, 50, (4, 8), generator=torch.Generator().manual_seed(2))
    return model, ({"input_ids": ids, "labels": ids}, None), lambda out, _: out.loss


@pytest.mark.parametrize("build", [_bert, _gpt2], ids=["bert", "gpt2"])
def test_stock_transformers_models_with_sdpa_attention(build):
    model, batch, loss_fn = build()
    assert model.config._attn_implementation == "sdpa"
    model.train()
    hvp, n = _reference_hvp(model.eval(), loss_fn, *batch)
    model.train()
    with HessianOperator(model.eval(), loss_fn, [batch]) as op:
        assert op.num_params == n
        u, v = torch.randn(2, n, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        hv = op @ v
        torch.testing.assert_close(hv, hvp(v), rtol=1e-6, atol=1e-8)
        assert torch.dot(u, hv).item() == pytest.approx(torch.dot(v, op @ u).item(), rel=1e-7)  # symmetric
    model.train()
    monitor = HessianMonitor("eigenvalues", k=2, tol=1e-4, max_iter=300)
    out = monitor.compute(_ctx(model, batch, loss_fn))
    values = torch.tensor([out["hessian_eig_1"], out["hessian_eig_2"]], dtype=torch.float64)
    assert values[0] >= values[1] and torch.isfinite(values).all()
    model.eval()
    # Certified against the independent product: ||H y - theta y|| <= tol |theta| (Weyl: an
    # eigenvalue of the reference Hessian lies that close to each value).
    for i in range(2):
        y = monitor.vectors[:, i]
        assert torch.linalg.vector_norm(hvp(y) - values[i] * y) <= 2e-4 * abs(values[i])
    model.train()
    diag = HessianMonitor("diagonal").compute(_ctx(model, batch, loss_fn))
    assert all(math.isfinite(v) for v in diag.values()) and diag["hessian_trace"] != 0
    assert model.training  # modes restored


def test_gpt2_tied_embedding_is_one_parameter():
    model, batch, loss_fn = _gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight
    with_duplicates = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    with HessianOperator(model, loss_fn, [batch]) as op:
        assert op.num_params == with_duplicates - model.lm_head.weight.numel()


class _TiedFrozen(nn.Module):
    """An embedding tied to the output layer, a frozen layer, batch norm buffers."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(7, 4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.norm = nn.BatchNorm1d(4)
        self.out = nn.Linear(4, 7, bias=True)
        self.out.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.frozen(self.embed(tokens).mean(1)) * scale)
        return self.out(self.norm(h))


def test_tied_and_frozen_parameters_against_the_dense_hessian_of_the_trainable_ones():
    torch.manual_seed(0)
    model = _TiedFrozen().double()
    gen = torch.Generator().manual_seed(4)
    tokens, scale = torch.randint(0, 7, (12, 3), generator=gen), torch.rand(12, 1, generator=gen, dtype=torch.float64)
    targets = torch.randint(0, 7, (12,), generator=gen)
    with torch.no_grad():
        model(tokens, scale)  # running statistics
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p.detach() for n, p in model.named_parameters() if p.requires_grad]
    assert names == ["embed.weight", "norm.weight", "norm.bias", "out.bias"]  # tied once, frozen out
    sizes = [p.numel() for p in params]

    def loss_of(flat):
        values = dict(zip(names, [t.view_as(p) for t, p in zip(flat.split(sizes), params)]))
        return F.cross_entropy(functional_call(model.eval(), values, (tokens, scale)), targets)

    H = hessian(loss_of)(torch.cat([p.reshape(-1) for p in params]))
    model.train()
    batch = ((tokens, scale), targets)
    monitor = HessianMonitor("eigenvalues", k=3, tol=1e-9, max_iter=200)
    out = monitor.compute(_ctx(model, batch, F.cross_entropy))
    torch.testing.assert_close(torch.tensor([out[f"hessian_eig_{i}"] for i in (1, 2, 3)], dtype=torch.float64),
                               torch.linalg.eigvalsh(H).flip(0)[:3], rtol=1e-6, atol=1e-10)
    diag = HessianMonitor("diagonal", num_samples=40, num_exact=10).compute(_ctx(model, batch, F.cross_entropy))
    assert diag["hessian_trace"] == pytest.approx(H.trace().item(), rel=1e-9)  # 45 params: exact path
    assert diag["hessian_diag_max"] == pytest.approx(H.diagonal().max().item(), rel=1e-9)
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers() if n != "norm.num_batches_tracked")
    assert model.frozen.weight.grad is None


def test_compiled_model_is_measured_through_its_original_module():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    gen = torch.Generator().manual_seed(5)
    x, y = torch.randn(10, 4, generator=gen, dtype=torch.float64), torch.randint(0, 3, (10,), generator=gen)
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach() for p in model.parameters()]
    sizes = [p.numel() for p in params]

    def loss_of(flat):
        values = dict(zip(names, [t.view_as(p) for t, p in zip(flat.split(sizes), params)]))
        return F.cross_entropy(functional_call(model, values, (x,)), y)

    H = hessian(loss_of)(torch.cat([p.reshape(-1) for p in params]))
    # aot_eager: the same AOTAutograd backward as the default inductor backend, which refuses
    # create_graph=True alike ("does not currently support double backward"), without a C++ build.
    compiled = torch.compile(model, backend="aot_eager")
    compiled(x)  # compiled now
    with pytest.raises(RuntimeError, match="double backward"):
        g = torch.autograd.grad(F.cross_entropy(compiled(x), y), list(model.parameters()), create_graph=True)
        torch.autograd.grad(g[0].sum(), list(model.parameters()))
    out = HessianMonitor("eigenvalues", k=2, tol=1e-9, max_iter=100).compute(_ctx(compiled, (x, y), F.cross_entropy))
    torch.testing.assert_close(torch.tensor([out["hessian_eig_1"], out["hessian_eig_2"]], dtype=torch.float64),
                               torch.linalg.eigvalsh(H).flip(0)[:2], rtol=1e-6, atol=1e-10)


def test_dict_batches_are_cloned_and_saved_by_the_monitor(tmp_path):
    model, batch, loss_fn = _gpt2()
    monitor = HessianMonitor("eigenvalues", k=1, tol=1e-6, max_iter=200)
    first = monitor.compute(_ctx(model, batch, loss_fn))
    batch[0]["input_ids"].fill_(0)  # the monitor holds its own copy
    torch.save(monitor.state_dict(), tmp_path / "state.pt")
    resumed = HessianMonitor("eigenvalues", k=1, tol=1e-6, max_iter=200)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    other = ({"input_ids": torch.ones(2, 8, dtype=torch.long), "labels": torch.ones(2, 8, dtype=torch.long)}, None)
    again = resumed.compute(_ctx(model, other, loss_fn))
    assert again["hessian_eig_1"] == pytest.approx(first["hessian_eig_1"], rel=1e-5)
