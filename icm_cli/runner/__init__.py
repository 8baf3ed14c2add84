"""Running many sources: the batch runner, its manifest and its outputs.

- :mod:`icm_cli.runner.batch`: :class:`BatchRunner`, the one failure policy and the
  pipelined loops (images; sequences fed back their masks);
- :mod:`icm_cli.runner.manifest`: the typed manifest records, their writer and reader;
- :mod:`icm_cli.runner.outputs`: :class:`OutputPlan`, where outputs go and what they hold;
- :mod:`icm_cli.runner.sequence`: one ``--video`` sequence, resumable;
- :mod:`icm_cli.runner.files`: the per-file loop of trimap / refine / matte;
- :mod:`icm_cli.runner.outcome`: :class:`BatchOutcome` (a run's counts, its exit code) and the
  :class:`Reporter` a run speaks through (the runner prints nothing; the command line's reporter does);
- :mod:`icm_cli.runner.signals`: Ctrl-C / SIGTERM, the same way in every loop;
- :mod:`icm_cli.runner.status`: a run's state read back from its manifests (``icm status``).
"""
