"""DetectionRetinaNet: pyramid shapes in 2D and 3D, the prior bias of the head, spec round trip, errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from medfocal.nets import DetectionRetinaNet, build_model
from medfocal.nets.detection import detection_size_divisible

TINY = {"layers": [1, 1, 1, 1], "block_inplanes": [8, 8, 16, 16], "fpn_channels": 8}


@pytest.mark.parametrize(
    ("dims", "stride", "returned", "shape"),
    [(2, 2, [1, 2, 3], (2, 3, 64, 96)), (3, [2, 2, 1], [1, 2], (1, 1, 32, 32, 16))],
)
def test_pyramid_shapes(dims, stride, returned, shape):
    torch.manual_seed(0)
    net = DetectionRetinaNet(
        dims, shape[1], num_classes=2, num_anchors=3, conv1_t_stride=stride, returned_layers=returned, **TINY
    ).eval()
    with torch.no_grad():
        out = net(torch.randn(shape))
    strides = [stride] * dims if isinstance(stride, int) else stride
    assert net.num_levels == len(returned) + 1 == len(out["classification"]) == len(out["box_regression"])
    for level, (cls, box) in enumerate(zip(out["classification"], out["box_regression"])):
        # level l of stage r has stride conv1 * 2 (max-pool) * 2 ** (r - 1); the extra level halves the last
        r = returned[level] if level < len(returned) else returned[-1] + 1
        spatial = tuple(math.ceil(n / (s * 2**r)) for n, s in zip(shape[2:], strides))
        assert cls.shape == (shape[0], 3 * 2, *spatial)
        assert box.shape == (shape[0], 3 * 2 * dims, *spatial)
    assert net.size_divisible == detection_size_divisible(strides, returned)
    assert net.size_divisible == tuple(2 * s * 2 ** max(returned) for s in strides)


@pytest.mark.parametrize("prior", [0.01, [0.02, 0.3, 0.5]])
def test_head_bias_is_the_class_prior(prior):
    net = DetectionRetinaNet(2, 3, num_classes=3, num_anchors=4, prior=prior, **TINY)
    bias = net.classification_head.cls_logits.bias.detach()
    priors = [prior] * 3 if isinstance(prior, float) else prior
    expected = torch.tensor([-math.log((1 - p) / p) for p in priors])
    assert bias.shape == (4 * 3,)
    # channel a * C + c is anchor a, class c (MONAI RetinaNetDetector's reshape)
    torch.testing.assert_close(bias.view(4, 3), expected.expand(4, 3))
    # with the head weights ~N(0, 0.01), sigmoid of the logits on any image starts near the prior
    with torch.no_grad():
        logits = net.eval()(torch.randn(1, 3, 64, 64))["classification"][0]
    probs = torch.sigmoid(logits).view(1, 4, 3, -1).mean(dim=(0, 1, 3))
    torch.testing.assert_close(probs, torch.tensor(priors), atol=0.02, rtol=0.2)


def test_rebuild_from_spec_gives_same_outputs():
    torch.manual_seed(0)
    net = DetectionRetinaNet(
        3, 1, num_classes=1, num_anchors=3, conv1_t_stride=[2, 2, 1], returned_layers=[1, 2], **TINY
    ).eval()
    spec = json.loads(json.dumps(net._medfocal_spec))
    assert spec["class_path"] == "medfocal.nets.DetectionRetinaNet"
    clone = build_model(spec).eval()
    clone.load_state_dict(net.state_dict())
    x = torch.randn(1, 1, 32, 32, 16)
    with torch.no_grad():
        a, b = net(x), clone(x)
    for key in ("classification", "box_regression"):
        for u, v in zip(a[key], b[key]):
            torch.testing.assert_close(u, v)


def test_backbone_stages_beyond_the_pyramid_are_not_built():
    net = DetectionRetinaNet(2, 3, num_classes=1, num_anchors=1, returned_layers=[1, 2], **TINY)
    assert list(net.feature_extractor.body) == ["layer1", "layer2"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fpn_channels": 12}, "fpn_channels must be a multiple of 8"),
        ({"returned_layers": [2, 1]}, "returned_layers must be increasing values in 1..4"),
        ({"conv1_t_stride": [2, 2, 1]}, "conv1_t_stride needs 2 values (one per axis), got [2, 2, 1]"),
        ({"block": "wide"}, "block must be one of ['basic', 'bottleneck'], not 'wide'"),
    ],
)
def test_bad_arguments(kwargs, message):
    args = {**TINY, **kwargs}
    with pytest.raises(ValueError, match="^" + __import__("re").escape(message)):
        DetectionRetinaNet(2, 3, num_classes=2, num_anchors=3, **args)


def test_docstring_example():
    import doctest

    import medfocal.nets.detection as mod

    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
