#!/usr/bin/env python
"""An exported model against featx predict, and TFLite files against the Keras model, on ELPV (Lite0 + logreg).

    python benchmarks/bench_export.py                  # 512 ELPV images at 224 px (about 10 minutes on 2 cores)
    python benchmarks/bench_export.py --quick          # CI smoke: 96 images at 96 px, TFLite float16 only
    python benchmarks/bench_export.py --json out.json

One run: ELPV images extracted through EfficientNet-Lite0 (top_activation), logistic regression on standardized
features fitted on the train split (`featx fit`), exported with `featx export-model`. Then, on the same images:

* speed, from image files to class probabilities (decoded as extract decodes them), each timed twice in
  alternation (the faster pass counts), images/s and their ratios measured in the same run: `featx predict`
  (one call: the run's backbone rebuilt, its layers extracted, its pipeline applied); the exported .keras model
  loaded by featx.load_model and run (what one script does); the same model already loaded (what a service
  does for each request);
* agreement: the largest difference between the two's probabilities (predict's CSV keeps 4 decimals) and the
  share of images given the same class;
* TFLite: `--format tflite` (float32, skipped by --quick) and `--format tflite --float16` run by the LiteRT
  interpreter, one image at a time as a phone would: file size against the .keras file, test accuracy against
  the Keras float32 model's on the run's test split, the share of test images given the same class and the
  largest probability difference.

Output: a table (printed; `--json PATH` writes it too) of rows metric, value, unit, ratio (where one compares).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

LAYERS = "top_activation"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[1], formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--quick", action="store_true", help="96 images at 96 px, TFLite float16 only: a CI smoke run")
    parser.add_argument("--images", type=int, default=None, help="stratified subset of ELPV (default 512)")
    parser.add_argument("--input-size", type=int, default=None, help="input side (default: Lite0's own, 224)")
    parser.add_argument("--json", default=None, help="also write the table here")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    args.images = args.images or (96 if args.quick else 512)
    if args.quick:
        args.input_size = args.input_size or 96
    with tempfile.TemporaryDirectory(prefix="featx-bench-export-") as tmp:
        rows = run(args, Path(tmp))
    print(table(rows))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"rows": rows, "images": args.images, "input_size": args.input_size, "cpus": os.cpu_count()}, indent=1
            )
        )
    return 0


def run(args, root: Path) -> list[dict]:
    import numpy as np

    import featx
    from featx.experiments.export_model import export_model

    extracted = featx.extract(
        featx.DataSpec("elpv", limit=args.images),
        featx.BackboneSpec("efficientnet_lite0", input_size=args.input_size),
        LAYERS,
        cache=root / "cache",
        compute=featx.Compute(progress=not args.quiet),
        log=None,
    )
    entry = extracted.entry
    run_id = featx.fit(None, LAYERS, featx.fit_spec("logreg", standardize=True), cache=root / "cache", log=None).run_id
    files = [str(Path(entry.manifest.root) / p) for p in entry.relpaths]
    keras_file = export_model(run_id, root / "model.keras", cache=root / "cache", log=None)

    def predict():
        table = featx.predict(run_id, files, output=root / "p.csv", cache=root / "cache", log=lambda *a: None)
        return table[[c for c in table.columns if c.startswith("p_")]].to_numpy(float)

    def exported():
        return featx.load_model(keras_file).scores(files)

    service = featx.load_model(keras_file)  # a service loads the model once, then classifies request after request
    service.scores(files[:1])  # its first call traces the graph

    timings, scores = {"predict": [], "exported": [], "service": []}, {}
    for _ in range(2):  # alternating, so no side alone pays for a busy moment of the machine
        for name, call in (("predict", predict), ("exported", exported), ("service", lambda: service.scores(files))):
            began = time.perf_counter()
            scores[name] = call()
            timings[name].append(time.perf_counter() - began)
    rate = {name: len(files) / min(seconds) for name, seconds in timings.items()}
    rows = [
        {"metric": "featx predict (one call), image files -> probabilities", "value": rate["predict"], "unit": "img/s"},
        {
            "metric": "exported .keras, loaded and run (featx.load_model(...).scores(files))",
            "value": rate["exported"],
            "unit": "img/s",
            "ratio": rate["exported"] / rate["predict"],
        },
        {
            "metric": "exported .keras, already loaded (a service), image files -> probabilities",
            "value": rate["service"],
            "unit": "img/s",
            "ratio": rate["service"] / rate["predict"],
        },
        {
            "metric": "largest |exported - predict| probability (predict's CSV: 4 decimals)",
            "value": float(np.abs(scores["exported"] - scores["predict"]).max()),
            "unit": "",
        },
        {
            "metric": "images given the same class",
            "value": float((scores["exported"].argmax(1) == scores["predict"].argmax(1)).mean()),
            "unit": "share",
        },
    ]
    return rows + tflite_rows(args, root, run_id, entry, keras_file)


def tflite_rows(args, root: Path, run_id: str, entry, keras_file: Path) -> list[dict]:
    """TFLite files (float32 unless --quick, float16) against the .keras file: size, and on the test split the
    accuracy, the share of the Keras model's classes and the largest probability difference."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    import featx
    from featx.experiments.export_model import export_model
    from featx.sources.decode import load_rgb

    model = featx.load_model(keras_file)
    test = np.flatnonzero(np.asarray(entry.split) == "test")
    images = np.stack([load_rgb(str(Path(entry.manifest.root) / entry.relpaths[i]), model.input_size) for i in test])
    names = np.asarray(entry.class_names, dtype=object)
    truth = names[np.asarray(entry.labels)[test]]
    reference = model.scores(images)
    keras_accuracy = float((np.asarray(model.class_names, dtype=object)[reference.argmax(1)] == truth).mean())
    size = keras_file.stat().st_size
    rows = [
        {"metric": ".keras file (float32)", "value": size / 2**20, "unit": "MiB"},
        {"metric": "test accuracy, Keras float32", "value": keras_accuracy, "unit": "share"},
    ]
    for float16 in (False, True) if not args.quick else (True,):
        kind = "float16" if float16 else "float32"
        path = export_model(
            run_id, root / f"model-{kind}.tflite", format="tflite", float16=float16, cache=root / "cache", log=None
        )
        interpreter = Interpreter(model_path=str(path))
        source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        interpreter.allocate_tensors()
        scores = []
        for image in images:  # one image at a time, as a phone classifies
            interpreter.set_tensor(source["index"], image[None].astype(np.float32))
            interpreter.invoke()
            scores.append(interpreter.get_tensor(target["index"])[0])
        scores = np.asarray(scores, dtype=np.float64)
        accuracy = float((np.asarray(model.class_names, dtype=object)[scores.argmax(1)] == truth).mean())
        rows += [
            {
                "metric": f"TFLite {kind} file",
                "value": path.stat().st_size / 2**20,
                "unit": "MiB",
                "ratio": path.stat().st_size / size,
            },
            {
                "metric": f"test accuracy, TFLite {kind}",
                "value": accuracy,
                "unit": "share",
                "ratio": accuracy / keras_accuracy if keras_accuracy else None,
            },
            {
                "metric": f"test images given the Keras model's class, TFLite {kind}",
                "value": float((scores.argmax(1) == reference.argmax(1)).mean()),
                "unit": "share",
            },
            {
                "metric": f"largest |TFLite {kind} - Keras| probability on test",
                "value": float(np.abs(scores - reference).max()),
                "unit": "",
            },
        ]
    return rows


def table(rows: list[dict]) -> str:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=["metric", "value", "unit", "ratio"])
    return frame.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="")


if __name__ == "__main__":
    sys.exit(main())
