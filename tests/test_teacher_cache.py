"""The teacher's per-image output cache: what it returns equals the teacher's forward, hit or miss."""

from __future__ import annotations

import pytest
import torch

from compress.distill.teacher_cache import image_key
from compress.errors import ConfigError
from tests.conftest import make_batch
from tests.distill_helpers import build_distiller
from tests.run_helpers import logged_train_rows
from tests.tiny import tiny_model


def _pick(batches: list[dict], picks: list[tuple[int, int]]) -> dict:
    """A batch of (batch, image) picks from ``batches``."""
    return {"inputs": [batches[b]["inputs"][i] for b, i in picks],
            "data_samples": [batches[b]["data_samples"][i] for b, i in picks]}


def _cached_distiller(tmp_path, cache_mb: float = 64, **sections):
    return build_distiller(tmp_path, tiny_model("dino"), tiny_model("dino", width=4),
                           teacher_options={"cache_mb": cache_mb}, **sections)


def _compared(taps) -> dict[str, torch.Tensor]:
    return {"cls_scores": taps.cls_scores, "bbox_preds": taps.bbox_preds,
            "hidden_states": taps.head_inputs["hidden_states"], "query": taps.decoder_inputs["query"],
            "reference_points": taps.decoder_inputs["reference_points"],
            **{f"feats{level}": value for level, value in enumerate(taps.feats)}}


def test_cached_outputs_equal_the_teachers_for_hits_and_misses_in_one_batch(tmp_path):
    distiller = _cached_distiller(tmp_path)
    first, other = make_batch(3, 96, seed=0), make_batch(2, 96, seed=7)
    data = distiller.data_preprocessor(first, True)
    distiller._teacher_forward(data["inputs"], data["data_samples"])
    cache = distiller.teacher_cache
    assert (cache.hits, cache.misses, len(cache.entries)) == (0, 3, 3)

    # two images seen before, in another order and at other batch positions, around one new image
    mixed = distiller.data_preprocessor(_pick([first, other], [(0, 2), (1, 0), (0, 0)]), True)
    cached = distiller._teacher_forward(mixed["inputs"], mixed["data_samples"])
    assert (cache.hits, cache.misses, len(cache.entries)) == (2, 4, 4)
    direct = distiller._run_teacher(mixed["inputs"], mixed["data_samples"])
    for name, value in _compared(direct).items():
        got = _compared(cached)[name]
        assert got.shape == value.shape and got.dtype == value.dtype, name
        torch.testing.assert_close(got, value, rtol=1e-5, atol=1e-5, msg=name)
    assert cached.memory is None and cached.backbone_feats == ()  # not kept: the default feature KD reads the neck


def test_a_flipped_or_repadded_image_is_a_new_key():
    batch = make_batch(1, 96)
    image, meta = batch["inputs"][0].float(), {"img_shape": (96, 96), "batch_input_shape": (96, 96)}
    key = image_key(image, meta)
    assert image_key(image.clone(), dict(meta)) == key
    assert image_key(image.flip(-1), meta) != key
    assert image_key(image, {**meta, "batch_input_shape": (96, 128)}) != key
    assert image_key(image, {**meta, "img_shape": (90, 96)}) != key


@pytest.mark.parametrize("feature_kd", [{}, {"levels": [0]}, {"source": "encoder", "levels": [1, 2]},
                                        {"source": "backbone", "mask": "boxes", "levels": [1]}],
                         ids=["neck-all-levels", "neck-finest", "encoder", "backbone"])
def test_training_losses_with_the_cache_equal_those_without(tmp_path, feature_kd):
    """A whole loss step on a batch the cache has seen, against the same step with the teacher run: the same
    student draws (DINO's denoising queries) from the same seed, so the same losses; also where the cache
    keeps only the distilled levels' maps (a level kept as a placeholder that a loss read would change it)."""
    distiller = _cached_distiller(tmp_path, feature_kd=feature_kd)
    distiller.train()
    data = distiller.data_preprocessor(make_batch(2, 96, seed=3), True)

    def losses() -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        return {k: v.detach() for k, v in distiller(**data, mode="loss").items() if "loss" in k}

    losses()  # fills the cache
    hits_before = distiller.teacher_cache.hits
    from_cache = losses()
    assert distiller.teacher_cache.hits == hits_before + 2
    cache, distiller.teacher_cache = distiller.teacher_cache, None
    from_teacher = losses()
    assert set(from_cache) == set(from_teacher) and any(k.startswith("loss_fkd") for k in from_cache)
    for key, value in from_teacher.items():
        torch.testing.assert_close(from_cache[key], value, rtol=1e-5, atol=1e-6, msg=key)
    distiller.teacher_cache = cache
    torch.manual_seed(0)
    logged = distiller(**data, mode="loss")["teacher_cache_hit_rate"]
    assert float(logged) == pytest.approx(4 / 6)  # hits 4 of the 6 images looked up so far


def test_the_cache_keeps_only_what_the_losses_read_and_stays_under_its_size(tmp_path):
    no_feature = _cached_distiller(tmp_path / "a", feature_kd={"enable": False})
    backbone = _cached_distiller(tmp_path / "b", feature_kd={"source": "backbone", "mask": "boxes"})
    data = no_feature.data_preprocessor(make_batch(2, 96), True)
    for distiller in (no_feature, backbone):
        distiller._teacher_forward(data["inputs"], data["data_samples"])
    assert "feats" not in no_feature.teacher_cache.fields
    assert {"backbone_feats", "feats"} & set(backbone.teacher_cache.fields) == {"backbone_feats"}
    record = next(iter(backbone.teacher_cache.entries.values()))
    assert len(record["backbone_feats"]) == len(backbone.teacher.backbone.out_indices)
    assert no_feature.teacher_cache.used_bytes < backbone.teacher_cache.used_bytes

    tiny = _cached_distiller(tmp_path / "c", cache_mb=0.001)  # 1 kB: no record fits
    tiny._teacher_forward(data["inputs"], data["data_samples"])
    tiny._teacher_forward(data["inputs"], data["data_samples"])
    assert (tiny.teacher_cache.hits, tiny.teacher_cache.misses, tiny.teacher_cache.used_bytes) == (0, 4, 0)


def test_the_cache_keeps_the_values_of_the_distilled_levels_only(tmp_path):
    """The finest of four neck levels distilled: its map is kept, the three coarser ones hold one element
    each, and a record costs that many bytes less than one keeping every level."""
    every = _cached_distiller(tmp_path / "a")
    finest = _cached_distiller(tmp_path / "b", feature_kd={"levels": [0]})
    encoder = _cached_distiller(tmp_path / "c", feature_kd={"source": "encoder"})
    data = every.data_preprocessor(make_batch(2, 96), True)
    for distiller in (every, finest, encoder):
        distiller._teacher_forward(data["inputs"], data["data_samples"])
    key = next(iter(every.teacher_cache.entries))
    full, trimmed = every.teacher_cache.entries[key]["feats"], finest.teacher_cache.entries[key]["feats"]
    assert len(full) == len(trimmed) == 4 and [m.shape for m in full] == [m.shape for m in trimmed]
    torch.testing.assert_close(trimmed[0], full[0], rtol=0, atol=0)
    assert [m.untyped_storage().nbytes() for m in trimmed[1:]] == [4, 4, 4]
    coarse_bytes = sum(m.numel() * m.element_size() for m in full[1:])
    assert every.teacher_cache.used_bytes - finest.teacher_cache.used_bytes == 2 * (coarse_bytes - 3 * 4)
    # the encoder memory is split per level by the neck maps' sizes: none of their values is kept
    kept = encoder.teacher_cache.entries[key]
    assert kept["memory"].shape[0] == sum(m.shape[-2] * m.shape[-1] for m in full)
    assert all(m.untyped_storage().nbytes() == 4 and m.shape == f.shape for m, f in zip(kept["feats"], full))


@pytest.mark.parametrize("value", [-1, "4GB", True])
def test_a_bad_cache_size_is_refused_in_one_line(tmp_path, value):
    with pytest.raises(ConfigError, match=r"model.teacher.cache_mb must be a number of megabytes >= 0") as err:
        _cached_distiller(tmp_path, cache_mb=value)
    assert "\n" not in str(err.value)


def test_the_runner_logs_the_hit_rate_beside_the_losses_and_sums_only_the_losses(tiny_pair, tmp_path):
    """16 iterations of batch 2 over the 16 training images, randomly flipped: the second epoch meets about
    half of its views again. The rate is logged, rises from zero, and the logged total is the losses' sum."""
    pair = tiny_pair
    model = (f"model = dict(teacher=dict(config='{pair['teacher']}', checkpoint='{pair['ckpt']}', cache_mb=64), "
             f"student=dict(config='{pair['student']}'))")
    train = logged_train_rows(pair, tmp_path, "cached", model, iters=16)
    rates = [train[it]["teacher_cache_hit_rate"] for it in sorted(train)]
    assert rates[:8] == [0.0] * 8  # the first epoch sees every image once (a flip can repeat a view only later)
    assert 0.1 < rates[-1] < 0.5
    for row in train.values():
        assert row["loss"] == pytest.approx(sum(v for k, v in row.items() if "loss" in k and k != "loss"), abs=0.01)
