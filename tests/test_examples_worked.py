"""The worked examples of the docs (examples/*.py shown in docs/examples.md and
docs/walkthrough.md) run, and compute what they claim.

* ``transformer_block.py`` on every backend against a float64 encoder block written here
  independently (explicit loops over batch entries and heads).
* ``attention_heatmaps.py``: the plotted weights are exactly 0 where a causal or padding
  mask excludes a key, positive elsewhere, and rows sum to 1.
* ``buggy_kernel.py`` fails ``attnspec check`` (on the rule it breaks), ``fixed_kernel.py``
  passes, and the walk-through shows the diff between them as it is.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"worked_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- Transformer encoder block ----------------------------------------------------------------


def _reference_block(x, p, *, num_heads, num_kv_heads, lengths, causal):
    """Pre-norm encoder block in float64 loops: independent of attnspec and the example."""
    x = np.asarray(x, dtype=np.float64)
    batch, length, d_model = x.shape
    head_dim = d_model // num_heads
    group = num_heads // num_kv_heads

    def norm(t, gamma, beta):
        mu = t.mean(axis=-1, keepdims=True)
        sigma2 = ((t - mu) ** 2).mean(axis=-1, keepdims=True)
        return (t - mu) / np.sqrt(sigma2 + 1e-5) * gamma + beta

    out = np.empty_like(x)
    for b in range(batch):
        h = norm(x[b], p["ln1_gamma"], p["ln1_beta"])
        q = h @ p["w_q"] + p["b_q"]
        k = h @ p["w_k"] + p["b_k"]
        v = h @ p["w_v"] + p["b_v"]
        heads = np.zeros((length, d_model))
        for head in range(num_heads):
            kv = head // group  # query head -> its key/value head (contiguous groups)
            qh = q[:, head * head_dim:(head + 1) * head_dim]
            kh = k[:, kv * head_dim:(kv + 1) * head_dim]
            vh = v[:, kv * head_dim:(kv + 1) * head_dim]
            for i in range(length):
                logits = []
                for j in range(int(lengths[b])):
                    if causal and j > i:
                        continue
                    logits.append((j, float(qh[i] @ kh[j]) / math.sqrt(head_dim)))
                top = max(s for _, s in logits)
                e = [(j, math.exp(s - top)) for j, s in logits]
                total = sum(w for _, w in e)
                for j, w in e:
                    heads[i, head * head_dim:(head + 1) * head_dim] += w / total * vh[j]
        y = x[b] + heads @ p["w_o"] + p["b_o"]
        h = norm(y, p["ln2_gamma"], p["ln2_beta"]) @ p["w_1"] + p["b_1"]
        h = 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
        out[b] = y + h @ p["w_2"] + p["b_2"]
    return out


@pytest.fixture(scope="module")
def transformer():
    return _load("transformer_block")


def test_transformer_block_matches_float64_loops(xb, transformer, rng):
    batch, length, d_model, d_ff, heads, kv_heads = 2, 9, 24, 40, 4, 2
    x = rng.standard_normal((batch, length, d_model))
    lengths = np.array([9, 5])
    params = transformer.init_params(rng, d_model, d_ff, heads, kv_heads)
    expected = _reference_block(x, params, num_heads=heads, num_kv_heads=kv_heads,
                                lengths=lengths, causal=True)
    dtype = "float64" if "float64" in xb.dtypes else "float32"
    got = transformer.encoder_block(
        xb.from_numpy(x, dtype=dtype),
        {name: xb.from_numpy(a, dtype=dtype) for name, a in params.items()},
        num_heads=heads, num_kv_heads=kv_heads, lengths=xb.from_numpy(lengths), causal=True,
    )
    got = xb.to_numpy(got)
    assert got.shape == expected.shape
    assert str(got.dtype) == dtype
    tol = 1e-11 if dtype == "float64" else 2e-5
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got.astype(np.float64), expected, rtol=0, atol=tol * scale)


def test_transformer_block_padding_keys_do_not_matter(transformer, rng):
    """Changing padded tokens changes no output of the real tokens (the mask is applied)."""
    x = rng.standard_normal((1, 8, 16))
    params = transformer.init_params(rng, 16, 32, 4)
    out = transformer.encoder_block(x, params, num_heads=4, lengths=np.array([5]))
    x2 = x.copy()
    x2[:, 5:] = 100.0 * rng.standard_normal((1, 3, 16))
    out2 = transformer.encoder_block(x2, params, num_heads=4, lengths=np.array([5]))
    np.testing.assert_array_equal(out[:, :5], out2[:, :5])
    assert not np.allclose(out[:, 5:], out2[:, 5:])


# --- Heatmaps ---------------------------------------------------------------------------------


def test_heatmaps_plot_exact_zeros_where_masked(tmp_path):
    pytest.importorskip("matplotlib", reason="the heatmap example draws with matplotlib")
    heatmaps = _load("attention_heatmaps")
    weights = heatmaps.attention_weights()
    path = tmp_path / "heatmaps.png"
    fig = heatmaps.draw(weights, str(path))
    assert path.stat().st_size > 10_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    n, valid = heatmaps.LENGTH, heatmaps.VALID
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    masked = {
        "no mask": np.zeros((n, n), dtype=bool),
        "causal=True": j > i,
        f"padding: kv_lengths={valid}": np.broadcast_to(j >= valid, (n, n)),
        "causal + padding": (j > i) | (j >= valid),
    }
    assert list(weights) == list(masked)
    images = [ax.get_images()[0] for ax in fig.axes if ax.get_images()]
    assert len(images) == len(masked) * heatmaps.HEADS
    for r, (title, excluded) in enumerate(masked.items()):
        for h in range(heatmaps.HEADS):
            plotted = images[r * heatmaps.HEADS + h].get_array()
            data = np.ma.getdata(plotted)
            np.testing.assert_array_equal(data, weights[title][h])  # what is drawn
            assert np.all(data[excluded] == 0.0), (title, h)
            assert np.all(data[~excluded] > 0.0), (title, h)
            np.testing.assert_array_equal(np.ma.getmaskarray(plotted), excluded)
            np.testing.assert_allclose(data.sum(axis=-1), 1.0, rtol=0, atol=1e-12)
    # The unmasked weights are softmax(q k^T / sqrt(D)), recomputed here in float64.
    rng = np.random.default_rng(0)
    q = 2.0 * rng.standard_normal((heatmaps.HEADS, n, heatmaps.HEAD_DIM))
    k = 2.0 * rng.standard_normal((heatmaps.HEADS, n, heatmaps.HEAD_DIM))
    s = q @ k.transpose(0, 2, 1) / math.sqrt(heatmaps.HEAD_DIM)
    s = np.where(masked["causal + padding"], -np.inf, s)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(weights["causal + padding"], p / p.sum(-1, keepdims=True),
                               rtol=1e-12, atol=0)


def test_heatmaps_script_writes_the_png(tmp_path):
    pytest.importorskip("matplotlib", reason="the heatmap example draws with matplotlib")
    path = tmp_path / "out.png"
    run = subprocess.run([sys.executable, str(EXAMPLES / "attention_heatmaps.py"), str(path)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert "causal + padding         masked cells: 204 of 400" in run.stdout
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_committed_heatmap_image_exists():
    image = ROOT / "docs" / "images" / "attention_heatmaps.png"
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "images/attention_heatmaps.png" in (ROOT / "docs" / "examples.md").read_text()


# --- Kernel author's walk-through -------------------------------------------------------------


def _walkthrough():
    spec = importlib.util.spec_from_file_location("gen_walkthrough",
                                                  ROOT / "docs" / "gen_walkthrough.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("block", ["buggy", "repro", "fixed"])
def test_walkthrough_shows_a_real_run(block):
    """docs/walkthrough.md's console output is what the command prints now (numbers aside:
    a BLAS may round the last digit differently); `python docs/gen_walkthrough.py` rewrites
    it."""
    gen = _walkthrough()
    page = gen.blocks((ROOT / "docs" / "walkthrough.md").read_text())
    assert gen.without_numbers(page[block]) == gen.without_numbers(gen.run(block))


def test_buggy_kernel_fails_on_the_rules_it_breaks():
    """The walk-through's story holds: the planted bug (ATT-CAUSAL-2, which also makes a
    prefill in chunks disagree with the whole: ATT-CONS-2) and the two found ones (float16
    overflow, mixed dtypes accepted) are the failures, and the fixed kernel passes with
    every claimed rule tested."""
    gen = _walkthrough()
    page = gen.blocks((ROOT / "docs" / "walkthrough.md").read_text())
    failed = re.findall(r"^  fail (\S+) ", page["buggy"], re.M)
    groups = {case.split("/")[0] for case in failed}
    assert groups == {"causal-lower-right", "causal-lower-right-empty", "extreme",
                      "dtype-errors", "consistency-split"}, failed
    assert "Exit status 1." in page["buggy"]
    assert "Exit status 1." in page["repro"]
    assert re.search(r"PASSED: \d+ graded cases conform; every claimed rule has graded "
                     r"evidence", page["fixed"])
    assert "Exit status 0." in page["fixed"]


def test_fixed_kernel_agrees_with_attnspec_in_float64(rng):
    import attnspec

    fixed = _load("fixed_kernel")
    q = rng.standard_normal((2, 4, 5, 8))
    k = rng.standard_normal((2, 2, 9, 8))
    v = rng.standard_normal((2, 2, 9, 3))
    for alignment in ("upper_left", "lower_right"):
        got = fixed.attention(q, k, v, causal=True, alignment=alignment)
        want = attnspec.scaled_dot_product_attention(q, k, v, causal=True, alignment=alignment)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-13)


def walkthrough_diff() -> str:
    """The unified diff of the two kernels, less the hunk of their docstrings (which differ
    by design): what docs/walkthrough.md shows."""
    buggy = (EXAMPLES / "buggy_kernel.py").read_text().splitlines()
    fixed = (EXAMPLES / "fixed_kernel.py").read_text().splitlines()
    lines = list(difflib.unified_diff(buggy, fixed, "examples/buggy_kernel.py",
                                      "examples/fixed_kernel.py", lineterm="", n=2))
    code_start = buggy.index("from __future__ import annotations") + 1
    hunks, kept = [], lines[:2]
    for line in lines[2:]:
        if line.startswith("@@"):
            hunks.append([line])
        else:
            hunks[-1].append(line)
    for hunk in hunks:
        if int(re.match(r"@@ -(\d+)", hunk[0]).group(1)) > code_start:
            kept += hunk
    return "\n".join(line.rstrip() for line in kept)


def test_walkthrough_shows_the_real_diff():
    diff = walkthrough_diff()
    assert diff.count("\n+") >= 4
    assert f"```diff\n{diff}\n```" in (ROOT / "docs" / "walkthrough.md").read_text()
