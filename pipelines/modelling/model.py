"""Compatibility re-exports for one release: ``immunostrat.modelling.model`` was split by job.

Training (cross-validation, fitting, :func:`train_responder_model`) is now :mod:`immunostrat.modelling.fitting`,
stratify-time scoring :mod:`immunostrat.modelling.scoring`, the scikit-learn estimator
:mod:`immunostrat.modelling.estimator`, and the feature and training settings :mod:`immunostrat.config.features`
and :mod:`immunostrat.config.run`. Earlier releases documented ``immunostrat.modelling.model.train_responder_model``
and ``.TrainingConfig`` (docs/models.md), so every name this module exported keeps importing from here; new code
imports from the modules above.
"""

from immunostrat.config.features import (
    DEFAULT_FEATURES,
    GROUP_LEVELS,
    LOG2_FLOOR,
    NOT_ASSESSABLE,
    SCORE_COLUMNS,
    FeatureSpec,
    build_feature_frame,
)
from immunostrat.config.run import TrainConfig, TrainingConfig
from immunostrat.modelling.estimator import ResponderEstimator, linear_logit_parts
from immunostrat.modelling.fitting import (
    TrainedModel,
    cv_splits,
    fit_procedure,
    out_of_fold_probability,
    train_responder_model,
)
from immunostrat.modelling.scoring import (
    FeatureUnavailableError,
    LinearLogit,
    assign_groups,
    check_model_inputs,
    contributions,
    missing_feature_sources,
    score_strata,
)

__all__ = [
    "DEFAULT_FEATURES",
    "GROUP_LEVELS",
    "LOG2_FLOOR",
    "NOT_ASSESSABLE",
    "SCORE_COLUMNS",
    "FeatureSpec",
    "FeatureUnavailableError",
    "LinearLogit",
    "ResponderEstimator",
    "TrainConfig",
    "TrainedModel",
    "TrainingConfig",
    "assign_groups",
    "build_feature_frame",
    "check_model_inputs",
    "contributions",
    "cv_splits",
    "fit_procedure",
    "linear_logit_parts",
    "missing_feature_sources",
    "out_of_fold_probability",
    "score_strata",
    "train_responder_model",
]
