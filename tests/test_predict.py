"""Known answers for the engine's numeric pieces: geometry, contrast, head, full-size steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from icm_cli.geometry import WorkingGeometry
from icm_cli.predict import fullres
from icm_cli.predict.head import ObjectHead, augment_reference, train_object_head
from icm_cli.predict.nearest import (background_floor, compact_tokens, contrast_probability,
                                     contrast_similarities, source_background_similarity, topk_mean_similarity,
                                     weighted_topk_mean)
from icm_cli.predict.tokens import mask_area_on_grid, pool_reference_tokens


def test_geometry_fit_keeps_aspect_and_pads_to_multiple():
    g = WorkingGeometry.fit(480, 854, 384, 32)
    assert (g.resized_h, g.resized_w) == (384, 683)
    assert (g.padded_h, g.padded_w) == (384, 704)
    assert g.valid_cells(48, 88) == (48, 86)
    small = WorkingGeometry.fit(10, 10, 64, 32)
    assert (small.padded_h, small.padded_w) == (64, 64)
    with pytest.raises(ValueError):
        WorkingGeometry.fit(0, 5, 64, 32)


def test_geometry_round_trip_returns_the_image_region():
    g = WorkingGeometry.fit(60, 100, 64, 32)  # resized 64x107, padded 64x128
    img = torch.zeros(1, 1, 60, 100)
    img[..., :, 50:] = 1.0  # right half
    canvas = g.to_canvas(img)
    assert canvas.shape[-2:] == (64, 128)
    assert canvas[0, 0, :, -1].eq(1).all()  # replicate padding continues the edge
    grid = F.adaptive_avg_pool2d(canvas, (8, 16))
    back = g.to_original(grid)
    assert back.shape[-2:] == (60, 100)
    binary = back[0, 0] > 0.5
    assert binary[:, 60:].all() and not binary[:, :40].any()


def test_topk_mean_similarity_known_values():
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # [1, 2, 2]
    tokens = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    got = topk_mean_similarity(q, tokens, k=2)
    assert torch.allclose(got, torch.tensor([[0.8, 0.9]]))
    # chunking gives the same running top-k
    assert torch.allclose(topk_mean_similarity(q, tokens, k=2, chunk=1), got)
    assert topk_mean_similarity(q, tokens[:0], k=2).eq(-1).all()


def test_weighted_topk_mean_takes_each_prototype_as_often_as_it_counts():
    q = torch.tensor([[[1.0, 0.0]]])  # [1, 1, 2]
    protos = torch.tensor([[0.9, 0.43589], [0.5, 0.86603], [0.1, 0.99499]])  # similarities 0.9, 0.5, 0.1
    # k = 5: two tokens at 0.9, then three of the ten at 0.5 -> (2 * 0.9 + 3 * 0.5) / 5 = 0.66
    got = weighted_topk_mean(q, protos, torch.tensor([2.0, 10.0, 1.0]), k=5)
    assert got.item() == pytest.approx(0.66, abs=1e-5)
    # fewer tokens than k in all: the mean of every token, as topk_mean_similarity averages them all
    assert weighted_topk_mean(q, protos[:2], torch.tensor([1.0, 1.0]), k=5).item() == pytest.approx(0.7, abs=1e-5)
    # counts of one: exactly the plain top-k mean
    gen = torch.Generator().manual_seed(0)
    qs = F.normalize(torch.randn(2, 30, 8, generator=gen), dim=-1)
    toks = F.normalize(torch.randn(50, 8, generator=gen), dim=-1)
    assert torch.allclose(weighted_topk_mean(qs, toks, torch.ones(50), k=5), topk_mean_similarity(qs, toks, k=5),
                          atol=1e-6)
    assert weighted_topk_mean(qs, toks[:0], torch.ones(0), k=5).eq(-1).all()


def test_compact_tokens_finds_the_looks_and_counts_their_tokens():
    gen = torch.Generator().manual_seed(0)
    looks = F.normalize(torch.randn(3, 16, generator=gen), dim=-1)
    sizes = (300, 120, 30)
    tokens = F.normalize(torch.cat([look + 0.01 * torch.randn(n, 16, generator=gen) for look, n in zip(looks, sizes)]),
                         dim=-1)
    assert compact_tokens(tokens, budget=len(tokens)) is None and compact_tokens(tokens, budget=0) is None
    protos, counts = compact_tokens(tokens, budget=3)
    assert protos.shape == (3, 16) and counts.sum().item() == len(tokens)
    nearest_look = (protos @ looks.T).argmax(dim=1)
    assert sorted(nearest_look.tolist()) == [0, 1, 2]  # one prototype per look ...
    assert sorted(counts.tolist()) == sorted(float(n) for n in sizes)  # ... standing for all of its tokens
    assert ((protos * looks[nearest_look]).sum(-1) > 0.999).all()
    # the contrast on the prototypes is the contrast on the tokens within the looks' spread (a little
    # under it: the top k tokens of a look lean towards the query, its mean does not)
    queries = F.normalize(looks + 0.05 * torch.randn(3, 16, generator=gen), dim=-1)[None]
    on_protos, on_tokens = weighted_topk_mean(queries, protos, counts, k=5), topk_mean_similarity(queries, tokens, k=5)
    assert (on_protos <= on_tokens + 1e-6).all() and torch.allclose(on_protos, on_tokens, atol=1e-2)
    again = compact_tokens(tokens, budget=3)
    assert torch.equal(again[0], protos) and torch.equal(again[1], counts)  # seeded: the same every run


def test_compact_tokens_keeps_the_hardest_tokens_exact():
    gen = torch.Generator().manual_seed(3)
    tokens = F.normalize(torch.randn(200, 12, generator=gen), dim=-1)
    hardness = torch.rand(200, generator=gen)
    protos, counts = compact_tokens(tokens, budget=20, hardness=hardness, exact_share=0.5)
    hardest = tokens[torch.argsort(hardness, descending=True)[:10]]
    assert torch.equal(protos[:10], hardest) and counts[:10].eq(1).all()  # kept as they are, once each
    assert len(protos) <= 20 and counts.sum().item() == 200                 # the rest summarised
    # a cell whose nearest tokens are among the hardest gets its exact top-k mean
    query = hardest[:1][None]
    assert weighted_topk_mean(query, protos, counts, k=1).item() == pytest.approx(1.0, abs=1e-6)


def test_contrast_on_compact_sets_reads_the_counts():
    gen = torch.Generator().manual_seed(1)
    ft = F.normalize(torch.randn(1, 8, 3, 4, generator=gen), dim=1)
    fg, bg = F.normalize(torch.randn(6, 8, generator=gen), dim=-1), F.normalize(torch.randn(9, 8, generator=gen), dim=-1)
    plain = contrast_similarities(ft, fg, bg, k=3)
    ones = contrast_similarities(ft, fg, bg, k=3, fg_counts=torch.ones(6), bg_counts=torch.ones(9))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, ones))
    heavy = contrast_similarities(ft, fg, bg, k=3, bg_counts=torch.full((9,), 3.0))  # the nearest one, three times
    nearest_bg = contrast_similarities(ft, fg, bg, k=1)[1]
    assert torch.allclose(heavy[1], nearest_bg, atol=1e-6) and torch.allclose(heavy[0], plain[0])


def test_contrast_probability_prefers_the_closer_side():
    fg = torch.tensor([[1.0, 0.0]])
    bg = torch.tensor([[0.0, 1.0]])
    ft = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2)  # cell 0 = fg, cell 1 = bg
    p = contrast_probability(ft, fg, bg, k=1, temperature=0.1)
    assert p.shape == (1, 1, 1, 2)
    assert torch.allclose(p[0, 0, 0], torch.sigmoid(torch.tensor([10.0, -10.0])))


def test_background_floor_is_the_quantile_of_background_similarity():
    fg = torch.tensor([[1.0, 0.0]])
    bg = F.normalize(torch.tensor([[1.0, 1.0], [0.0, 1.0], [-1.0, 0.0]]), dim=1)
    # similarities of bg to fg: 0.7071, 0, -1 -> median 0
    assert background_floor(fg, bg, k=1) == pytest.approx(0.0, abs=1e-6)
    assert np.isnan(background_floor(fg, bg[:0], k=1))


def test_source_background_lends_the_clear_background_cells():
    # 2x2 grid, one pooled cell; sf below the floor -> that cell is a candidate
    q = F.normalize(torch.tensor([[[1.0, 0.0], [1.0, 0.1], [0.9, 0.0], [1.0, 0.0]]]), dim=-1)
    sims = source_background_similarity(q, torch.full((1, 4), -0.5), (2, 2), floor=0.0, k=1)
    assert sims.shape == (1, 4) and (sims > 0.99).all()
    none = source_background_similarity(q, torch.full((1, 4), 0.5), (2, 2), floor=0.0, k=1)
    assert none.eq(-1).all()


@pytest.mark.parametrize("k", [1, 3, 40])
def test_source_background_compares_with_the_candidates_alone_and_gets_the_full_answer(k):
    gen = torch.Generator().manual_seed(2)
    b, h, w, c = 2, 12, 16, 8
    q = F.normalize(torch.randn(b, h * w, c, generator=gen), dim=-1)
    sf = torch.rand(b, h * w, generator=gen)
    sf[1] = 0.9  # the second image has no candidate at all
    floor = 0.3
    # the definition: every pooled cell, the ones at or above the floor counted as -1
    fmap = q.transpose(1, 2).reshape(b, c, h, w)
    pooled = F.normalize(F.avg_pool2d(fmap, 2, ceil_mode=True), dim=1).flatten(2).transpose(1, 2)
    candidate = F.avg_pool2d(sf.reshape(b, 1, h, w), 2, ceil_mode=True).flatten(1) < floor
    sims = (q @ pooled.transpose(1, 2)).masked_fill(~candidate[:, None, :], -1.0)
    expected = sims.topk(min(k, sims.shape[-1]), dim=-1).values.mean(-1)
    got = source_background_similarity(q, sf, (h, w), floor, k)
    assert 0 < candidate[0].sum() < candidate.shape[1]
    assert torch.allclose(got, expected, atol=1e-6) and got[1].eq(-1).all()


def test_reference_tokens_split_by_area():
    ft = torch.arange(2 * 2 * 3, dtype=torch.float32).reshape(2, 2, 3)
    area = torch.tensor([[1.0, 0.5, 0.0], [0.95, 0.05, 1.0]])
    valid = torch.tensor([[True, True, True], [True, True, False]])
    t = pool_reference_tokens(ft, area, valid)
    assert t.fg.shape == (2, 2) and t.bg.shape == (2, 2) and t.cells.shape == (5, 2)
    assert torch.equal(t.fg[:, 0], torch.tensor([0.0, 3.0]))
    mask = torch.zeros(1, 1, 4, 6)
    mask[..., :2, :3] = 1
    assert torch.equal(mask_area_on_grid(mask, (2, 2))[0, 0], torch.tensor([[1.0, 0.0], [0.0, 0.0]]))


def test_object_head_learns_a_separable_split():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 8, generator=g)
    y = (x[:, 0] > 0.8).float()  # about a fifth are object: class balance matters
    head = train_object_head(x, y, steps=150, batch=256, seed=0, hidden=32)
    acc = ((head(x) > 0).float() == y).float().mean()
    assert acc > 0.95
    again = train_object_head(x, y, steps=150, batch=256, seed=0, hidden=32)
    assert torch.equal(head(x), again(x))  # seeded: repeatable
    assert ObjectHead(8, hidden=0)(x).shape == (600,)
    with pytest.raises(ValueError):
        train_object_head(x[:0], y[:0])


def test_augment_reference_keeps_image_and_mask_aligned():
    g = torch.Generator().manual_seed(1)
    img = torch.zeros(3, 40, 60)
    mask = torch.zeros(1, 40, 60)
    img[:, 10:30, 20:40] = 1.0
    mask[:, 10:30, 20:40] = 1.0
    for _ in range(5):
        a_img, a_mask = augment_reference(img, mask, g)
        assert a_img.shape[1:] == a_mask.shape[1:]
        assert a_mask.mean() > 0.005
        inside = a_img.mean(0)[a_mask[0] > 0.9]
        outside = a_img.mean(0)[a_mask[0] < 0.1]
        assert inside.mean() > outside.mean() + 0.3


def _red_box_on_green(h: int, w: int, box: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An image with a red box on green, the box's mask, and a blurry probability of it (an 8x coarser map)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[...] = (30, 140, 30)
    img[box] = (220, 40, 40)
    truth = np.zeros((h, w), bool)
    truth[box] = True
    prob = F.interpolate(torch.from_numpy(truth.astype(np.float32))[None, None], size=(h // 8, w // 8), mode="area")
    prob = F.interpolate(prob, size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
    return img, truth, np.clip(prob * 0.9 + 0.05, 0, 1)


def test_grabcut_snaps_a_blurry_map_to_the_colour_edge():
    h, w = 80, 120
    img, truth, prob = _red_box_on_green(h, w, np.s_[20:60, 30:90])
    mask = fullres.grabcut_mask(img, prob, scale=1.0)
    assert (mask == truth).mean() > 0.995
    assert fullres.grabcut_mask(img, np.zeros((h, w)), scale=0.5).sum() == 0  # nothing to seed


def test_grabcut_on_the_box_around_the_uncertain_band():
    h, w = 120, 160
    img, truth, prob = _red_box_on_green(h, w, np.s_[40:80, 50:100])
    whole = fullres.grabcut_mask(img, prob, scale=1.0)
    boxed = fullres.grabcut_mask(img, prob, scale=1.0, margin=6)
    assert (boxed == truth).mean() > 0.995 and (boxed == whole).mean() > 0.995  # the same edge found
    # far from the band nothing moves: a speck of object colour in sure background stays background
    img[5:9, 5:9] = (220, 40, 40)
    assert not fullres.grabcut_mask(img, prob, scale=1.0, margin=6)[5:9, 5:9].any()
    # a band that spans the image: its box is the whole image, the same as without a margin
    everywhere = np.full((h, w), 0.6, np.float32)
    everywhere[40:80, 50:100] = 0.9
    everywhere[0, 0] = 0.1
    np.testing.assert_array_equal(fullres.grabcut_mask(img, everywhere, scale=1.0, margin=2),
                                  fullres.grabcut_mask(img, everywhere, scale=1.0))


def test_fill_holes_and_confident_components():
    m = np.zeros((20, 20), bool)
    m[2:10, 2:10] = True
    m[5, 5] = False  # a hole
    m[14:18, 14:18] = True  # a lukewarm blob
    filled = fullres.fill_holes(m)
    assert filled[5, 5] and not filled[0, 0]
    prob = np.where(m, 0.6, 0.0)
    prob[3, 3] = 0.95
    kept = fullres.keep_confident_components(filled, prob)
    assert kept[3, 3] and not kept[15, 15]
    assert fullres.keep_confident_components(filled, np.full((20, 20), 0.5)).sum() == filled.sum()


def test_thin_images_get_a_bounded_canvas():
    g = WorkingGeometry.fit(2, 3000, 320, 32, max_long_side=4 * 384)
    assert g.padded_w <= 4 * 384 + 32 and g.padded_h == 32
    back = g.to_original(torch.ones(1, 1, g.padded_h // 8, g.padded_w // 8))
    assert back.shape[-2:] == (2, 3000)


@pytest.mark.parametrize("erode_k,dilate_k", [(1, 1), (3, 3), (10, 10), (4, 7), (20, 5)])
def test_fast_trimap_equals_the_core_trimap(erode_k, dilate_k):
    from icm_cli.core import generate_trimap
    rng = np.random.default_rng(erode_k * 31 + dilate_k)
    for shape in [(23, 37), (40, 9)]:
        blobs = F.interpolate(torch.from_numpy(rng.random((1, 1, 5, 6), dtype=np.float32)), size=shape,
                              mode="bilinear", align_corners=False)[0, 0].numpy()
        mask = (blobs > 0.5).astype(np.float32)
        mask[0, :3] = 1.0  # touch the border
        core = generate_trimap(torch.from_numpy(mask)[None, None], erode_k, dilate_k)[0, 0].numpy()
        fast = fullres.mask_to_trimap_u8(mask, erode_k, dilate_k)
        np.testing.assert_array_equal(fast, np.select([core == 1.0, core == 0.5], [255, 128], 0).astype(np.uint8))
