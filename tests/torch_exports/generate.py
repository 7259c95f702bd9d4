"""Regenerate the real PyTorch exports that ``tests/test_torch_exports.py`` imports.

One small network holds the patterns PyTorch's exporters emit for the layers
of today's CNNs, each in the form that needs care: squeeze-excitation with
SiLU and hard sigmoid gates, hard swish, channel shuffle (chunk, view,
transpose), dense concatenation, ASPP (dilated branches, image pooling and
a bilinear resize to a computed size), a transposed-conv decoder, factorised
1x7/7x1 convolutions, ceil_mode pooling and pooling that leaves pads out of
its count, grouped convolution, a ConvNeXt block (7x7 depthwise, channel-last
LayerNorm, Linear layers and GELU, layer scale), ``F.pad``,
``padding='same'`` with dilation and an even kernel, leaky ReLU, tanh, a mean
over channels and a classifier head. Odd channel counts and non-square prime input sizes throughout.

It is exported twice: by the TorchScript exporter (``dynamo=False``, opset
17, whose ``F.pad`` is a ConstantOfShape/Slice/Transpose chain and whose
shapes are Shape/Gather arithmetic) and by the dynamo exporter (torch's
default since 2.9, opset 18, which writes default attributes out and gives
ReduceMean its axes as an input). Each ``.onnx`` sits beside an ``.npz``
with its input and PyTorch's output (onnxruntime cannot run every case:
a dilated 'same' conv, for one).

Needs torch and onnxscript: ``python tests/torch_exports/generate.py``.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).parent
INPUT_SHAPE = (2, 3, 31, 37)


def _conv_bn(cin: int, cout: int, k: int | tuple[int, int] = 3, stride: int = 1, groups: int = 1,
             dilation: int = 1, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    kh, kw = (k, k) if isinstance(k, int) else k
    pad = (kh // 2 * dilation, kw // 2 * dilation)
    return nn.Sequential(nn.Conv2d(cin, cout, (kh, kw), stride, pad, dilation=dilation, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), act())


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, gate: type[nn.Module]) -> None:
        super().__init__()
        self.reduce, self.expand, self.gate = nn.Conv2d(channels, 5, 1), nn.Conv2d(5, channels, 1), gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(F.relu(self.reduce(F.adaptive_avg_pool2d(x, 1)))))


class InvertedResidual(nn.Module):
    def __init__(self, channels: int, act: type[nn.Module], gate: type[nn.Module]) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(channels, 3 * channels, 1, act=act),
                                  _conv_bn(3 * channels, 3 * channels, 5, groups=3 * channels, act=act),
                                  SqueezeExcite(3 * channels, gate), nn.Conv2d(3 * channels, channels, 1, bias=False),
                                  nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ShuffleUnit(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(_conv_bn(half, half, 1), _conv_bn(half, half, 3, groups=half, act=nn.Identity),
                                    _conv_bn(half, half, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep, through = x.chunk(2, dim=1)
        y = torch.cat([keep, self.branch(through)], 1)
        n, c, h, w = y.shape
        return y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)


class ConvNeXtBlock(nn.Module):
    """As torchvision's: the MLP runs on channel-last (N, H, W, C) activations."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels))
        self.scale = nn.Parameter(torch.rand(channels) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm(self.depthwise(x).permute(0, 2, 3, 1))) * self.scale
        return x + y.permute(0, 3, 1, 2)


class Patterns(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 14, 3, stride=2, act=nn.SiLU)
        self.mbconv = InvertedResidual(14, nn.SiLU, nn.Sigmoid)
        self.mnv3 = InvertedResidual(14, nn.Hardswish, nn.Hardsigmoid)
        self.shuffle = ShuffleUnit(14)
        self.dense = _conv_bn(14, 7, 3)
        self.pool_ceil = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.aspp = nn.ModuleList([_conv_bn(21, 6, 1), _conv_bn(21, 6, 3, dilation=2), _conv_bn(21, 6, 3, dilation=3)])
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(21, 6, 1), nn.ReLU())
        self.factorised = nn.Sequential(nn.Conv2d(24, 9, (1, 7), padding=(0, 3)), nn.ReLU(),
                                        nn.Conv2d(9, 11, (7, 1), padding=(3, 0)), nn.ReLU())
        self.avg = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.grouped = _conv_bn(35, 35, 3, groups=5)
        self.convnext = ConvNeXtBlock(35)
        self.up = nn.ConvTranspose2d(35, 13, 2, 2)
        self.same_dilated = nn.Conv2d(13 + 14, 17, 3, padding="same", dilation=2)
        self.same_even = nn.Conv2d(17, 3, 4, padding="same")
        self.head = nn.Linear(35, 17)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.shuffle(self.mnv3(self.mbconv(self.stem(x))))
        d = torch.cat([s, self.dense(s)], 1)
        f = self.pool_ceil(d)
        pooled = F.interpolate(self.image_pool(f), size=f.shape[-2:], mode="bilinear", align_corners=False)
        a = torch.cat([m(f) for m in self.aspp] + [pooled], 1)
        g = self.convnext(self.grouped(torch.cat([self.factorised(a), self.avg(a)], 1)))
        logits = self.head(torch.flatten(F.adaptive_avg_pool2d(g, (1, 1)), 1))
        u = F.interpolate(self.up(g), size=s.shape[-2:], mode="bilinear", align_corners=False)
        m = F.leaky_relu(self.same_dilated(F.pad(torch.cat([u, s], 1), (1, 2, 0, 1))), 0.1)
        out = torch.tanh(self.same_even(m))
        return logits, out.mean(dim=1, keepdim=True) + out


def _model() -> nn.Module:
    """With random BatchNorm statistics: at their defaults a fold would be the identity."""
    torch.manual_seed(0)
    model = Patterns().eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return model


def main() -> None:
    model, x = _model(), torch.randn(*INPUT_SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outputs = [t.numpy() for t in model(x)]
    names = {"input_names": ["x"], "output_names": ["logits", "image"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), HERE / "patterns_torchscript_opset17.onnx", dynamo=False, opset_version=17,
                          **names)
        torch.onnx.export(model, (x,), HERE / "patterns_dynamo.onnx", dynamo=True, external_data=False, **names)
    np.savez(HERE / "patterns.npz", x=x.numpy(), logits=outputs[0], image=outputs[1])


if __name__ == "__main__":
    main()
