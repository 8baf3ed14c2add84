"""icm: in-context segmentation and matting from one labelled reference.

The library's front door (imported on first use, so ``import icm_cli`` stays light)::

    from icm_cli import Predictor
    predictor = Predictor()
    predictor.set_reference("ref.jpg", "ref_mask.png")
    mask = predictor.predict("photo.jpg").mask

    from icm_cli import evaluate
    print(evaluate("masks/", "truth/").mean["J"])   # scored against ground truth, paired by name
"""

__version__ = "0.2.0"

from icm_cli.errors import IcmError  # noqa: E402 - imports nothing: every icm error derives from it

_LAZY = {
    "Predictor": "icm_cli.predictor",
    "VideoPredictor": "icm_cli.predictor",
    "Result": "icm_cli.predictor",
    "AttentionMaps": "icm_cli.predictor",
    "ModelConfig": "icm_cli.config",
    "VideoConfig": "icm_cli.config",
    "OutputConfig": "icm_cli.config",
    "evaluate": "icm_cli.evaluation",
    "Evaluation": "icm_cli.evaluation",
}

__all__ = ["__version__", "IcmError", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'icm_cli' has no attribute {name!r}")
