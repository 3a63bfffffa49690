"""Dense and classification models around any timm feature extractor.

As in segmentation_models.pytorch, the encoder (``backbone``), decoder and head are separate
modules joined only by the encoder's channel list, so a backbone trained under one head (RCKD
stage 1, dense) moves to another (stage 2, classification) by its state dict alone.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d, NormMlpClassifierHead

from napari_rckd.errors import RckdError
from napari_rckd.models.config import ModelConfig

DECODER_CHANNELS = 64


def decoder_widths(encoder_channels: list[int], decoder: str) -> list[int]:
    """Channels of the decoder at each encoder level.

    ``standard`` (and ``detail``, which adds `DetailRefiner` after it): 64 everywhere. ``light``: as wide as the encoder's own features at that level
    (rounded up to a multiple of 8 for GroupNorm), at most 64, so a backbone with thin
    high-resolution stages (EfficientNet-B0: 16 channels at stride 2) is not refined at 4× its
    width where the maps are largest; for backbones at least 64 wide everywhere it is standard.
    """
    if decoder in ("standard", "detail"):
        return [DECODER_CHANNELS] * len(encoder_channels)
    return [min(DECODER_CHANNELS, -(-c // 8) * 8) for c in encoder_channels]


class UNetDecoder(nn.Module):
    """Light FPN/U-Net decoder: project every scale to its width, merge top-down, refine (3×3).

    Returns features at the finest encoder scale. With one width for all levels (standard) it
    costs about 0.2M parameters next to a 3M-parameter backbone; a coarser level narrower or
    wider than the next finer one is projected (1×1) before it is upsampled.
    """

    def __init__(self, encoder_channels: list[int], widths: list[int] | None = None):
        super().__init__()
        widths = widths or [DECODER_CHANNELS] * len(encoder_channels)
        self.lateral = nn.ModuleList(
            nn.Conv2d(c, w, kernel_size=1) for c, w in zip(encoder_channels, widths, strict=True)
        )
        self.narrow = nn.ModuleList(
            nn.Identity() if coarse == fine else nn.Conv2d(coarse, fine, kernel_size=1)
            for fine, coarse in zip(widths[:-1], widths[1:], strict=True)
        )
        self.refine = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(w, w, kernel_size=3, padding=1, bias=False),
                nn.GroupNorm(8, w),  # batch-size independent: training batches are small
                nn.ReLU(inplace=True),
            )
            for w in widths[:-1]
        )
        self.out_channels = widths[0]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.lateral[-1](features[-1])
        for i in reversed(range(len(features) - 1)):
            skip = self.lateral[i](features[i])
            x = F.interpolate(self.narrow[i](x), size=skip.shape[-2:], mode="nearest") + skip
            x = self.refine[i](x)
        return x


class SegmentationHead(nn.Module):
    """1×1 conv to per-class logits, then bilinear upsampling to the input size."""

    def __init__(self, in_channels: int, num_outputs: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_outputs, kernel_size=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = self.conv(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class DetailRefiner(nn.Module):
    """Corrects the decoder's logits at stride 2 with features read from the image itself.

    The decoder ends at the encoder's finest scale (stride 4: 2 µm per feature at 0.5 µm/px),
    too coarse for the one-micron gaps between touching nuclei that separate instances. A
    stem at stride 2 adds what the image shows there; its last layer starts at zero, so a
    model loaded from a checkpoint without it starts exactly where that checkpoint was.
    """

    WIDTH = 24

    def __init__(self, decoder_channels: int, num_outputs: int):
        super().__init__()
        width = self.WIDTH
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, kernel_size=3, stride=2, padding=1, bias=False),
            nn.GroupNorm(8, width),
            nn.ReLU(inplace=True),
        )
        self.project = nn.Conv2d(decoder_channels, width, kernel_size=1)
        self.mix = nn.Sequential(
            nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False),
            nn.GroupNorm(8, width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, num_outputs, kernel_size=1),
        )
        nn.init.zeros_(self.mix[-1].weight)
        nn.init.zeros_(self.mix[-1].bias)

    def forward(
        self, image: torch.Tensor, decoded: torch.Tensor, coarse: torch.Tensor
    ) -> torch.Tensor:
        detail = self.stem(image)
        half = detail.shape[-2:]
        detail = detail + F.interpolate(self.project(decoded), size=half, mode="bilinear")
        coarse = F.interpolate(coarse, size=half, mode="bilinear", align_corners=False)
        logits = coarse + self.mix(detail)
        return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)


class _BackboneModel(nn.Module):
    """Shared parts: normalisation inside the model, the input-size check, encoder freezing."""

    def __init__(self, config: ModelConfig, backbone: nn.Module):
        super().__init__()
        self.config = config
        self.backbone = backbone
        # Not persistent: they come from the config, which the checkpoint stores anyway.
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)
        self.encoder_frozen = False

    @property
    def size_multiple(self) -> int:
        return int(self.backbone.feature_info.reduction()[-1])

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise RckdError(
                f"model input has shape {tuple(x.shape)}; it needs B×3×H×W float RGB in [0, 1]."
            )
        multiple = self.size_multiple
        height, width = x.shape[-2:]
        if height % multiple or width % multiple:
            fit_h = max(multiple, round(height / multiple) * multiple)
            fit_w = max(multiple, round(width / multiple) * multiple)
            raise RckdError(
                f"input of {height}×{width} px does not fit backbone {self.config.backbone!r}: "
                f"height and width must be multiples of {multiple} (e.g. {fit_h}×{fit_w}); "
                "pad or crop the tile."
            )

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return (x - self.mean) / self.std

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone(self.normalise(x))

    def freeze_encoder(self) -> None:
        """Stop training the backbone (weights fixed, normalisation statistics frozen)."""
        self.encoder_frozen = True
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(False)
        self.backbone.eval()

    def unfreeze_encoder(self) -> None:
        self.encoder_frozen = False
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(True)
        self.backbone.train(self.training)

    def train(self, mode: bool = True) -> _BackboneModel:
        super().train(mode)
        if self.encoder_frozen:
            self.backbone.eval()
        return self


class DenseModel(_BackboneModel):
    """Per-pixel logits (B×C×H×W at input resolution): teacher responses, cancer regions."""

    def __init__(self, config: ModelConfig, backbone: nn.Module):
        super().__init__(config, backbone)
        channels = backbone.feature_info.channels()
        self.decoder = UNetDecoder(channels, decoder_widths(channels, config.decoder))
        self.head = SegmentationHead(self.decoder.out_channels, config.num_outputs)
        self.detail = (
            DetailRefiner(self.decoder.out_channels, config.num_outputs)
            if config.decoder == "detail"
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.detail is None:
            return self.head(self.decoder(self.encode(x)), size=x.shape[-2:])
        image = self.normalise(x)
        decoded = self.decoder(self.backbone(image))
        return self.detail(image, decoded, self.head.conv(decoded))


class PyramidPoolHead(nn.Module):
    """Tile logits from every stage's average-pooled features, concatenated: LayerNorm, Linear.

    RCKD stage 1 trains the whole encoder through a decoder that reads every scale, so what a
    student learned about nuclei sits in the fine-scale stages too, which a last-stage head
    ignores (docs/rckd.md measures both heads).
    """

    def __init__(self, channels: list[int], num_outputs: int, drop_rate: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(sum(channels))
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(sum(channels), num_outputs)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        pooled = torch.cat([f.mean(dim=(2, 3)) for f in features], dim=1)
        return self.fc(self.drop(self.norm(pooled)))


class Classifier(_BackboneModel):
    """Tile logits (B×C) from pooled features: the deepest stage's (global average pool,
    LayerNorm, Linear) or, with ``config.head == "pyramid"``, every stage's."""

    def __init__(self, config: ModelConfig, backbone: nn.Module, drop_rate: float = 0.0):
        super().__init__(config, backbone)
        channels = backbone.feature_info.channels()
        if config.head == "pyramid":
            self.head = PyramidPoolHead(channels, config.num_outputs, drop_rate)
        else:
            self.head = NormMlpClassifierHead(
                channels[-1], config.num_outputs, drop_rate=drop_rate, norm_layer=LayerNorm2d
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encode(x)
        return self.head(features if self.config.head == "pyramid" else features[-1])
