"""A fit is one value: `FitSpec` (what is trained) and `Evaluation` (how it is judged).

Both are frozen and built once, at a front door: the command line from its flags (featx.cli), a pipeline step from
its TOML table (featx.experiments.pipelines) or a notebook from keywords; the builders below (`fit_spec`,
`compare_specs`, `tune_specs`, and `FitSpec.like` / `Evaluation.like` for a logged run fitted again) and
Evaluation's fields hold every default and every rule about which option goes with which classifier, so the
command line and a notebook get the same values. fit, compare and tune (featx.experiments) take them as they are;
the runs log stores both whole (`to_dict`, JSON) with `spec_hash`, the content hash that reuse matches on, and
`from_dict` makes the same values again, so any logged fit can be re-run. `Head2ToeSearch` is what tune searches
for Head2Toe (`--select group-lasso`): tune_specs returns it when the transforms ask for that selection.

This module imports nothing heavy: scikit-learn only when a spec is checked or turned into a Pipeline.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field, fields, replace

from featx.errors import FeatxError
from featx.features.options import GROUP_LASSO, TRANSFORM_DEFAULTS, TRANSFORM_KEYS

# The selection metrics, by name: featx.selection.cv.METRICS implements exactly these (a test holds it to
# that); the CLI offers them, the runs log has a val_/test_/cv_ column of each (score_column, cv_column).
METRIC_NAMES = ("accuracy", "balanced_accuracy", "f1_macro", "f1_weighted")
SEARCHES = ("exact", "halving")  # Evaluation.search
FIT_ROWS = ("train", "train+val")  # Evaluation.fit_on
EVAL_SPLITS = ("val", "test")  # the splits a run's model is scored on (the runs log's val_*, test_* columns)
MAX_GRID_POINTS = 10_000  # grid points of one classifier in a comparison: each is at least one fit
HASH_VERSION = 1  # part of every spec_hash: bump when the same hash could stand for other numbers


def score_column(split: str, metric: str) -> str:
    """The runs-log column of a split's score: 'val_accuracy', 'test_f1_macro'."""
    return f"{split}_{metric}"


def cv_column(metric: str, stat: str = "mean") -> str:
    """The runs-log column of a CV statistic ('mean' or 'ci95') of a metric: 'cv_accuracy_mean'."""
    return f"cv_{metric}_{stat}"


def _identity_views() -> tuple[str, ...]:
    from featx.sources.views import IDENTITY

    return (IDENTITY,)


@dataclass(frozen=True, kw_only=True)
class FitSpec:
    """Everything that decides a fit's numbers but the data: the run log's description of a model.

    classifier : a featx.classifiers.CLASSIFIERS name. params : its parameters (any of the estimator's; a
    class_weight is one of them). transforms : keywords of featx.features.options.TRANSFORM_OPTIONS (standardize,
    discretize, pca, ...); those equal to their default are dropped, so equal pipelines are equal specs.
    seed : the classifier's random_state and the transforms'. n_jobs : the classifier's parallelism (where
    it has one); it does not change the numbers, so describe() and spec_hash leave it out.
    views : the augmented views trained on (names, identity "id" first; featx.sources.views.parse_views), whose
    features sit side by side in each image's row. tta : predict by averaging over those views. A spec with
    views beyond the identity, or tta, fits a featx.classifiers.views.ViewEnsemble around the Pipeline.
    Values are kept canonical: sequences as tuples, numpy scalars as Python numbers (to_dict/from_dict round-trip).
    Checked on creation (names, and values against scikit-learn's parameter constraints), before any data
    is read.
    """

    classifier: str = "rf"
    params: dict = field(default_factory=dict)
    transforms: dict = field(default_factory=dict)
    seed: int = 0
    n_jobs: int | None = -1
    views: tuple = field(default_factory=_identity_views)
    tta: bool = False

    def __post_init__(self):
        from featx.sources.views import IDENTITY

        # copies: a caller's dict changed later must not change a spec already made
        object.__setattr__(self, "params", {k: _canonical(v) for k, v in dict(self.params or {}).items()})
        transforms = {k: _canonical(v) for k, v in dict(self.transforms or {}).items()}
        object.__setattr__(
            self,
            "transforms",
            {k: v for k, v in transforms.items() if k not in TRANSFORM_DEFAULTS or not _same(v, TRANSFORM_DEFAULTS[k])},
        )
        object.__setattr__(self, "views", tuple(self.views))
        object.__setattr__(self, "tta", bool(self.tta))
        object.__setattr__(self, "seed", _canonical(self.seed))
        if not self.views or self.views[0] != IDENTITY or len(set(self.views)) != len(self.views):
            raise FeatxError(
                f"views {', '.join(self.views) or '(none)'} must name each view once, the identity view "
                f"'{IDENTITY}' first; build them with featx.sources.views.parse_views"
            )
        unknown = sorted(set(self.transforms) - set(TRANSFORM_KEYS))
        if unknown:
            raise FeatxError(
                f"unknown transform option(s) {', '.join(unknown)}; choose from {', '.join(TRANSFORM_KEYS)}"
            )
        self.pipeline()

    @property
    def plain(self) -> bool:
        """No views beyond the identity and no tta: a fit as featx made before views existed."""
        return self.views == _identity_views() and not self.tta

    def pipeline(self):
        """A new, unfitted Pipeline (the transforms, then the classifier as step "clf"); wrapped in a
        ViewEnsemble of `views` and `tta` unless the spec is plain."""
        from featx.classifiers import classifier_params, make_pipeline
        from featx.classifiers.views import ViewEnsemble
        from featx.features.transforms import build_feature_pipeline

        steps = build_feature_pipeline(seed=self.seed, **self.transforms)
        pipeline = make_pipeline(self.classifier, self.params, steps, self.seed, self.n_jobs)
        if not self.plain and {"views", "tta"} <= classifier_params(self.classifier):  # the tail streams its views
            return pipeline.set_params(clf__views=self.views, clf__tta=self.tta)
        return pipeline if self.plain else ViewEnsemble(pipeline, views=self.views, tta=self.tta)

    def transforms_label(self) -> str:
        """A short label, e.g. 'standardize+fne(-0.25,0.15)+pca(50)'; 'none' when there are none."""
        from featx.features.transforms import build_feature_pipeline

        labels = {
            "fne": lambda s: f"fne({s.low},{s.high})",
            "kbins": lambda s: f"kbins({s.n_bins})",
            "pca": lambda s: f"pca({s.n_components})",
            "select": lambda s: f"group-lasso({s.fraction:g},{s.penalty:g})",
        }
        steps = build_feature_pipeline(seed=self.seed, **self.transforms)
        return "+".join(labels.get(name, lambda s, name=name: name)(step) for name, step in steps) or "none"

    def params_json(self) -> str:
        """The parameters as sorted JSON (tuples become lists): the run log's `params` column."""
        return json.dumps(self.params, sort_keys=True, default=str)

    def views_label(self) -> str:
        """The views as the runs log's `views` column: a comma list, "id" for a plain spec."""
        return ",".join(self.views)

    def to_dict(self) -> dict:
        """JSON-ready and stable, the exact inverse of from_dict: tuples as lists, a dict with keys other than
        strings as {"__items__": [[key, value], ...]}; views and tta only where the spec is not plain."""
        views = {} if self.plain else {"views": list(self.views), "tta": self.tta}
        return {
            "classifier": self.classifier,
            "params": _encode(self.params),
            "transforms": _encode(self.transforms),
            "seed": self.seed,
            "n_jobs": self.n_jobs,
            **views,
        }

    @classmethod
    def from_dict(cls, data: dict) -> FitSpec:
        """The FitSpec whose to_dict() is `data` (missing keys take their defaults); checked as on creation."""
        data = _known(cls, data, "fit spec")
        for key in ("params", "transforms"):
            if key in data:
                if not isinstance(data[key], dict):
                    raise FeatxError(f"fit spec {key} must be a table of key = value, not {data[key]!r}")
                data[key] = _decode(data[key])
        return cls(**data)

    def like(
        self,
        *,
        classifier: str | None = None,
        params: dict | None = None,
        seed: int | None = None,
        n_jobs: int | None = None,
        class_weight: str | None = None,
        views=None,
        view_seed: int = 0,
        tta: bool | None = None,
        transforms: dict | None = None,
    ) -> FitSpec:
        """This spec (a logged run's) with the options given in place of its own (None: keep this spec's), as
        `featx fit --like RUN_ID` refits a run: another classifier drops this spec's params; params given are added
        to those kept; transforms given replace this spec's of the same name; views given (a spec string or names,
        rand views seeded by view_seed) replace its views."""
        name = classifier or self.classifier
        kept = self.params if name == self.classifier else {}
        return fit_spec(
            name,
            params={**kept, **(params or {})},
            seed=self.seed if seed is None else seed,
            n_jobs=self.n_jobs if n_jobs is None else n_jobs,
            class_weight=class_weight,
            views=self.views if views is None else views,
            view_seed=view_seed,
            tta=self.tta if tta is None else tta,
            **{**self.transforms, **(transforms or {})},
        )

    def describe(self) -> str:
        """One stable line, e.g. 'rf {"n_estimators": 100} transforms=standardize seed=0' (then views=... tta=...
        where the spec is not plain)."""
        views = "" if self.plain else f" views={self.views_label()} tta={str(self.tta).lower()}"
        return f"{self.classifier} {self.params_json()} transforms={self.transforms_label()} seed={self.seed}{views}"


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """How fits are judged: the protocol their selection score comes from, the metric they are ranked by.

    cv : K for repeated stratified K-fold over the train+val rows (cv_repeats times, folds drawn from `seed`,
        the same folds for every fit judged together); None = the one fixed train -> val split.
    metric : the ranking metric, one of METRIC_NAMES; None = chosen from the class balance of the train+val rows
        (featx.selection.cv.default_metric). Every metric is logged whichever ranks.
    search : "exact" or "halving": how compare spends its folds ("exact" scores every row on every fold, "halving",
        which needs cv, by successive halving over the folds), or how tune (fit_on "train+val") spends training
        epochs (featx.selection.halving: successive halving with epochs as the budget, on val or CV). The ranking rule itself is one (featx.runs.ranking): the CV mean where there is
        one, else val, never test.
    fit_on : the rows the logged model is fitted on: "train" (fit, compare; it is then scored on val and test) or
        "train+val" (tune's refit of the selected point, scored on test once).
    """

    cv: int | None = None
    cv_repeats: int = 1
    metric: str | None = None
    seed: int = 0
    search: str = "exact"
    fit_on: str = "train"

    def __post_init__(self):
        object.__setattr__(self, "cv", None if self.cv is None else _canonical(self.cv))
        object.__setattr__(self, "cv_repeats", _canonical(self.cv_repeats))
        object.__setattr__(self, "seed", _canonical(self.seed))
        if self.metric is not None and self.metric not in METRIC_NAMES:
            raise FeatxError(f"unknown metric '{self.metric}'; choose one of {', '.join(METRIC_NAMES)}")
        if self.search not in SEARCHES:
            raise FeatxError(f"unknown --search '{self.search}'; choose one of {', '.join(SEARCHES)}")
        if self.search == "halving" and not self.cv and self.fit_on == "train":  # compare's budget is folds
            raise FeatxError(
                "--search halving spends folds as its budget and needs cross-validation; add --cv K (e.g. --cv 5)"
            )
        if self.fit_on not in FIT_ROWS:
            raise FeatxError(f"unknown fit_on '{self.fit_on}'; choose one of {', '.join(FIT_ROWS)}")

    def like(self, *, cv: int | None = None, cv_repeats: int | None = None, seed: int | None = None) -> Evaluation:
        """This evaluation (a logged run's) with the folds given in place of its own (None: keep its own), for a fit:
        its metric kept, fitted on train (a tune refit's train+val and search are tune's own)."""
        return Evaluation(
            cv=self.cv if cv is None else cv,
            cv_repeats=self.cv_repeats if cv_repeats is None else cv_repeats,
            metric=self.metric,
            seed=self.seed if seed is None else seed,
        )

    @property
    def protocol(self) -> str:
        """The runs log's `cv` label of the protocol: 'cv5x2', or 'val' for the fixed split."""
        return f"cv{self.cv}x{self.cv_repeats}" if self.cv else "val"

    def to_dict(self) -> dict:
        """JSON-ready, every field: the exact inverse of from_dict."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> Evaluation:
        return cls(**_known(cls, data, "evaluation"))

    def numbers(self) -> dict:
        """What of the evaluation changes logged numbers (spec_hash): the folds (cv, repeats and their seed,
        only with cv) and the rows the model is fitted on; not the metric (every one is logged) nor the search
        (a logged row was scored on every fold either way)."""
        folds = {"cv": self.cv, "cv_repeats": self.cv_repeats, "seed": self.seed} if self.cv else {"cv": None}
        return {**folds, "fit_on": self.fit_on}


def spec_hash(spec: FitSpec, evaluation: Evaluation | None = None) -> str:
    """16 hex digits of a sha256 over the canonical JSON of what decides a run's numbers besides its data: the
    spec without n_jobs (views and tta always present) and the evaluation's numbers(). Equal for a pipeline
    step and the `featx fit` that make the same fit, whatever defaults either front door spelled out."""
    evaluation = evaluation or Evaluation()
    body = {key: value for key, value in spec.to_dict().items() if key != "n_jobs"}
    body.update(views=list(spec.views), tta=spec.tta)
    text = json.dumps(
        {"version": HASH_VERSION, "spec": body, "evaluation": evaluation.numbers()},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- the builders every front door uses (the only place the defaults live)


def fit_spec(
    clf: str = "rf",
    *,
    params: dict | None = None,
    seed: int = 0,
    n_jobs: int | None = -1,
    class_weight: str | None = None,
    views=None,
    view_seed: int = 0,
    tta: bool = False,
    **transforms,
) -> FitSpec:
    """The FitSpec of one fit from the user's keywords: class_weight joins params (refused for a classifier without
    it), views is a spec string ("flip", "d4,crops:5": view_names) or view names."""
    _check_augmentation(params or {}, [clf])
    return FitSpec(
        classifier=clf,
        params=with_class_weight(params or {}, [clf], class_weight),
        transforms=transforms,
        seed=seed,
        n_jobs=n_jobs,
        views=view_names(views, view_seed, tta),
        tta=tta,
    )


def fit_specs(
    classifiers, grid: dict, params: dict, transforms: dict, seed: int, n_jobs, *, views=None, tta: bool = False
) -> list[FitSpec]:
    """One FitSpec per classifier and per point of the grid part it accepts (fixed params likewise); all with
    `views` (names, or None: the identity) and `tta`. classifiers : names or one comma string."""
    names = classifier_names(classifiers)
    from featx.classifiers import classifier_params

    accepted = {name: classifier_params(name) for name in names}
    _check_augmentation({**grid, **params}, names)
    unused = sorted(k for k in [*grid, *params] if not any(k in keys for keys in accepted.values()))
    if unused:
        raise FeatxError(
            f"parameter(s) {', '.join(unused)} belong to none of the classifiers {', '.join(names)}; "
            "check the spelling against the scikit-learn estimator's parameters"
        )
    for name in names:
        points = math.prod(len(values) for key, values in grid.items() if key in accepted[name])
        if points > MAX_GRID_POINTS:
            raise FeatxError(
                f"the grid has {points:,} points for classifier {name}; featx fits at most {MAX_GRID_POINTS:,} "
                "per classifier (each is at least one fit): sweep fewer values"
            )
    specs = []
    for name in names:
        base = FitSpec(
            classifier=name,
            params={k: v for k, v in params.items() if k in accepted[name]},
            transforms=transforms,
            seed=seed,
            n_jobs=n_jobs,
            views=views or _identity_views(),
            tta=tta,
        )
        keys = [k for k in grid if k in accepted[name]]
        specs += [
            replace(base, params={**base.params, **dict(zip(keys, values))}) if keys else base
            for values in itertools.product(*(grid[k] for k in keys))
        ]
    return specs


def compare_specs(
    classifiers=("rf",),
    *,
    grid: dict | None = None,
    params: dict | None = None,
    seed: int = 0,
    n_jobs: int | None = 1,
    class_weight: str | None = None,
    views=None,
    view_seed: int = 0,
    tta: bool = False,
    **transforms,
) -> list[FitSpec]:
    """The FitSpecs of a comparison from the user's keywords (those of featx.compare): fit_specs of the classifiers
    and grid, class_weight given to every classifier (each must have it)."""
    names = classifier_names(classifiers)
    return fit_specs(
        names,
        grid or {},
        with_class_weight(params or {}, names, class_weight),
        transforms,
        seed,
        n_jobs,
        views=view_names(views, view_seed, tta),
        tta=tta,
    )


def tune_specs(
    classifiers=("logreg",),
    *,
    params: dict | None = None,
    seed: int = 0,
    class_weight: str | None = None,
    views=None,
    view_seed: int = 0,
    tta: bool = False,
    **transforms,
) -> list[FitSpec] | Head2ToeSearch:
    """What tune searches, from the user's keywords: one FitSpec per classifier tuned, each with every fixed
    parameter (the searched ones are added per point) and n_jobs 1 (tune spreads its selection splits over the cores
    instead); or, when the transforms select features by group lasso (select="group-lasso" or "group-lasso:F"),
    the Head2ToeSearch of Head2Toe's recipe (its logistic-regression head only)."""
    names = classifier_names(classifiers)
    if str(transforms.get("select") or "").startswith(GROUP_LASSO):
        if names != ["logreg"]:
            raise FeatxError(
                "tune --select group-lasso tunes Head2Toe's logistic-regression head; drop --clf "
                "(fit takes other classifiers with --select group-lasso:F)"
            )
        return Head2ToeSearch.from_keywords(
            params=with_class_weight(params or {}, names, class_weight),
            seed=seed,
            views=view_names(views, view_seed, tta),
            tta=tta,
            **transforms,
        )
    params = with_class_weight(params or {}, names, class_weight)  # refused for every classifier without it, at once
    return [
        fit_spec(clf, params=params, seed=seed, n_jobs=1, views=views, view_seed=view_seed, tta=tta, **transforms)
        for clf in names
    ]


@dataclass(frozen=True, kw_only=True)
class Head2ToeSearch:
    """What `tune --select group-lasso` searches (featx.experiments.tune_head2toe): Head2Toe's recipe.

    select : "group-lasso" searches the kept fraction F over `fractions` (None: the default grid); "group-lasso:F"
        fixes it. penalties : group-lasso penalties (fractions of the smallest one that keeps no feature; None: the
        default grid). Cs : the logistic-regression head's C path (None: the default grid). params : the head's
        fixed LogisticRegression parameters. normalize : "layer" (Head2Toe's per-layer L2) or None; standardize :
        a StandardScaler after it. seed, views, tta : as FitSpec's.
    """

    select: str = GROUP_LASSO
    penalties: tuple | None = None
    fractions: tuple | None = None
    Cs: tuple | None = None
    params: dict = field(default_factory=dict)
    standardize: bool = False
    normalize: str | None = "layer"
    seed: int = 0
    views: tuple = field(default_factory=_identity_views)
    tta: bool = False

    @classmethod
    def from_keywords(cls, *, params: dict, seed: int, views: tuple, tta: bool, **transforms) -> Head2ToeSearch:
        """From tune's keywords: a select_penalty given fixes the penalty, a C given in params fixes C; Head2Toe's
        per-layer normalization unless normalize says otherwise; other transforms are not part of the recipe."""
        params = dict(params)
        other = sorted(set(transforms) - {"select", "select_penalty", "standardize", "normalize"})
        if other:
            raise FeatxError(
                f"tune --select group-lasso searches Head2Toe's recipe (normalize, standardize, select); drop "
                f"{', '.join('--' + o.replace('_', '-') for o in other)} or fit it with `featx fit --select group-lasso:F`"
            )
        return cls(
            select=str(transforms["select"]),
            penalties=(float(transforms["select_penalty"]),) if "select_penalty" in transforms else None,
            Cs=(float(params.pop("C")),) if "C" in params else None,
            params=params,
            standardize=bool(transforms.get("standardize")),
            normalize=transforms.get("normalize", "layer"),
            seed=seed,
            views=tuple(views),
            tta=tta,
        )


def swept_params(specs: list[FitSpec]) -> dict:
    """{param: [values]} of the parameters whose value differs between the specs of one classifier: a comparison's
    grid, read back from its specs (in the order the specs name them), for labelling each row's model."""
    swept: dict = {}
    for name in dict.fromkeys(spec.classifier for spec in specs):
        mine = [spec.params for spec in specs if spec.classifier == name]
        for key in dict.fromkeys(k for params in mine for k in params):
            values = list(dict.fromkeys(repr(params.get(key)) for params in mine))
            if len(values) > 1:
                swept.setdefault(key, [])
                swept[key] += [params.get(key) for params in mine if params.get(key) not in swept[key]]
    return swept


def baseline_specs(specs: list[FitSpec]) -> list[FitSpec]:
    """The baselines (majority, stratified) judged beside `specs` on the same protocol: the first spec's seed, n_jobs,
    views and tta, no parameters or transforms; none of a baseline that `specs` already holds."""
    from featx.classifiers import BASELINES

    names = {spec.classifier for spec in specs}
    return [replace(specs[0], classifier=b, params={}, transforms={}) for b in BASELINES if b not in names]


AUGMENTATIONS = {"mixup": ("dense", "tail"), "feature_noise": ("dense",)}  # train-time augmentation -> who does it


def _check_augmentation(params: dict, names: list[str]) -> None:
    """One line when a train-time augmentation is asked of classifiers none of which trains by minibatches with it."""
    for param, owners in AUGMENTATIONS.items():
        if param in params and not set(owners) & set(names):
            flag = "--" + param.replace("_", "-")
            raise FeatxError(
                f"{flag} augments the dense head's training and --clf {','.join(names)} has no dense head; "
                f"add --clf dense or drop {flag}"
            )


def classifier_names(classifiers) -> list[str]:
    """A comma string or a sequence of classifier names, as a list."""
    return [c.strip() for c in classifiers.split(",")] if isinstance(classifiers, str) else list(classifiers)


def view_names(views=None, view_seed: int = 0, tta: bool = False) -> tuple[str, ...]:
    """The view names of `views`: a spec string such as "flip" or "d4,crops:5" (parse_views, rand views seeded
    by view_seed as at extract), a sequence of names, or None (the identity view only). tta needs more views."""
    from featx.sources.views import parse_views

    names = parse_views(views, view_seed) if views is None or isinstance(views, str) else tuple(views)
    if tta and len(names) < 2:
        raise FeatxError(
            "--tta averages predictions over augmented views, but only the identity view is given; "
            "pass --views SPEC (e.g. flip) as at `featx extract`, or drop --tta"
        )
    return names


def with_class_weight(params: dict, classifiers, class_weight: str | None) -> dict:
    """params plus class_weight, refused (one line) when a classifier has no such parameter."""
    if class_weight is None:
        return params
    from featx.classifiers import classifier_params

    lacking = [c for c in classifiers if "class_weight" not in classifier_params(c)]
    if lacking:
        raise FeatxError(
            f"--class-weight {class_weight}: classifier(s) {', '.join(lacking)} have no class_weight; "
            "drop them from --clf or drop --class-weight"
        )
    return {**params, "class_weight": class_weight}


def logged_spec(row, *, required: bool = True) -> tuple[FitSpec, Evaluation] | None:
    """The FitSpec and Evaluation a runs-log row was fitted and judged with (its `spec` and `evaluation` columns:
    to_dict() as JSON text, or as dicts). A run logged before featx kept them: one line saying so, or None where not
    `required`."""

    def value(name):
        text = row.get(name) if hasattr(row, "get") else None
        if isinstance(text, dict):
            return text
        if not isinstance(text, str) or not text:
            if not required:
                return None
            raise FeatxError(
                f"run {row['run_id']} was logged before featx kept a run's spec and evaluation, so it "
                "cannot be re-run from the log; fit it again with the flags `featx report` shows for it"
            )
        try:
            return json.loads(text)
        except ValueError:
            raise FeatxError(
                f"run {row['run_id']} has a damaged {name} in the runs log (not JSON); fit it again with its flags"
            ) from None

    spec, evaluation = value("spec"), value("evaluation")
    if spec is None or evaluation is None:
        return None
    return FitSpec.from_dict(spec), Evaluation.from_dict(evaluation)


# --- canonical values and their JSON encoding

_ITEMS = "__items__"  # a dict whose keys are not all strings, as [[key, value], ...]


def _canonical(value):
    """Sequences as tuples, numpy scalars and arrays as Python values, dicts copied: one form per value."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy scalar or array
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return tuple(_canonical(v) for v in value)
    if isinstance(value, dict):
        return {_canonical(k): _canonical(v) for k, v in value.items()}
    return value


def _same(a, b) -> bool:
    return type(a) is type(b) and a == b


def _encode(value):
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and _ITEMS not in value:
            return {k: _encode(value[k]) for k in sorted(value)}
        return {_ITEMS: [[_encode(k), _encode(v)] for k, v in value.items()]}
    return value


def _decode(value):
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)
    if isinstance(value, dict):
        if set(value) == {_ITEMS}:
            return {_decode(k): _decode(v) for k, v in value[_ITEMS]}
        return {k: _decode(v) for k, v in value.items()}
    return value


def _known(cls, data, what: str) -> dict:
    if not isinstance(data, dict):
        raise FeatxError(f"a logged {what} must be a JSON object, not {type(data).__name__}")
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise FeatxError(
            f"{what} has unknown key(s) {', '.join(unknown)}; this featx knows {', '.join(names)} "
            "(was it written by a newer featx?)"
        )
    return dict(data)
