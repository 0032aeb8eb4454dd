"""featx changes no process-wide state a notebook or host program relies on: global random streams, the
matplotlib backend, Pillow's pixel limit (tests/test_sources.py checks that one)."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from helpers import draws, seed_everything


@pytest.mark.slow  # builds two backbones: about 25 s on 2 busy cores
@pytest.mark.parametrize("name, size", [("mobilenet_v2", 96), ("efficientnet_lite0", 64)])
def test_random_init_backbone_is_reproducible_and_leaves_global_rngs_alone(name, size):
    from featx.backbones import get_backbone

    seed_everything(123)
    expected = draws()
    seed_everything(123)
    first = get_backbone(name, "none", size)
    assert draws() == expected  # Python, NumPy and TensorFlow streams continue as if nothing was built
    random.seed(7)  # a different caller state must not change the weights
    second = get_backbone(name, "none", size)
    assert first.weights_id == second.weights_id


def test_drawing_reports_chooses_no_matplotlib_backend(tmp_path):
    """In a fresh interpreter (the backend is process-wide): draw every kind of figure, the backend stays unset."""
    script = textwrap.dedent(f"""
        import matplotlib, pandas as pd, numpy as np
        before = matplotlib.rcParams._get_backend_or_none()
        from featx.figures.plots import plot_confusion, plot_layer_comparison, plot_tsne
        out = {str(tmp_path)!r}
        plot_confusion(pd.DataFrame([[3, 1], [0, 4]], index=["a", "b"], columns=["a", "b"]), out + "/c.png", "t")
        results = pd.DataFrame({{"layers": ["x", "y", "x", "y"], "classifier": ["rf", "rf", "svm", "svm"],
                                "test_accuracy": [0.5, 0.6, 0.7, 0.8]}})
        plot_layer_comparison(results, out + "/bars.png")
        plot_tsne(np.random.default_rng(0).normal(size=(40, 5)), np.arange(40) % 2, ["a", "b"], out + "/t.png")
        import sys
        figures = sys.modules["matplotlib.pyplot"].get_fignums() if "matplotlib.pyplot" in sys.modules else []
        print(before, matplotlib.rcParams._get_backend_or_none(), figures)
    """)
    env = {k: v for k, v in __import__("os").environ.items() if k != "MPLBACKEND"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "None", "[]"], done.stdout
    for name in ("c", "bars", "t"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # trains a small Keras head twice: about 10 s
def test_dense_head_is_reproducible_and_leaves_global_rngs_alone(digits):
    from featx.classifiers.dense import DenseHeadClassifier

    X, y, _ = digits
    seed_everything(123)
    expected = draws()
    seed_everything(123)
    first = DenseHeadClassifier(hidden=(16,), epochs=3, dropout=0.2, random_state=0).fit(X[:300], y[:300])
    assert draws() == expected  # Python, NumPy and TensorFlow streams continue as if nothing was trained
    seed_everything(7)  # a different caller state (TensorFlow's global seed too) must not change the fit
    second = DenseHeadClassifier(hidden=(16,), epochs=3, dropout=0.2, random_state=0).fit(X[:300], y[:300])
    np.testing.assert_array_equal(first.predict_proba(X[300:400]), second.predict_proba(X[300:400]))
