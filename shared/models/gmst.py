"""GMST building blocks (Gesture-aware Multi-Scale Transformer) for G-MAE.

A GMST block is three pre-norm residual sub-blocks:

    x = x + MSDC(LN(x))      multi-scale dilated depthwise convolutions (local shape)
    x = x + MHSA(LN(x))      multi-head self-attention (global layout)
    x = x + MSC-FFN(LN(x))   feed-forward with multi-scale depthwise convolutions

Tokens as sparse sets, grids only for convolutions
--------------------------------------------------
Masked pretraining must not let a hidden patch reach the encoder. Every block
therefore works on the *visible* tokens only: `x` is `[B, Lv, D]` plus
`ids_keep [B, Lv]`, the grid positions of those tokens. A convolution scatters
the tokens into a zero-filled `[B, D, h, w]` grid (masked cells are exactly
zero, as in ConvMAE), convolves, and gathers the visible cells back. Gathering
is the "re-zero after every convolution" step: masked cells never survive into
the token tensor, so no information can flow from one convolution's output at
a masked cell into the next sub-block. Attention and all pointwise layers
(qkv, projections, the FFN's linear layers) only ever see the `Lv` visible
tokens, which is why masking saves compute. The convolutions still run over
the whole (zero-filled) grid, so they cost the same at any mask ratio; on CPU
they are a large share of a step, which caps the speed-up (benchmarks/gmae.py:
mask 0.6 halves the FLOPs and gives ~1.8x images/s for gmae_tiny on CPU).

With `ids_keep=None` the tokens are the full grid in raster order (fine-tuning,
inference, the decoder) and the scatter/gather are plain reshapes. The grid is
a channels-last view of the `[B, L, C]` tokens (no copy), and scatter/gather
move whole token rows (`index_copy` / `index_select`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


# --------------------------------------------------------------------------- token <-> grid
def flat_index(ids_keep: torch.Tensor, num_patches: int) -> torch.Tensor:
    """[B, Lv] grid indices -> [B*Lv] row indices into a [B*L, C] view of [B, L, C]."""
    offsets = torch.arange(ids_keep.shape[0], device=ids_keep.device).unsqueeze(1) * num_patches  # [B, 1]
    return (ids_keep + offsets).reshape(-1)


def tokens_to_grid(x: torch.Tensor, ids_keep: torch.Tensor | None, grid_hw: tuple[int, int]) -> torch.Tensor:
    """[B, Lv, C] tokens -> [B, C, h, w] grid, zeros at the cells not in `ids_keep`."""
    b, n, c = x.shape
    h, w = grid_hw
    if ids_keep is not None:
        # Whole rows (one token's C values) are copied: cheaper than an element-wise scatter.
        rows = x.new_zeros(b * h * w, c).index_copy(0, flat_index(ids_keep, h * w), x.reshape(b * n, c))
        x = rows.view(b, h * w, c)  # [B, L, C]
    # [B, L, C] is already the NHWC memory layout: a channels-last view, no copy.
    return x.reshape(b, h, w, c).permute(0, 3, 1, 2)


def grid_to_tokens(g: torch.Tensor, ids_keep: torch.Tensor | None) -> torch.Tensor:
    """[B, C, h, w] grid -> [B, Lv, C] tokens at `ids_keep` (all cells, raster order, when None)."""
    b, c = g.shape[:2]
    x = g.permute(0, 2, 3, 1).reshape(b, -1, c)  # [B, L, C]; a view when g is channels-last
    if ids_keep is None:
        return x
    return gather_tokens(x, ids_keep)


def gather_tokens(x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
    """[B, L, C] -> [B, Lv, C], whole rows at a time."""
    b, n, c = x.shape
    rows = x.reshape(b * n, c).index_select(0, flat_index(ids_keep, n))
    return rows.view(b, ids_keep.shape[1], c)


def scatter_tokens(base: torch.Tensor, x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
    """`base` [B, L, C] with the rows at `ids_keep` replaced by x [B, Lv, C] (out of place)."""
    b, n, c = base.shape
    rows = base.reshape(b * n, c).index_copy(0, flat_index(ids_keep, n), x.reshape(-1, c))
    return rows.view(b, n, c)


def sincos_pos_embed_2d(dim: int, grid_hw: tuple[int, int], device: torch.device | None = None,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[h*w, dim] fixed 2-D sin-cos position embedding (MAE's), computed for any grid size.

    Fixed rather than learned so that a model pretrained at one resolution
    fine-tunes at another without interpolating tables.
    """
    if dim % 4:
        raise ValueError(f"embedding dim {dim} must be divisible by 4 for a 2-D sin-cos embedding")
    h, w = grid_hw
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, device=device, dtype=torch.float64) / quarter))  # [D/4]
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float64),
                            torch.arange(w, device=device, dtype=torch.float64), indexing="ij")
    out_x = xs.reshape(-1, 1) * omega  # [L, D/4]
    out_y = ys.reshape(-1, 1) * omega
    emb = torch.cat([out_x.sin(), out_x.cos(), out_y.sin(), out_y.cos()], dim=1)  # [L, D]
    return emb.to(dtype)


class _DepthwiseConvCPU(torch.autograd.Function):
    """A "same" depthwise convolution whose backward is two more depthwise convolutions.

    oneDNN's backward of a depthwise convolution on CPU runs 10-20x slower than its
    forward (the weight gradient), and in masked pretraining these full-grid convolutions
    are the part of the step that masking does not shrink. Both gradients are
    depthwise *forward* convolutions, which oneDNN runs fast:
    - d input: the output gradient convolved with the flipped kernel (same padding and
      dilation, since padding = dilation * (k - 1) / 2);
    - d weight[c]: the correlation of the padded input with the output gradient, one
      "kernel" per (sample, channel), i.e. a depthwise convolution over B*C channels whose
      output, taken with stride = dilation, is the k x k gradient, summed over samples.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int) -> torch.Tensor:
        k = weight.shape[-1]
        pad = dilation * (k - 1) // 2
        ctx.save_for_backward(x, weight)
        ctx.dilation, ctx.pad, ctx.has_bias = dilation, pad, bias is not None
        return F.conv2d(x, weight, bias, padding=pad, dilation=dilation, groups=x.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        d, pad = ctx.dilation, ctx.pad
        b, c, h, w = x.shape
        k = weight.shape[-1]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv2d(grad, weight.flip(-1, -2), padding=pad, dilation=d, groups=c)
        if ctx.needs_input_grad[1]:
            # The conv pads (no padded copy of x); stride d picks the k x k dilated taps.
            inputs = x.contiguous().view(1, b * c, h, w)
            kernels = grad.contiguous().view(b * c, 1, h, w)
            grad_w = F.conv2d(inputs, kernels, padding=pad, stride=d, groups=b * c)  # [1, B*C, k, k]
            grad_w = grad_w.view(b, c, k, k).sum(0).unsqueeze(1)  # [C, 1, k, k]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(dim=(0, 2, 3))
        return grad_x, grad_w, grad_b, None


def depthwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int = 1,
                   ) -> torch.Tensor:
    """Depthwise "same" convolution of [B, C, h, w] with an odd [C, 1, k, k] kernel.

    On CPU with gradients it takes the fast backward above; elsewhere (CUDA, inference)
    it is plain `F.conv2d`. The results are the same up to float rounding.
    """
    if x.device.type == "cpu" and torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _DepthwiseConvCPU.apply(x, weight, bias, dilation)
    pad = dilation * (weight.shape[-1] - 1) // 2
    return F.conv2d(x, weight, bias, padding=pad, dilation=dilation, groups=x.shape[1])


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per sample while training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep) / keep


# --------------------------------------------------------------------------- patch embedding
class OverlapPatchEmbed(nn.Module):
    """Image -> tokens with overlapping patches: a strided conv whose kernel is larger than its stride.

    kernel = patch + 2 * overlap, stride = patch, padding = overlap: token (i, j)
    reads its own `patch x patch` cell plus `overlap` pixels of each neighbour.
    That overlap is why masking tokens alone would leak (a visible token would
    read the border of a masked neighbour); the encoder zeroes masked pixels in
    the input before this layer runs.
    """

    def __init__(self, patch_size: int, overlap: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.overlap = overlap
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size + 2 * overlap, stride=patch_size,
                              padding=overlap)
        self.norm = nn.LayerNorm(embed_dim)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {self.patch_size}")
        return height // self.patch_size, width // self.patch_size

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        grid_hw = self.grid_size(x.shape[-2], x.shape[-1])
        x = self.proj(x)  # [B, D, h, w]
        x = x.flatten(2).transpose(1, 2)  # [B, L, D]
        return self.norm(x), grid_hw


# --------------------------------------------------------------------------- sub-blocks
class MSDC(nn.Module):
    """Multi-scale dilated convolution: parallel 3x3 depthwise convs (dilations 1, 3, 5), fused by a 1x1."""

    def __init__(self, dim: int, dilations: tuple[int, ...] = (1, 3, 5)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(dim, dim, kernel_size=3, padding=d, dilation=d, groups=dim) for d in dilations)
        self.act = nn.GELU()
        # The fuse is pointwise, so it runs on visible tokens only.
        self.fuse = nn.Linear(dim * len(dilations), dim)

    def forward(self, x: torch.Tensor, ids_keep: torch.Tensor | None, grid_hw: tuple[int, int]) -> torch.Tensor:
        g = tokens_to_grid(x, ids_keep, grid_hw)  # [B, D, h, w], zeros at masked cells
        branches = [depthwise_conv(g, conv.weight, conv.bias, conv.dilation[0]) for conv in self.branches]
        y = torch.cat(branches, dim=1)  # [B, 3D, h, w]
        y = grid_to_tokens(y, ids_keep)  # [B, Lv, 3D]: masked cells dropped (re-zeroed)
        return self.fuse(self.act(y))  # [B, Lv, D]


class Attention(nn.Module):
    """Multi-head self-attention over the tokens it is given (the visible ones when masking)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [B, H, N, d/H]
        x = F.scaled_dot_product_attention(q, k, v)  # [B, H, N, d/H]
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class MSCFFN(nn.Module):
    """Multi-scale convolutional FFN: fc1 -> parallel depthwise convs (3, 5, 7), summed -> GELU -> fc2."""

    def __init__(self, dim: int, hidden_dim: int, kernel_sizes: tuple[int, ...] = (3, 5, 7)) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        if any(k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"MSC-FFN kernel sizes must be odd (centred), got {kernel_sizes}")
        self.branches = nn.ModuleList(
            nn.Conv2d(hidden_dim, hidden_dim, kernel_size=k, padding=k // 2, groups=hidden_dim) for k in kernel_sizes)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def fused_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The branches as one depthwise kernel: centred, zero-padded to the largest size, summed.

        Parallel depthwise convolutions whose outputs are summed are exactly one
        depthwise convolution with the summed kernels (RepLKNet's re-parameterisation);
        running it that way costs one conv instead of three and gradients still
        reach every branch's own weights.
        """
        k_max = max(b.kernel_size[0] for b in self.branches)
        weight = sum(F.pad(b.weight, [(k_max - b.kernel_size[0]) // 2] * 4) for b in self.branches)
        bias = sum(b.bias for b in self.branches)
        return weight, bias

    def forward(self, x: torch.Tensor, ids_keep: torch.Tensor | None, grid_hw: tuple[int, int]) -> torch.Tensor:
        h = self.fc1(x)  # [B, Lv, Hd]
        g = tokens_to_grid(h, ids_keep, grid_hw)  # [B, Hd, h, w], zeros at masked cells
        if torch.onnx.is_in_onnx_export():
            # The exporter cannot see the fused kernel's shape (a Pad of each branch): the branches one by one,
            # the same sum up to float rounding.
            y = sum(depthwise_conv(g, b.weight, b.bias) for b in self.branches)
        else:
            weight, bias = self.fused_kernel()
            y = depthwise_conv(g, weight, bias)  # [B, Hd, h, w]
        y = grid_to_tokens(y, ids_keep)  # [B, Lv, Hd]: masked cells dropped (re-zeroed)
        return self.fc2(self.act(y))  # [B, Lv, D]


class Mlp(nn.Module):
    """Plain transformer FFN: the MSC-FFN ablation ("without MSC-FFN") falls back to this."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor, ids_keep: torch.Tensor | None, grid_hw: tuple[int, int]) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class GMSTBlock(nn.Module):
    """MSDC + MHSA + MSC-FFN, each pre-norm with a residual; the switches drop a part for ablations.

    `use_mscffn=False` keeps a plain FFN (a block needs some channel mixing);
    `use_msdc=False` / `use_mhsa=False` remove the sub-block entirely.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, use_msdc: bool = True,
                 use_mhsa: bool = True, use_mscffn: bool = True, dilations: tuple[int, ...] = (1, 3, 5),
                 ffn_kernel_sizes: tuple[int, ...] = (3, 5, 7), drop_path: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm_msdc = nn.LayerNorm(dim) if use_msdc else None
        self.msdc = MSDC(dim, dilations) if use_msdc else None
        self.norm_attn = nn.LayerNorm(dim) if use_mhsa else None
        self.attn = Attention(dim, num_heads) if use_mhsa else None
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = MSCFFN(dim, hidden, ffn_kernel_sizes) if use_mscffn else Mlp(dim, hidden)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, ids_keep: torch.Tensor | None, grid_hw: tuple[int, int]) -> torch.Tensor:
        """x: [B, Lv, D] tokens at grid cells `ids_keep` ([B, Lv]; None = the full grid in raster order)."""
        if self.msdc is not None:
            x = x + self.drop_path(self.msdc(self.norm_msdc(x), ids_keep, grid_hw))
        if self.attn is not None:
            x = x + self.drop_path(self.attn(self.norm_attn(x)))
        x = x + self.drop_path(self.ffn(self.norm_ffn(x), ids_keep, grid_hw))
        return x


def init_weights(module: nn.Module) -> None:
    """MAE's initialisation: xavier-uniform linears, zero biases, unit LayerNorms; convs like timm."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
