"""Three small 3-D segmentation networks of different architectures (the demo ensemble).

AbdomenAtlas-8K used three architectures (U-Net, nnU-Net, Swin UNETR) so that the models'
disagreement says something; the demo mirrors that with three tiny, CPU-friendly designs
that differ in how they see context and in their normalisation layers:

* :class:`TinyUNet` — an encoder–decoder with skip connections, InstanceNorm;
* :class:`DilatedResNet` — residual blocks with growing dilation at half resolution, BatchNorm;
* :class:`ConvMixer3d` — a patch-embedding ConvMixer (depthwise large-kernel mixing), GroupNorm.

Every network maps ``(B, 1, X, Y, Z)`` to ``(B, C, X, Y, Z)`` logits for any X, Y, Z
divisible by 8 (the sliding window pads patches to that).

>>> import torch
>>> net = TinyUNet(out_channels=3)
>>> net(torch.zeros(1, 1, 16, 16, 16)).shape
torch.Size([1, 3, 16, 16, 16])
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _block(cin: int, cout: int, norm: str, dilation: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv3d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False)]
    if norm == "instance":
        layers.append(nn.InstanceNorm3d(cout, affine=True))
    elif norm == "batch":
        layers.append(nn.BatchNorm3d(cout))
    else:
        layers.append(nn.GroupNorm(4, cout))
    layers.append(nn.LeakyReLU(0.01, inplace=True))
    return nn.Sequential(*layers)


class _Head(nn.Module):
    """Full-resolution head: upsampled coarse features + a cheap 3³ fine branch, 1³ classifier."""

    def __init__(self, in_channels: int, coarse: int, out_channels: int, norm: str) -> None:
        super().__init__()
        self.fine = _block(in_channels, 4, norm)
        self.classify = nn.Conv3d(coarse + 4, out_channels, 1)

    def forward(self, x: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(coarse, size=x.shape[2:], mode="trilinear", align_corners=False)
        return self.classify(torch.cat([up, self.fine(x)], 1))


class TinyUNet(nn.Module):
    """U-Net on a stride-2 stem (levels 1/2, 1/4, 1/8) with skip connections, InstanceNorm."""

    def __init__(self, in_channels: int = 1, out_channels: int = 7, width: int = 8) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv3d(in_channels, w, 2, stride=2), nn.InstanceNorm3d(w, affine=True),
                                  nn.LeakyReLU(0.01, inplace=True))
        self.enc1 = _block(w, w, "instance")
        self.enc2 = nn.Sequential(_block(w, 2 * w, "instance"), _block(2 * w, 2 * w, "instance"))
        self.mid = nn.Sequential(_block(2 * w, 4 * w, "instance"), _block(4 * w, 4 * w, "instance", 2))
        self.up2 = nn.ConvTranspose3d(4 * w, 2 * w, 2, stride=2)
        self.dec2 = _block(4 * w, 2 * w, "instance")
        self.up1 = nn.ConvTranspose3d(2 * w, w, 2, stride=2)
        self.dec1 = _block(2 * w, w, "instance")
        self.head = _Head(in_channels, w, out_channels, "instance")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(self.stem(x))
        e2 = self.enc2(F.max_pool3d(e1, 2))
        m = self.mid(F.max_pool3d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.head(x, d1)


class _Residual(nn.Module):
    def __init__(self, ch: int, dilation: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_block(ch, ch, "batch", dilation), nn.Conv3d(ch, ch, 3, padding=1, bias=False),
                                  nn.BatchNorm3d(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.body(x), 0.01)


class DilatedResNet(nn.Module):
    """Stride-4 stem, residual blocks with dilations 1-2-4-8, BatchNorm, upsampled head."""

    def __init__(self, in_channels: int = 1, out_channels: int = 7, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(in_channels, width // 2, 2, stride=2), nn.BatchNorm3d(width // 2),
                                  nn.LeakyReLU(0.01, inplace=True),
                                  nn.Conv3d(width // 2, width, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm3d(width), nn.LeakyReLU(0.01, inplace=True))
        self.blocks = nn.Sequential(*[_Residual(width, d) for d in (1, 2, 4, 8)])
        self.head = _Head(in_channels, width, out_channels, "batch")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x, self.blocks(self.stem(x)))


class _MixerBlock(nn.Module):
    def __init__(self, ch: int, kernel: int) -> None:
        super().__init__()
        self.spatial = nn.Sequential(nn.Conv3d(ch, ch, kernel, padding=kernel // 2, groups=ch), nn.GELU(),
                                     nn.GroupNorm(4, ch))
        self.channel = nn.Sequential(nn.Conv3d(ch, ch, 1), nn.GELU(), nn.GroupNorm(4, ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel(x + self.spatial(x))


class ConvMixer3d(nn.Module):
    """Patch embedding (4³ patches) + ConvMixer blocks with 5³ depthwise kernels, GroupNorm."""

    def __init__(self, in_channels: int = 1, out_channels: int = 7, width: int = 24, depth: int = 4) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Conv3d(in_channels, width, 4, stride=4), nn.GELU(), nn.GroupNorm(4, width))
        self.mix = nn.Sequential(*[_MixerBlock(width, 5) for _ in range(depth)])
        self.head = _Head(in_channels, width, out_channels, "group")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x, self.mix(self.embed(x)))


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "tiny_unet": TinyUNet, "dilated_resnet": DilatedResNet, "convmixer": ConvMixer3d,
}
