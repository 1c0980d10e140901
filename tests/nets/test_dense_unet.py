"""DenseUNet: built from MONAI DenseNet blocks, size checks, channel bookkeeping."""

from __future__ import annotations

import pytest
import torch
from monai.networks.blocks import UpSample
from monai.networks.nets.densenet import _DenseBlock, _Transition

from medfocal.nets import DenseUNet


def test_built_from_monai_blocks():
    net = DenseUNet(spatial_dims=3, in_channels=2, out_channels=2, block_config=(1, 2, 2))
    assert sum(isinstance(m, _DenseBlock) for m in net.modules()) == 3
    assert sum(isinstance(m, _Transition) for m in net.modules()) == 2
    assert sum(isinstance(m, UpSample) for m in net.modules()) == 2


@pytest.mark.parametrize("upsample", ["deconv", "nontrainable", "pixelshuffle"])
def test_upsample_modes(upsample):
    net = DenseUNet(spatial_dims=2, init_features=4, growth_rate=4, block_config=(1, 1, 1), upsample=upsample)
    assert net(torch.randn(1, 1, 16, 24)).shape == (1, 2, 16, 24)


def test_single_level_is_a_dense_block_with_a_classifier():
    net = DenseUNet(spatial_dims=2, block_config=(2,), init_features=4, growth_rate=2)
    assert net(torch.randn(1, 1, 7, 9)).shape == (1, 2, 7, 9)


def test_size_not_divisible_raises():
    net = DenseUNet(spatial_dims=3, block_config=(1, 1, 1), init_features=4, growth_rate=2)
    with pytest.raises(ValueError, match=r"divisible by 4, got \(16, 16, 18\)"):
        net(torch.randn(1, 1, 16, 16, 18))


def test_empty_block_config_raises():
    with pytest.raises(ValueError, match="at least one level"):
        DenseUNet(block_config=())


def test_default_3d_runs_on_a_small_patch():
    net = DenseUNet(spatial_dims=3, in_channels=2, out_channels=2)
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 2, 16, 16, 16)).shape == (1, 2, 16, 16, 16)


def test_strided_stem_runs_no_block_at_full_resolution():
    """stem_stride=2: every dense/decoder block sees half the input size; the logits are full size."""
    net = DenseUNet(spatial_dims=3, block_config=(1, 1), init_features=4, growth_rate=2, stem_stride=2)
    seen: list[tuple[int, ...]] = []
    for block in [*net.encoder, *net.decoder]:
        block.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[2:])))
    assert net(torch.randn(1, 1, 16, 16, 8)).shape == (1, 2, 16, 16, 8)
    assert max(seen) == (8, 8, 4)
    with pytest.raises(ValueError, match=r"divisible by 4, got \(16, 16, 6\)"):
        net(torch.randn(1, 1, 16, 16, 6))
    with pytest.raises(ValueError, match="stem_stride must be 1 or 2, got 3"):
        DenseUNet(stem_stride=3)
