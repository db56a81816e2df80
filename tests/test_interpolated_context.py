"""A bounded context for interpolated denoising (``max_context=K``, ``vantage sample --strategy interpolated
--max-context K``): the network rows per call (counted on a wrapped single-view denoiser) against the documented
cost formula, the inputs always kept, the nearest generated views rather than the latest, K >= the generated views
equal to the unbounded strategy exactly (also with separate noise and in the single-target walk), and the command."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from test_cli_sample import ckpt  # noqa: F401 (a tiny 3DiM run)
from test_interpolated import ViewMock, _cams, _object

from vantage.cli.main import main
from vantage.sampling import InterpolatedDenoising, autoregressive_orbit, sample_single_target

pytestmark = pytest.mark.usefixtures("single_thread")

SIGMAS = [5.0, 1.0, 0.0]  # two denoiser calls per view
TARGETS = [30, 60, 90, 120, 150, -150, -120, -90, -60, -30]  # T = 10 generated views, sequential


def _run(max_context, azimuths=TARGETS, *, inputs=None, window=360.0, **kw):
    den = ViewMock(mix=0.3)
    events: list = []
    options = {"max_context": max_context, "window_deg": window, **kw.pop("options", {})}
    res = autoregressive_orbit(den, inputs or _object(), _cams(azimuths), strategy="interpolated", order="sequential",
                               sampler="euler_ancestral", sigmas=SIGMAS, seed=0, callback=events.append,
                               strategy_options=options, **kw)
    return res, den.rows, events


@pytest.mark.filterwarnings("ignore:interpolated denoising")
def test_rows_per_call_are_bounded_and_follow_the_cost_formula():
    N, T, steps, K = 1, len(TARGETS), 2, 3
    full, rows_full, _ = _run(None)
    bounded, rows_k, events = _run(K)
    assert rows_full == [N + j for j in range(T) for _ in range(steps)]  # grows with the orbit
    assert rows_k == [N + min(j, K) for j in range(T) for _ in range(steps)] and max(rows_k) == N + K
    assert sum(rows_full) == steps * (T * N + T * (T - 1) // 2)  # docs/sampling.md
    assert sum(rows_k) == steps * (T * N + K * T - K * (K + 1) // 2)
    assert bounded.nfe == full.nfe == steps * T and bounded.set_sizes.tolist() == full.set_sizes.tolist()
    assert torch.equal(bounded.images[0, :K + 1], full.images[0, :K + 1])  # within K nothing is left out yet
    assert not torch.equal(bounded.images, full.images)
    # the last target (-30°) conditions on the input and the generated views nearest to it (-60°, 30°, -90°), not
    # on the latest ones; slot 0 is the input, slot 1 + j the view generated at step j
    last = events[-1]["strategy"]
    assert last.max_context == K and last.last_active[0].nonzero().flatten().tolist() == [0, 1, 8, 9]
    # within the paper's 125° window the rows are fewer still, and never above N + K
    _, rows_window, _ = _run(K, window=125.0)
    assert max(rows_window) <= N + K and sum(rows_window) <= sum(rows_k)


@pytest.mark.filterwarnings("ignore:interpolated denoising")
@pytest.mark.parametrize("separate_noise", [False, True])
def test_k_at_least_the_generated_views_is_the_unbounded_strategy(separate_noise):
    opts = {"options": {"separate_noise": separate_noise}}
    for window in (360.0, 125.0):
        full = _run(None, window=window, **opts)[0].images
        for k in (len(TARGETS) - 1, len(TARGETS), 100):  # the last view sees T − 1 generated views
            assert torch.equal(_run(k, window=window, **opts)[0].images, full)


@pytest.mark.filterwarnings("ignore:interpolated denoising")
def test_the_inputs_are_always_kept():
    # K = 0: the input alone, exactly the fixed-views result (every target from the input only)
    only, rows, events = _run(0)
    assert rows == [1] * len(rows) and all(e["strategy"].last_active[0].nonzero().flatten().tolist() == [0]
                                           for e in events)
    assert torch.equal(only.images, _run(None, autoregressive=False)[0].images)
    # the input outside the window (target at 180°) is still a branch
    _, _, events = _run(1, [90, 180], window=125.0)
    assert bool(events[-1]["strategy"].last_active[0, 0])
    # two inputs (0° and 180°): both kept, plus the K nearest generated views
    two = _object((0.0, 180.0))
    _, rows, events = _run(1, [30, 60, 90, -30], inputs=two)
    assert rows == [2 + min(j, 1) for j in range(4) for _ in range(2)]
    assert events[-1]["strategy"].last_active[0].nonzero().flatten().tolist() == [0, 1, 2]  # -30°: 30° is nearest


def test_option_checks():
    with pytest.raises(ValueError, match="max_context"):
        InterpolatedDenoising(ViewMock(), max_context=-1)
    with pytest.raises(ValueError, match="max_context"):
        InterpolatedDenoising(ViewMock(), max_context=1.5)
    assert InterpolatedDenoising(ViewMock()).max_context is None


def test_single_target_walk_with_a_bounded_context():
    target = _cams([90.0], 30.0)  # a walk of 9 poses, 10° apart

    def walk(max_context):
        den = ViewMock(mix=0.3)
        res = sample_single_target(den, _object(), target, max_context=max_context, sampler="euler_ancestral",
                                   sigmas=SIGMAS, seed=[2])
        return res, den.rows

    full, rows_full = walk(None)
    bounded, rows_k = walk(2)
    assert max(rows_full) == 9 and max(rows_k) == 3  # the input and 8 poses, vs the input and 2
    assert torch.equal(walk(8)[0].image, full.image) and not torch.equal(bounded.image, full.image)


# ------------------------------------------------------------------------------------ command line
def test_cli_interpolated_max_context(ckpt, tmp_path, capsys):  # noqa: F811
    img = tmp_path / "in.png"
    Image.new("RGB", (16, 16), (200, 40, 40)).save(img)

    def sample(out: str, *extra: str) -> int:
        return main(["sample", "--checkpoint", str(ckpt), "--input", str(img), "--out", str(tmp_path / out),
                     "--device", "cpu", "--steps", "1", "--strategy", "interpolated", "--orbit", "6", *extra])

    assert sample("bounded", "--max-context", "1", "--window", "180") == 0
    s = json.loads((tmp_path / "bounded" / "sample.json").read_text())
    assert s["strategy_options"]["max_context"] == 1 and s["order"] == [0, 1, 5, 2, 4, 3]
    assert s["set_sizes"] == [0, 1, 3, 5, 4, 2] and s["context_sizes"] == [0, 1, 2, 2, 2, 2]
    assert sample("walks", "--max-context", "1", "--walk-step", "60") == 0
    assert json.loads((tmp_path / "walks" / "sample.json").read_text())["strategy_options"]["max_context"] == 1
    capsys.readouterr()
    assert sample("fixed", "--max-context", "1", "--no-autoregressive") == 2
    assert "--max-context bounds the generated views in the set; with --no-autoregressive" in capsys.readouterr().err
