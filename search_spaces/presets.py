"""Built-in spaces: `tiny` (embedded default: 8x8 digits on a CPU), `cifar` (32x32), `imagenet` (224x224),
and `seq` (sequences: mnist1d's 40 steps, or a user's [N, T, C] arrays of another length via a space file).

A user's own space is the same data in a JSON file (docs/search-spaces.md).
"""

from __future__ import annotations

import math

from search_spaces.config import SpaceConfig, StageSpace

TINY = SpaceConfig(
    name="tiny",
    in_channels=1,
    num_classes=10,
    input_size=8,
    resolutions=(8, 10, 12),
    stem_widths=(16, 24),
    stages=(
        StageSpace(depths=(1, 2), widths=(16, 24), strides=(1,), block_types=("conv",)),
        StageSpace(depths=(1, 2), widths=(24, 32), strides=(1, 2), block_types=("conv", "attn")),
        StageSpace(depths=(1, 2, 3), widths=(32, 48), strides=(2,), block_types=("conv", "attn")),
    ),
    kernels=(3, 5, 7),
    expand_ratios=(2, 3, 4),
    heads=(1, 2, 4),
    mlp_ratios=(2, 3, 4),
    head_dim=8,
    window=4,
)

CIFAR = SpaceConfig(
    name="cifar",
    in_channels=3,
    num_classes=10,
    input_size=32,
    resolutions=(24, 28, 32),
    stem_widths=(24, 32),
    stages=(
        StageSpace(depths=(1, 2), widths=(32, 48), strides=(1,), block_types=("conv",)),
        StageSpace(depths=(2, 3), widths=(48, 64), strides=(2,), block_types=("conv", "attn")),
        StageSpace(depths=(2, 3, 4), widths=(96, 128), strides=(2,), block_types=("conv", "attn")),
        StageSpace(depths=(1, 2, 3), widths=(160, 192), strides=(1, 2), block_types=("conv", "attn")),
    ),
    heads=(2, 4, 6),
    head_dim=32,
    window=4,
)

IMAGENET = SpaceConfig(
    name="imagenet",
    in_channels=3,
    num_classes=1000,
    input_size=224,
    resolutions=(160, 192, 224),
    stem_widths=(24, 32),
    stem_stride=2,
    stages=(
        StageSpace(depths=(1, 2), widths=(24, 32), strides=(2,), block_types=("conv",)),
        StageSpace(depths=(2, 3, 4), widths=(40, 48), strides=(2,), block_types=("conv",)),
        StageSpace(depths=(2, 3, 4), widths=(80, 96), strides=(2,), block_types=("conv", "attn")),
        StageSpace(depths=(2, 3, 4, 5), widths=(160, 192), strides=(1, 2), block_types=("conv", "attn")),
        StageSpace(depths=(2, 3, 4), widths=(256, 320), strides=(1, 2), block_types=("conv", "attn")),
    ),
    expand_ratios=(3, 4, 6),
    heads=(4, 6, 8, 10),
    head_dim=32,
    window=7,
)

SEQ = SpaceConfig(  # sequence classification: efficient-attention transformers and conv hybrids per layer
    name="seq",
    dims=1,
    in_channels=1,
    num_classes=10,
    input_size=40,
    resolutions=(40,),
    stem_widths=(32, 48),  # the embedding width
    stages=(
        StageSpace(depths=(1, 2, 3), widths=(32, 48), strides=(1,), block_types=("conv", "attn")),
        StageSpace(depths=(1, 2, 3), widths=(48, 64), strides=(1, 2), block_types=("conv", "attn")),
    ),
    kernels=(3, 5, 7),
    expand_ratios=(2, 3),
    mixers=("softmax", "linear", "window"),
    heads=(2, 4),
    mlp_ratios=(2, 3, 4),
    head_dim=16,
    window=8,
    layout="free",  # each layer picks its token mixer: a depthwise convolution or one of the attentions
)


def space_for(dims: int, size: int) -> str:
    """The built-in space for data of `dims` (1: sequences, 2: images) and `size` (the sequence
    length or the image side): `seq` for sequences; for images, the space whose reference input
    size is nearest on a log scale (tiny up to 16 pixels, cifar up to 84, imagenet above)."""
    if dims == 1:
        return SEQ.name
    return min((TINY, CIFAR, IMAGENET), key=lambda space: abs(math.log(max(size, 1) / space.input_size))).name
