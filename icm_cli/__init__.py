"""icm: in-context segmentation and matting from one labelled reference."""

__version__ = "0.1.0"
