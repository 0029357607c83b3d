import gc
import weakref

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from phasetrain.curvature import HessianOperator, hessian_vector_product


def test_matvec_equals_dense_hessian_times_vector(problem):
    model, batch, H = problem
    gen = torch.Generator().manual_seed(2)
    vs = torch.randn(3, H.shape[0], generator=gen, dtype=torch.float64)
    with HessianOperator(model, F.cross_entropy, [batch]) as op:
        assert op.num_params == H.shape[0] and op.dtype == torch.float64
        for v in vs:
            torch.testing.assert_close(op.matvec(v), H @ v, rtol=1e-10, atol=1e-12)
        assert op.num_matvecs == 3


def test_one_shot_hvp_equals_dense_product(problem):
    model, batch, H = problem
    v = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(hessian_vector_product(model, F.cross_entropy, batch, v), H @ v)


def test_several_batches_average_weighted_by_batch_size(dense):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 2, (8,))
    H = dense(model, F.cross_entropy, x, y)
    v = torch.randn(H.shape[0], dtype=torch.float64)
    with HessianOperator(model, F.cross_entropy, [(x[:3], y[:3]), (x[3:], y[3:])]) as op:
        torch.testing.assert_close(op.matvec(v), H @ v)


def test_unused_parameter_has_zero_hessian_rows(dense):
    class WithUnused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(3, 2)
            self.unused = nn.Linear(3, 2)

        def forward(self, x):
            return self.used(x).tanh()

    torch.manual_seed(0)
    model = WithUnused().double()
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.randint(0, 2, (6,))
    v = torch.randn(16, dtype=torch.float64)
    with HessianOperator(model, F.cross_entropy, [(x, y)]) as op:
        hv = op.matvec(v)
    H_used = dense(model.used.requires_grad_(True), lambda out, t: F.cross_entropy(out.tanh(), t), x, y)
    torch.testing.assert_close(hv[:8], H_used @ v[:8])
    assert torch.all(hv[8:] == 0)


def test_tuple_inputs_are_unpacked_into_the_call():
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(4, 2)

        def forward(self, x, z):
            return self.a(x) * torch.tanh(self.b(z))

    torch.manual_seed(0)
    model = TwoInputs().double()
    x, z, y = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64), torch.randint(0, 2, (5,))
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    got = hessian_vector_product(model, F.cross_entropy, ((x, z), y), v)
    params = list(model.parameters())
    grads = torch.autograd.grad(F.cross_entropy(model(x, z), y), params, create_graph=True)
    flat_g = torch.cat([g.reshape(-1) for g in grads])
    want = torch.cat([h.reshape(-1) for h in torch.autograd.grad(flat_g @ v, params)])
    torch.testing.assert_close(got, want)


def test_matvec_leaves_parameter_grads_untouched(problem):
    model, batch, H = problem
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    with HessianOperator(model, F.cross_entropy, [batch]) as op:
        op.matvec(torch.ones(H.shape[0], dtype=torch.float64))
    assert all(torch.all(p.grad == 7.0) for p in model.parameters())


def test_close_frees_the_gradient_graph_and_blocks_further_products():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    losses = []

    def loss_fn(out, y):
        loss = F.cross_entropy(out, y)
        losses.append(weakref.ref(loss))
        return loss

    batch = (torch.randn(5, 3), torch.randint(0, 2, (5,)))
    with HessianOperator(model, loss_fn, [batch]) as op:
        op.matvec(torch.ones(op.num_params))
    gc.collect()
    assert losses[0]() is None  # the graph (which holds the loss) is gone
    with pytest.raises(RuntimeError, match="closed"):
        op.matvec(torch.ones(op.num_params))


def test_bad_arguments_are_rejected_with_their_names():
    model = nn.Linear(3, 2)
    batch = (torch.randn(4, 3), torch.randint(0, 2, (4,)))
    with pytest.raises(ValueError, match="batches"):
        HessianOperator(model, F.cross_entropy, [])
    with pytest.raises(TypeError, match="batch must be a pair"):
        HessianOperator(model, F.cross_entropy, [torch.randn(4, 3)])
    with pytest.raises(TypeError, match="inputs"):
        HessianOperator(model, F.cross_entropy, [("text", batch[1])])
    with pytest.raises(TypeError, match="model"):
        HessianOperator(lambda x: x, F.cross_entropy, [batch])
    with pytest.raises(TypeError, match="targets"):
        HessianOperator(model, F.cross_entropy, [(batch[0], 3)])
    with pytest.raises(TypeError, match="no tensor with a batch dimension"):
        HessianOperator(model, F.cross_entropy, [({"x": 1}, None)])
    op = HessianOperator(model, F.cross_entropy, [batch])
    with pytest.raises(ValueError, match=r"v must have shape \(8,\)"):
        op.matvec(torch.ones(7))
    op.close()
