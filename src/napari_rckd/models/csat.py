"""CSAT: a ConvNeXt-V2-style CNN whose blocks are gated by spatial attention from a small transformer.

The student network of RCKD (Kim et al., Bioengineering 2023), registered in timm as ``rckd_csat``
(timm's own ``csatv2`` is the authors' later, different design). The paper gives the budget (about
3M parameters, 1.08 G MACs at 224 px), the block idea and where the transformer blocks sit; the
exact widths, depths, grid and token sizes below are our reconstruction to that budget, see
docs/models.md. Laid out like timm's own model files so ``features_only``,
``forward_intermediates``, ``reset_classifier`` and gradient checkpointing behave the same.
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import (
    Attention,
    DropPath,
    GlobalResponseNormMlp,
    LayerNorm,
    LayerNorm2d,
    LayerScale,
    Mlp,
    NormMlpClassifierHead,
    calculate_drop_path_rates,
    get_device_dtype,
    trunc_normal_,
)
from timm.layers.grn import GlobalResponseNorm
from timm.models import build_model_with_cfg, checkpoint_seq, named_apply
from timm.models._features import feature_take_indices
from timm.models._registry import generate_default_cfgs, register_model

from napari_rckd import zoo
from napari_rckd.models.shipped import shipped_weights, weights_path

__all__ = ["Csat"]


class NhwcGlobalResponseNorm(GlobalResponseNorm):
    """timm's GRN for (B, H, W, C) tensors, same parameters, reduced over a flattened H*W axis.

    On CPU ``x.norm(dim=(1, 2))`` over a (B, H, W, C) tensor took ~15× longer than this sum of
    squares, and one ``addcmul`` replaces a multiply and an add over the 4×-wide hidden tensor:
    together CSAT ran ~1.9× faster (docs/performance.md).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        # clamp: sqrt's gradient at 0 is infinite, and a channel that is zero over a whole
        # image (common after training) would turn every gradient into NaN
        x_g = x.reshape(B, H * W, C).square().sum(dim=1).clamp_min(1e-12).sqrt().view(B, 1, 1, C)
        x_n = x_g / (x_g.mean(dim=-1, keepdim=True) + self.eps)
        return torch.addcmul(self.bias, x, 1 + self.weight * x_n)  # one pass over x


class SpatialAttentionGate(nn.Module):
    """A sigmoid map over the feature grid, computed by self-attention between coarse cells.

    The channel-mean and channel-max maps are average-pooled to cells of ``cell_size`` pixels,
    each cell is embedded as a ``token_dim``-wide token (a 3×3 conv, which also gives the tokens
    their position), the tokens attend to each other, and a linear projection to one value per
    cell, a sigmoid and a bilinear upsample give the gate. The cell size is fixed per stage (not
    the grid), so the gate works at any input size.
    """

    def __init__(self, cell_size: int, token_dim: int = 16, num_heads: int = 2):
        super().__init__()
        self.cell_size = cell_size
        self.embed = nn.Conv2d(2, token_dim, kernel_size=3, padding=1)
        self.norm = LayerNorm(token_dim)
        self.attn = Attention(token_dim, num_heads=num_heads, qkv_bias=True)
        self.proj = nn.Linear(token_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        maps = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        if self.cell_size > 1:
            maps = F.avg_pool2d(maps, self.cell_size, ceil_mode=True)
        tokens = self.embed(maps)  # (B, D, h, w)
        h, w = tokens.shape[-2:]
        tokens = tokens.flatten(2).transpose(1, 2)  # (B, h*w, D)
        tokens = tokens + self.attn(self.norm(tokens))
        gate = self.proj(tokens).transpose(1, 2).reshape(B, 1, h, w)
        gate = torch.sigmoid(gate)
        if (h, w) != (H, W):
            gate = F.interpolate(gate, size=(H, W), mode="bilinear", align_corners=False)
        return gate


class CsatBlock(nn.Module):
    """ConvNeXt-V2 block (dw 7×7, LayerNorm, inverted MLP with GRN) with a gated residual branch."""

    def __init__(
        self,
        dim: int,
        cell_size: int,
        mlp_ratio: float = 4.0,
        token_dim: int = 16,
        ls_init_value: float | None = 1e-6,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm(dim)
        hidden = int(mlp_ratio * dim)
        self.mlp = GlobalResponseNormMlp(dim, hidden, act_layer=nn.GELU)
        self.mlp.grn = NhwcGlobalResponseNorm(hidden)  # same weights, faster on CPU
        self.gate = SpatialAttentionGate(cell_size, token_dim=token_dim)
        self.gamma = nn.Parameter(ls_init_value * torch.ones(dim)) if ls_init_value else None
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_dw(x)
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        x = self.mlp(self.norm(x))
        x = x.permute(0, 3, 1, 2)  # (B, C, H, W)
        x = x * self.gate(x)
        if self.gamma is not None:
            x = x.mul(self.gamma.reshape(1, -1, 1, 1))
        return self.drop_path(x) + shortcut


class TransformerBlock(nn.Module):
    """Pre-norm transformer block with a convolutional position encoding (no size-bound tables)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        ls_init_value: float | None = 1e-6,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.pos = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.norm1 = LayerNorm(dim)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=True)
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(mlp_ratio * dim), act_layer=nn.GELU)
        self.ls1 = LayerScale(dim, ls_init_value) if ls_init_value else nn.Identity()
        self.ls2 = LayerScale(dim, ls_init_value) if ls_init_value else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        x = x + self.pos(x)
        tokens = x.flatten(2).transpose(1, 2)  # (B, H*W, C)
        tokens = tokens + self.drop_path(self.ls1(self.attn(self.norm1(tokens))))
        tokens = tokens + self.drop_path(self.ls2(self.mlp(self.norm2(tokens))))
        return tokens.transpose(1, 2).reshape(B, C, H, W)


class CsatStage(nn.Module):
    """Downsample (LayerNorm + 2×2 stride-2 conv), gated conv blocks, then transformer blocks."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        depth: int,
        cell_size: int,
        stride: int = 2,
        transformer_depth: int = 0,
        num_heads: int = 4,
        token_dim: int = 16,
        ls_init_value: float | None = 1e-6,
        drop_path_rates: list[float] | None = None,
    ):
        super().__init__()
        self.grad_checkpointing = False
        if stride > 1 or in_chs != out_chs:
            self.downsample = nn.Sequential(
                LayerNorm2d(in_chs), nn.Conv2d(in_chs, out_chs, kernel_size=stride, stride=stride)
            )
        else:
            self.downsample = nn.Identity()
        rates = drop_path_rates or [0.0] * (depth + transformer_depth)
        blocks: list[nn.Module] = [
            CsatBlock(
                out_chs, cell_size, token_dim=token_dim, ls_init_value=ls_init_value, drop_path=r
            )
            for r in rates[:depth]
        ]
        blocks += [
            TransformerBlock(out_chs, num_heads, ls_init_value=ls_init_value, drop_path=r)
            for r in rates[depth:]
        ]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class Csat(nn.Module):
    """CSAT backbone and classifier (stem, four stages, GAP -> LayerNorm -> Linear head)."""

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        depths: tuple[int, ...] = (4, 4, 6, 2),
        dims: tuple[int, ...] = (64, 104, 136, 176),
        transformer_depths: tuple[int, ...] = (0, 0, 1, 1),
        num_heads: tuple[int, ...] = (1, 2, 4, 4),
        gate_grid_stride: int = 32,
        token_dim: int = 16,
        ls_init_value: float | None = 1e-6,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0])
        )
        total_depths = [d + t for d, t in zip(depths, transformer_depths, strict=True)]
        dp_rates = calculate_drop_path_rates(drop_path_rate, total_depths, stagewise=True)
        self.feature_info = []
        stages = []
        prev_chs, stride = dims[0], 4
        for i, out_chs in enumerate(dims):
            stage_stride = 1 if i == 0 else 2
            stride *= stage_stride
            stages.append(
                CsatStage(
                    prev_chs,
                    out_chs,
                    depth=depths[i],
                    cell_size=max(1, gate_grid_stride // stride),
                    stride=stage_stride,
                    transformer_depth=transformer_depths[i],
                    num_heads=num_heads[i],
                    token_dim=token_dim,
                    ls_init_value=ls_init_value,
                    drop_path_rates=dp_rates[i],
                )
            )
            prev_chs = out_chs
            self.feature_info.append(dict(num_chs=out_chs, reduction=stride, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = prev_chs
        self.norm_pre = nn.Identity()
        self.head = NormMlpClassifierHead(
            self.num_features,
            num_classes,
            pool_type=global_pool,
            drop_rate=drop_rate,
            norm_layer=LayerNorm2d,
        )
        self.head_hidden_size = self.head.num_features
        named_apply(_init_weights, self)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r"^stem",
            blocks=r"^stages\.(\d+)"
            if coarse
            else [
                (r"^stages\.(\d+)\.downsample", (0,)),
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                (r"^norm_pre", (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(
        self, num_classes: int, global_pool: str | None = None, reset_other: bool = False
    ) -> None:
        dd = get_device_dtype(self)
        self.num_classes = num_classes
        self.head.reset(
            num_classes, global_pool, reset_other=reset_other, in_features=self.num_features, **dd
        )
        self.head_hidden_size = self.head.num_features

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Final features and the chosen stages' outputs (timm's contract)."""
        assert output_fmt == "NCHW", "Output shape must be NCHW."
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages[: max_index + 1] if stop_early else self.stages
        intermediates = []
        x = self.stem(x)
        last_idx = len(self.stages) - 1
        for feat_idx, stage in enumerate(stages):
            x = stage(x)
            if feat_idx in take_indices:
                intermediates.append(self.norm_pre(x) if norm and feat_idx == last_idx else x)
        if intermediates_only:
            return intermediates
        if feat_idx == last_idx:
            x = self.norm_pre(x)
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        prune_end = max_index < len(self.stages) - 1
        if prune_norm or prune_end:
            self.norm_pre = nn.Identity()
        self.stages = self.stages[: max_index + 1]
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "", reset_other=True)
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm_pre(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _init_weights(module: nn.Module, name: str | None = None) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def checkpoint_filter_fn(state_dict: dict, model: Csat) -> dict:
    """Unwrap training checkpoints ({'model': ...}, {'state_dict': ...}, DDP 'module.' prefixes).

    A napari-rckd checkpoint (the shipped RCKD stage-1 student) holds the backbone as a timm
    feature extractor under ``backbone.`` (``stages_0`` for ``stages.0``) and no classifier:
    its backbone is renamed back and the model keeps its own freshly initialised head.
    """
    for key in ("model", "state_dict"):
        if key in state_dict and isinstance(state_dict[key], dict):
            state_dict = state_dict[key]
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    if any(k.startswith("backbone.") for k in state_dict):
        state_dict = {
            re.sub(r"^(stem|stages)_(\d+)\.", r"\1.\2.", k.removeprefix("backbone.")): v
            for k, v in state_dict.items()
            if k.startswith("backbone.")
        }
        for key, value in model.state_dict().items():
            if key.startswith("head."):
                state_dict.setdefault(key, value)
    return state_dict


def _create_csat(variant: str, pretrained: bool = False, **kwargs) -> Csat:
    return build_model_with_cfg(
        Csat,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), flatten_sequential=True),
        **kwargs,
    )


def _cfg(**kwargs) -> dict:
    return {
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.95,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.0",
        "classifier": "head.fc",
        "license": "bsd-3-clause",
        **kwargs,
    }


# The default tag is the RCKD stage-1 student shipped in the package, as the zoo registers it
# (docs/teachers.md: trained on CC BY-NC-SA data, so for non-commercial research); timm reads it
# offline from ``file``. The paper's ImageNet checkpoint is not public, so ``untrained`` is the
# only other tag.
_SHIPPED_TAGS = [m for m in zoo.models() if (m.timm_tag or "").startswith("rckd_csat.")]
default_cfgs = generate_default_cfgs(
    {
        **{
            m.timm_tag: _cfg(file=str(weights_path(m.name, stage2=True)), license=m.licence)
            for m in _SHIPPED_TAGS
        },
        "rckd_csat.untrained": _cfg(),
    }
)


@register_model
def rckd_csat(pretrained: bool = False, **kwargs) -> Csat:
    """CSAT at the paper's budget: ~3.0M params, ~1.08 G MACs at 224×224. ``pretrained=True``
    loads the shipped RCKD stage-1 student (backbone only; the classifier starts fresh)."""
    if pretrained and kwargs.get("pretrained_cfg_overlay") is None:
        shipped_weights(_SHIPPED_TAGS[0].name, stage2=True)  # one sentence when the file is gone
    model_args = dict(
        depths=(4, 4, 6, 2), dims=(64, 104, 136, 176), transformer_depths=(0, 0, 1, 1)
    )
    return _create_csat("rckd_csat", pretrained=pretrained, **dict(model_args, **kwargs))
