"""The compiled one-pass kernels of the fused softmax loss (medfocal/losses/_compiled.py).

Loss values and gradients must equal the eager fused path and MONAI at float64 tolerance; each case that
compiles kernels (seconds per variant) is marked slow.
"""

from __future__ import annotations

import pytest
import torch
from _losses_ref import one_hot, rand_case, soft_dice_ref, softmax_focal_ref
from monai.losses import DiceCELoss as MonaiDiceCELoss
from monai.losses import DiceFocalLoss as MonaiDiceFocalLoss
from monai.losses import DiceLoss as MonaiDiceLoss
from monai.losses import FocalLoss as MonaiFocalLoss

from medfocal.losses import (
    DiceCELoss,
    DiceFocalLoss,
    FocalLoss,
    FocalTverskyLoss,
    JaccardFocalLoss,
    TverskyFocalLoss,
    _targets,
)
from medfocal.losses import _compiled as compiled

# float64 sums in a different order: far below any float32 effect
TIGHT = {"rtol": 1e-9, "atol": 1e-15}


@pytest.fixture
def mode():
    """Set the compiled-loss mode for one test; restore the default afterwards."""
    yield compiled.set_mode
    compiled.set_mode(None)
    compiled.reset()


def value_and_grad(loss, x, t, mode_name):
    compiled.set_mode(mode_name)
    value = loss(x, t)
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad, value.grad_fn


# one compiled variant per line (B=2, C=3, float64); 2D and 3D share it (the voxel count is dynamic)
CASES = [
    pytest.param(lambda: DiceFocalLoss(gamma=2.0), None, id="dice_focal"),
    pytest.param(lambda: DiceCELoss(), None, id="dice_ce"),
    pytest.param(
        lambda: JaccardFocalLoss(gamma=0.5, alpha=0.25, weight=[0.5, 1.0, 2.0], ignore_index=255),
        255,
        id="jaccard_focal_alpha_weight_ignore",
    ),
    pytest.param(lambda: FocalTverskyLoss(), None, id="focal_tversky"),
    pytest.param(lambda: FocalLoss(gamma=2.0, alpha=[0.2, 0.3, 0.5]), None, id="focal_alpha"),
    pytest.param(lambda: TverskyFocalLoss(gamma=3.0, reduction="sum"), None, id="tversky_focal_sum"),
]


@pytest.mark.slow
@pytest.mark.parametrize("make,ignore", CASES)
def test_compiled_equals_eager_fused_path(make, ignore, seg_shape, mode):
    x, t = rand_case(seg_shape, ignore=ignore)
    loss = make()
    eager_value, eager_grad, eager_fn = value_and_grad(loss, x, t, "off")
    value, grad, fn = value_and_grad(loss, x, t, "always")
    assert type(eager_fn).__name__ == "FusedSoftmaxIndexLossBackward"
    assert type(fn).__name__ == "CompiledSoftmaxIndexLossBackward"
    torch.testing.assert_close(value, eager_value, **TIGHT)
    torch.testing.assert_close(grad, eager_grad, **TIGHT)


@pytest.mark.slow
def test_compiled_dice_focal_equals_formula_and_monai(seg_shape, mode):
    """Dice + softmax focal = MONAI DiceLoss + C x MONAI FocalLoss(use_softmax) (which averages over the
    channels too, and computes in float32), and the written-out formula: values and gradients."""
    mode("always")
    x, t = rand_case(seg_shape)
    c = seg_shape[1]
    ours = DiceFocalLoss(gamma=2.0)(x, t)
    monai_dice = MonaiDiceLoss(softmax=True, to_onehot_y=True)(x, t[:, None])
    monai_focal = MonaiFocalLoss(use_softmax=True, to_onehot_y=True, gamma=2.0)(x, t[:, None])
    focal = softmax_focal_ref(x, t, 2.0)
    formula = focal + soft_dice_ref(torch.softmax(x, 1), one_hot(t, c)).mean()
    torch.testing.assert_close((ours - monai_dice).float(), c * monai_focal)
    for ref in (monai_dice + focal, formula):
        torch.testing.assert_close(ours, ref, **TIGHT)
        torch.testing.assert_close(
            torch.autograd.grad(ours, x, retain_graph=True)[0],
            torch.autograd.grad(ref, x, retain_graph=True)[0],
            **TIGHT,
        )


@pytest.mark.slow
def test_compiled_dice_ce_equals_monai(seg_shape, mode):
    mode("always")
    x, t = rand_case(seg_shape)
    ours = DiceCELoss(lambda_dice=0.7, lambda_ce=1.3)(x, t)
    ref = MonaiDiceCELoss(softmax=True, to_onehot_y=True, lambda_dice=0.7, lambda_ce=1.3)(x, t[:, None])
    torch.testing.assert_close(ours, ref, **TIGHT)
    torch.testing.assert_close(torch.autograd.grad(ours, x)[0], torch.autograd.grad(ref, x)[0], **TIGHT)


@pytest.mark.slow
def test_compiled_half_inputs_run_in_float32(mode):
    """AMP: bfloat16 logits are upcast; loss and gradient equal the float32 computation of the same values."""
    mode("always")
    x, t = rand_case((2, 3, 6, 5, 4), dtype=torch.bfloat16, scale=4.0)
    xf = x.detach().float().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = DiceFocalLoss()(x, t)
    full = DiceFocalLoss()(xf, t)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, full, rtol=1e-6, atol=1e-7)
    (g_low,), (g_full,) = torch.autograd.grad(low, x), torch.autograd.grad(full, xf)
    assert g_low.dtype == torch.bfloat16
    torch.testing.assert_close(g_low, g_full.bfloat16())


@pytest.mark.slow
def test_compiled_extreme_logits_finite_and_flushed(mode):
    """Logits of ±1e4 (probabilities of exactly 0 and 1 in float32): finite, equal to the eager path, and
    no gradient entry between 0 and 1e-30 (subnormals slow every later CPU kernel)."""
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 3, 8, 8, 4, generator=generator) * 20.0).requires_grad_()
    x.data[:, :, 0] = torch.tensor([1e4, -1e4, 0.0]).view(1, 3, 1, 1)
    t = torch.randint(0, 3, (2, 8, 8, 4), generator=generator)
    eager_value, eager_grad, _ = value_and_grad(DiceFocalLoss(), x, t, "off")
    value, grad, _ = value_and_grad(DiceFocalLoss(), x, t, "always")
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    assert not ((grad.abs() > 0) & (grad.abs() < 1e-30)).any()
    torch.testing.assert_close(value, eager_value)
    torch.testing.assert_close(grad, eager_grad, rtol=1e-5, atol=1e-9)


@pytest.mark.slow
def test_compiled_no_grad_scaled_backward_and_double_backward(mode):
    mode("always")
    x, t = rand_case((2, 3, 5, 4, 3))
    loss = DiceFocalLoss()
    with torch.no_grad():
        plain = loss(x, t)
    value = loss(x, t)
    torch.testing.assert_close(plain, value.detach(), **TIGHT)
    (g1,) = torch.autograd.grad(value, x, retain_graph=True)
    (g3,) = torch.autograd.grad(3.0 * value, x, retain_graph=True)
    torch.testing.assert_close(g3, 3.0 * g1, **TIGHT)
    (g,) = torch.autograd.grad(value, x, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(g.sum(), x)


@pytest.mark.slow
@pytest.mark.parametrize(
    "make",
    [lambda: DiceFocalLoss(), lambda: FocalLoss(gamma=2.0, alpha=[0.2, 0.3, 0.5])],
    ids=["dice", "focal"],
)
def test_compiled_checks_the_label_range_in_its_own_pass(make, mode, monkeypatch):
    """The forward kernel reads the index range: no separate pass over the target when the labels are
    right, the usual ValueError when they are not (an out-of-range label matches no class in the kernel)."""
    mode("always")
    calls = []
    original = _targets._check_index_range
    monkeypatch.setattr(_targets, "_check_index_range", lambda *a: calls.append(1) or original(*a))
    x, t = rand_case((2, 3, 5, 4, 3))
    make()(x, t)
    assert not calls
    for wrong, seen in ((3, r"\[0, 3\]"), (-1, r"\[-1, 2\]")):
        bad = t.clone()
        bad[1, 2, 3, 0] = wrong
        with pytest.raises(
            ValueError, match=r"class indices must lie in \[0, 2\] for logits with C=3, got values in " + seen
        ):
            make()(x, bad)
    assert len(calls) == 2


SIGMOID_CASES = [
    pytest.param(lambda: DiceFocalLoss("sigmoid", gamma=2.0), None, id="dice_focal"),
    pytest.param(
        lambda: JaccardFocalLoss("sigmoid", gamma=0.5, alpha=0.25, include_background=False),
        None,
        id="jaccard_focal_alpha_no_background",
    ),
    pytest.param(
        lambda: DiceFocalLoss("sigmoid", alpha=[0.1, 0.5, 0.7], weight=[0.2, 1.0, 3.0], ignore_index=255),
        255,
        id="dice_focal_alpha_weight_ignore",
    ),
    pytest.param(lambda: FocalLoss("sigmoid", gamma=0.0, reduction="sum"), None, id="bce_sum"),
]


@pytest.mark.slow
@pytest.mark.parametrize("make,ignore", SIGMOID_CASES)
def test_compiled_sigmoid_equals_autograd_path(make, ignore, seg_shape, mode, monkeypatch):
    """Sigmoid (index targets become one-hot): the compiled sums give the autograd path's values and
    gradients."""
    calls = []
    kernel = compiled.sigmoid_sums_kernel
    monkeypatch.setattr(compiled, "sigmoid_sums_kernel", lambda *a: calls.append(1) or kernel(*a))
    x, t = rand_case(seg_shape, ignore=ignore)
    loss = make()
    eager_value, eager_grad, _ = value_and_grad(loss, x, t, "off")
    assert not calls
    value, grad, _ = value_and_grad(loss, x, t, "always")
    assert calls and compiled._state["broken"] is None
    torch.testing.assert_close(value, eager_value, **TIGHT)
    torch.testing.assert_close(grad, eager_grad, **TIGHT)


@pytest.mark.slow
def test_compiled_sigmoid_dice_focal_equals_monai(seg_shape, mode):
    mode("always")
    x, _ = rand_case(seg_shape)
    y = (torch.rand(seg_shape) > 0.6).double()
    ours = DiceFocalLoss("sigmoid", gamma=2.0, alpha=0.25)(x, y)
    ref = MonaiDiceFocalLoss(sigmoid=True, gamma=2.0, alpha=0.25)(x, y)  # its focal term: float32 inside
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(
        torch.autograd.grad(ours, x)[0], torch.autograd.grad(ref, x)[0], rtol=1e-5, atol=1e-9
    )


def test_mode_and_when_it_applies(mode, monkeypatch):
    small, large = torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, compiled.MIN_NUMEL // 6 + 1)
    monkeypatch.delenv(compiled.ENV, raising=False)
    assert compiled.mode() == "auto"
    assert not compiled.applies(small) and compiled.applies(large)
    assert not compiled.applies(large.half())  # the losses upcast first; anything else stays eager
    assert not compiled.applies(torch.zeros(2, compiled.MAX_CLASSES + 1, compiled.MIN_NUMEL))
    monkeypatch.setenv(compiled.ENV, "off")
    assert not compiled.applies(large)
    monkeypatch.setenv(compiled.ENV, "Always")
    assert compiled.applies(small)
    mode("off")  # set_mode wins over the environment
    assert not compiled.applies(small)
    monkeypatch.setenv(compiled.ENV, "fast")
    mode(None)
    with pytest.raises(
        ValueError, match=r"MEDFOCAL_COMPILED_LOSS: expected one of \('auto', 'always', 'off'\)"
    ):
        compiled.mode()
    with pytest.raises(ValueError, match="compiled loss mode: expected one of"):
        compiled.set_mode("on")


class _OnCuda:
    """What :func:`compiled.applies` reads of a CUDA tensor, on a CPU-only machine."""

    def __init__(self, t: torch.Tensor) -> None:
        self.t, self.shape, self.dtype, self.device = t, t.shape, t.dtype, torch.device("cuda", 0)

    def numel(self) -> int:
        return self.t.numel()


def test_devices_the_kernels_run_on(mode, monkeypatch):
    large = torch.zeros(2, 3, compiled.MIN_NUMEL // 6 + 1)
    monkeypatch.delenv(compiled.DEVICES_ENV, raising=False)
    monkeypatch.delenv(compiled.ENV, raising=False)
    assert compiled.devices() == ("cpu",)
    assert compiled.applies(large) and not compiled.applies(_OnCuda(large))  # the GPU opts in
    monkeypatch.setenv(compiled.DEVICES_ENV, " CPU, cuda ")
    assert compiled.devices() == ("cpu", "cuda")
    assert compiled.applies(large) and compiled.applies(_OnCuda(large))
    monkeypatch.setenv(compiled.DEVICES_ENV, "cuda")
    assert not compiled.applies(large) and compiled.applies(_OnCuda(large))
    try:
        compiled.set_devices(["cpu"])  # wins over the environment
        assert compiled.applies(large) and not compiled.applies(_OnCuda(large))
        with pytest.raises(ValueError, match=r"compiled loss devices: .* got \['mps'\]"):
            compiled.set_devices(["cpu", "mps"])
    finally:
        compiled.set_devices(None)
    monkeypatch.setenv(compiled.DEVICES_ENV, "gpu")
    with pytest.raises(ValueError, match=r"MEDFOCAL_COMPILED_LOSS_DEVICES: expected device types among"):
        compiled.applies(large)


def test_compile_failure_falls_back_to_eager_once(mode, monkeypatch):
    """No C++ compiler (simulated): one warning, the same result, then the eager fused path."""

    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

        return run

    monkeypatch.setattr(compiled.torch, "compile", broken_compile)
    monkeypatch.setattr(compiled, "voxel_sums_kernel", compiled._Kernel(compiled.voxel_sums))
    monkeypatch.setattr(compiled, "grad_logits_kernel", compiled._Kernel(compiled.grad_logits))
    x, t = rand_case((2, 3, 4, 5))
    eager_value, eager_grad, _ = value_and_grad(DiceFocalLoss(), x, t, "off")
    mode("always")
    with pytest.warns(RuntimeWarning, match="compiling the fused loss kernel failed .*No working C"):
        value, grad, fn = value_and_grad(DiceFocalLoss(), x, t, "always")
    assert type(fn).__name__ == "CompiledSoftmaxIndexLossBackward"  # this call: kernels run eagerly
    torch.testing.assert_close(value, eager_value, **TIGHT)
    torch.testing.assert_close(grad, eager_grad, **TIGHT)
    assert not compiled.applies(x)
    _, _, fn = value_and_grad(DiceFocalLoss(), x, t, "always")
    assert type(fn).__name__ == "FusedSoftmaxIndexLossBackward"


def test_kernel_input_error_is_raised_not_taken_for_a_compiler_failure(mode, monkeypatch):
    """A wrong input fails in the eager rerun too: its error propagates and compilation stays enabled."""

    def failing_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("compiled: size mismatch")

        return run

    monkeypatch.setattr(compiled.torch, "compile", failing_compile)
    kernel = compiled._Kernel(compiled.voxel_sums)
    x, idx = torch.zeros(2, 3, 10), torch.zeros(2, 7, dtype=torch.long)
    with pytest.raises(RuntimeError, match="must match the size"):
        kernel(x, idx, None, None, 2.0, True, True)
    assert compiled.applies(torch.zeros(2, 3, compiled.MIN_NUMEL))
