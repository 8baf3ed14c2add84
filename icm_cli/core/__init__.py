"""The In-Context Matting (ICM, CVPR 2024) correspondence and attention core, as pure tensor code.

No files, no printing, no device choice: every function works on the
device and floating dtype of its inputs, and documents its shapes. Seed
names are kept so readers of the ICM code find their way.

- :mod:`.morphology`: ``dilate``, ``erode``, ``generate_trimap``,
  ``maskpooling``, ``resize_mask``;
- :mod:`.correspondence`: ``compute_correspondence_matrix``, ``roi_tokens``,
  ``InContextCorrespondence``;
- :mod:`.attention`: ``cross_attention_heat``, ``propagate_heat``,
  ``calculate_attention_score``, ``refine_mask_by_attention``,
  ``TrainingFreeAttention``, ``TrainingFreeAttentionBlocks``;
- :mod:`.modules`: the trainable parts (no weights exist for them here).

What icm runs and what is the seed-compatible API:

- The propagator (:mod:`icm_cli.predict.propagator`) runs ``roi_tokens``,
  ``cross_attention_heat`` and ``propagate_heat`` (ICM's inter and intra
  heat: the gate of every prediction, the decoder's inputs, ``inspect-attn``),
  ``dilate`` and ``window_padding`` (trimaps, the video window) and
  ``refine_mask_by_attention`` (``icm refine --method attention``).
- ``TrainingFreeAttention``, ``TrainingFreeAttentionBlocks``,
  ``InContextCorrespondence``, ``calculate_attention_score`` on its own and
  everything in :mod:`.modules` are the **seed-compatible API**: the ICM
  paper code's names and contracts, kept for readers and for experiments,
  not called by any command. ``tests/test_core_attention.py`` checks that
  ``TrainingFreeAttention`` computes the same inter and intra heat as the
  propagator on a shared grid, so the two cannot drift apart. icm's learned
  part is :mod:`icm_cli.predict.decoder`, not :mod:`.modules`.
"""

from .attention import (
    DEFAULT_ITERATIONS,
    DEFAULT_TEMPERATURE,
    SCORE_TYPES,
    TrainingFreeAttention,
    TrainingFreeAttentionBlocks,
    calculate_attention_score,
    cross_attention_heat,
    peak_normalise,
    propagate_heat,
    refine_mask_by_attention,
)
from .correspondence import InContextCorrespondence, compute_correspondence_matrix, l2_normalise, roi_tokens
from .modules import (
    AttentionMapConv,
    ConvBNReLU,
    FusionBlock,
    MultiScaleFeatureFusion,
    OneWayAttentionBlock,
    ProjectedAttention,
    SemiTrainingAttentionBlocks,
    TrainingCrossAttention,
)
from .morphology import dilate, erode, generate_trimap, maskpooling, resize_mask, window_padding
from .results import AttentionResult, CorrespondenceResult, SemiTrainingResult

__all__ = [
    "DEFAULT_ITERATIONS",
    "DEFAULT_TEMPERATURE",
    "SCORE_TYPES",
    "AttentionMapConv",
    "AttentionResult",
    "ConvBNReLU",
    "CorrespondenceResult",
    "FusionBlock",
    "InContextCorrespondence",
    "MultiScaleFeatureFusion",
    "OneWayAttentionBlock",
    "ProjectedAttention",
    "SemiTrainingAttentionBlocks",
    "SemiTrainingResult",
    "TrainingCrossAttention",
    "TrainingFreeAttention",
    "TrainingFreeAttentionBlocks",
    "calculate_attention_score",
    "compute_correspondence_matrix",
    "cross_attention_heat",
    "dilate",
    "erode",
    "generate_trimap",
    "l2_normalise",
    "maskpooling",
    "peak_normalise",
    "propagate_heat",
    "refine_mask_by_attention",
    "resize_mask",
    "roi_tokens",
    "window_padding",
]
