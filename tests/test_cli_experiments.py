"""featx.cli.experiments: fit, compare and runs from the command line, and their one-line errors (conftest.elpv_cache)."""

from featx.cli import main

from helpers import log_size


def test_cli_fit_compare_runs_and_bad_input(elpv_cache, capsys):
    d = str(elpv_cache)
    before = log_size(elpv_cache)
    assert (
        main(
            [
                "fit",
                "--cache-dir",
                d,
                "--layers",
                "top_activation",
                "--clf",
                "logreg",
                "--standardize",
                "--param",
                "C=0.5",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "compare",
                "--cache-dir",
                d,
                "--layer-sets",
                "top_activation",
                "block6d_add",
                "--clf",
                "rf,logreg",
                "--grid",
                "min_samples_leaf=1,3",
                "--n-estimators",
                "20",
            ]
        )
        == 0
    )
    assert log_size(elpv_cache) == before + 1 + 2 * 3 + 2  # and the 2 baselines
    assert main(["runs", "--cache-dir", d, "--clf", "logreg", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "compare: 2 layer subset(s)" in out and "val_accuracy" in out
    assert main(["fit", "--cache-dir", d, "--layers", "block5_conv4"]) == 2
    assert "error: layer 'block5_conv4' not in efficientnet_lite0" in capsys.readouterr().err
    assert main(["fit", "--cache-dir", d, "--clf", "svm", "--n-estimators", "5"]) == 2
    assert main(["predict", "--cache-dir", d, "--model", "nosuchrun", d]) == 2
    assert log_size(elpv_cache) == before + 9
