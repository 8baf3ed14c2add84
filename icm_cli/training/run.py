"""One training run, start to end: layout -> episodes -> fit -> weights file.

The command (``icm train``) and scripts call :func:`train`; it reports
through a :class:`Reporter` and prints nothing itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from icm_cli.errors import WeightsNotWritten  # noqa: F401 (re-exported)
from icm_cli.training.episodes import Recipe, build_episodes, load_plan, mask_shares, plan_episodes, save_plan
from icm_cli.training.fit import FitSettings
from icm_cli.training.layout import LayoutError, read_layout


#: Optional file in DATA: {"description": "...", "pool_weights": {"pool": weight, ...}}
DATASET_FILE = "train.json"


@dataclass
class TrainOptions:
    fit: FitSettings = field(default_factory=FitSettings)
    recipe: Recipe = field(default_factory=Recipe)
    init: str = "none"           # weights to start from: none, builtin or a .safetensors file
    prior: bool = True           # the decoder reads a prior mask (video, refine, --prior)
    workers: int = 2
    val_share: float = 0.1
    resume: bool = False


class Reporter:
    """What a run tells its user; the command line shows it with rich, tests collect it."""

    def stage(self, text: str) -> None: ...
    def episodes(self, done: int, total: int) -> None: ...
    def step(self, step: int, total: int, loss: float) -> None: ...
    def validation(self, step: int, figures: dict) -> None: ...
    def warning(self, text: str) -> None: ...


def default_cache(data: Path, seed: int, recipe: Recipe) -> Path:
    """Where episodes of ``data`` are kept unless ``--cache`` says: the user's cache folder
    (:func:`icm_cli.cache.cache_root`: ``$ICM_CACHE_DIR``, else ``$XDG_CACHE_HOME/icm``, else
    ``~/.cache/icm``, ``~`` expanded in each), one folder per data folder, seed and recipe."""
    from icm_cli.cache import cache_root

    key = hashlib.blake2b(json.dumps([str(data.resolve()), seed, dataclasses.asdict(recipe)]).encode(),
                          digest_size=6).hexdigest()
    return cache_root() / "train" / f"{data.resolve().name}-{key}"


def dataset_options(data: Path) -> dict:
    path = data / DATASET_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LayoutError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise LayoutError(f"{path}: must hold a JSON object")
    return raw


def initial_model(options: TrainOptions):
    """A fresh decoder, or the one ``options.init`` names (fine-tuning keeps its architecture)."""
    from icm_cli.predict.decoder import DecoderConfig, MaskDecoder, load_decoder, resolve_decoder

    if options.init.strip().lower() in ("", "none"):
        return MaskDecoder(DecoderConfig(prior=options.prior))
    path = resolve_decoder("builtin" if options.init == "auto" else options.init, "efficientnet-lite0")
    model = load_decoder(path)
    if options.prior and not model.config.prior:
        model = with_prior_inputs(model)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def with_prior_inputs(model):
    """A decoder that reads priors, made from one that does not: the same weights, and zero weights on
    the new prior and flag inputs, so it starts out computing exactly what ``model`` computes."""
    import dataclasses

    import torch

    from icm_cli.predict.decoder import MaskDecoder

    grown = MaskDecoder(dataclasses.replace(model.config, prior=True))
    state = grown.state_dict()
    for name, value in model.state_dict().items():
        target = state[name]
        if target.shape == value.shape:
            state[name] = value.clone()
        else:  # a first convolution with more input channels: the old ones first, the prior's at zero
            grown_value = torch.zeros_like(target)
            grown_value[:, :value.shape[1]] = value
            state[name] = grown_value
    grown.load_state_dict(state)
    return grown


def train(data: Path, out: Path, cache: Path | None, options: TrainOptions, report: Reporter) -> dict:
    """Train a decoder on ``data`` (see :mod:`icm_cli.training.layout`) and write it to ``out``.

    Returns the last validation figures (per pool)."""
    import torch

    from icm_cli.atomic import remove_stale_temp_files
    from icm_cli.predict.decoder import save_decoder
    from icm_cli.training.episodes import episode_settings
    from icm_cli.training.fit import fit

    data = Path(data)
    fs = options.fit
    extra = dataset_options(data)
    if not fs.pool_weights and isinstance(extra.get("pool_weights"), dict):
        fs = dataclasses.replace(fs, pool_weights={str(k): float(v) for k, v in extra["pool_weights"].items()})
    cache = cache or default_cache(data, fs.seed, options.recipe)
    remove_stale_temp_files(cache)  # what a killed run left: a checkpoint or plan half written
    groups = read_layout(data, options.val_share, fs.seed)
    for g in groups:
        for w in g.warnings:
            report.warning(w)
    report.stage(f"{len(groups)} groups ({sum(len(g.items) for g in groups)} images) in {data}; "
                 f"episodes cached in {cache}")
    plan_meta = {"data": str(data.resolve()), "seed": fs.seed, "recipe": dataclasses.asdict(options.recipe),
                 "val_share": options.val_share,
                 "groups": {g.name: [len(g.items), g.split, sorted(g.val_items)] for g in groups}}
    plans = None
    if (cache / "plan.json").exists():
        plans, meta = load_plan(cache)
        if meta != json.loads(json.dumps(plan_meta)):
            plans = None  # the data or the recipe changed: plan anew (cached episodes are reused by index only
            for stale in (cache / "episodes").glob("*.npz"):  # when the plan is the same, so drop them)
                stale.unlink()
    if plans is None:
        plans = plan_episodes(groups, mask_shares(data, groups), options.recipe, fs.seed)
        save_plan(cache, plans, plan_meta)
    n_val = sum(p.split == "val" for p in plans)
    report.stage(f"{len(plans)} episodes planned ({n_val} held out for validation)")
    build_episodes(data, cache, plans, workers=options.workers, threads=fs.threads, progress=report.episodes)
    torch.manual_seed(fs.seed)  # the initial weights come from the seed too
    model = initial_model(options)
    settings = episode_settings()
    report.stage(f"training {sum(p.numel() for p in model.parameters()) / 1000:.0f} k parameters for "
                 f"{fs.steps} steps")
    figures = fit(cache, plans, model, fs, settings.intra_gate, checkpoint=cache / "checkpoint.safetensors",
                  resume=options.resume, on_step=lambda s, loss: report.step(s, fs.steps, loss),
                  on_validate=report.validation)
    meta = {"trained_on": str(extra.get("description") or data.resolve().name),
            "backbone": "efficientnet-lite0", "fit": fs.to_json(),
            "recipe": json.dumps(dataclasses.asdict(options.recipe)), "init": options.init,
            "val": json.dumps(figures), "torch": torch.__version__}
    remove_stale_temp_files(Path(out).parent)
    try:
        save_decoder(model, out, meta)
    except OSError as exc:  # checked writable before training; a disk that filled up since, say
        raise WeightsNotWritten(f"{out}: cannot write the weights ({exc.strerror or exc}); the trained state is "
                                f"kept in {cache / 'checkpoint.safetensors'}: rerun with --resume (and another "
                                "-o if this one stays unwritable) to write it", exc.errno) from None
    return figures
