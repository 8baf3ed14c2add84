"""Training the learned mask decoder (``icm train``).

- :mod:`.layout`: the folder layout a training set comes in (groups of images with masks);
- :mod:`.corrupt`: coarse masks made from true ones (priors to correct);
- :mod:`.episodes`: episodes (a reference and a target) made by icm's own propagator, cached;
- :mod:`.fit`: balanced sampling, priors, the loss, checkpoints, validation;
- :mod:`.run`: one run from a data folder to a weights file.

What must match run time lives beside the decoder (:mod:`icm_cli.predict.decoder`:
``decoder_maps``, ``maps_without_head``) and is used by both the propagator and training.
"""
