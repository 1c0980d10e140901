def test_unet_names_a_patch_its_strides_cannot_divide():
    import pytest
    import torch

    from medfocal.nets import UNet

    net = UNet(spatial_dims=2, channels=(4, 8, 16), strides=(2, 2))
    assert net(torch.zeros(1, 1, 12, 8)).shape == (1, 2, 12, 8)
    with pytest.raises(ValueError, match=r"spatial size \(12, 10\) is not divisible by 4"):
        net(torch.zeros(1, 1, 12, 10))
