"""The model of one run: resolved and verified once at launch (:mod:`immunostrat.modelling.registry`), handed to the
phases explicitly, and scored from the card's coefficient form unless the card has none."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from immunostrat.config.features import FeatureSpec
from immunostrat.modelling.registry import CardModel, LoadedModel, ModelFile

__all__ = ["SCORED_FROM_COEFFICIENTS", "SCORED_FROM_MODEL_FILE", "ModelHandle"]

#: :attr:`ModelHandle.scored_from` values (run.json ``model.scored_from``).
SCORED_FROM_COEFFICIENTS = "card coefficients"
SCORED_FROM_MODEL_FILE = "model file"

_log = logging.getLogger(__name__)


class ModelHandle:
    """The model of one run: resolved and verified once at launch, handed to the phases explicitly.

    Scoring and the drift gate use :meth:`for_scoring`: the card's coefficient form (checksummed, verified at
    launch with the skops file's checksum), so a run never imports skops, scikit-learn or scipy. Only when the card
    has no coefficient form (see :attr:`ModelFile.no_form_reason`) is the skops file deserialised: that starts in
    a background thread at launch, overlapping with reading and harmonising, and is logged and recorded in
    run.json (``model.scored_from``). Pickling a handle (a Dask worker in another process) carries only the
    verified file (skops bytes, their sha256, the card and its coefficient form), never a fitted estimator: a
    worker scores from the same coefficient form, or checks the checksum again and deserialises with the same
    trusted-type list.
    """

    def __init__(self, file: ModelFile) -> None:
        self.file = file
        self._lock = threading.Lock()
        self._future: Future[LoadedModel] | None = None
        self._loaded: LoadedModel | None = None

    @property
    def model_id(self) -> str:
        return self.file.model_id

    @property
    def sha256(self) -> str:
        return self.file.sha256

    @property
    def features(self) -> tuple[FeatureSpec, ...]:
        return self.file.features

    @property
    def default_cutoffs(self) -> dict[str, float]:
        return self.file.default_cutoffs

    @property
    def scored_from(self) -> str:
        """:data:`SCORED_FROM_COEFFICIENTS`, or :data:`SCORED_FROM_MODEL_FILE` when the card has no coefficient form."""
        return SCORED_FROM_COEFFICIENTS if self.file.coefficient_form is not None else SCORED_FROM_MODEL_FILE

    def start_loading(self) -> ModelHandle:
        """When scoring needs the skops file (no coefficient form), deserialise it in a background thread (returns
        at once); otherwise nothing is loaded."""
        if self.file.coefficient_form is not None:
            return self
        _log.warning(
            "model %s: %s; scoring from the deserialised skops file (imports scikit-learn)",
            self.model_id,
            self.file.no_form_reason,
        )
        with self._lock:
            if self._future is None and self._loaded is None:
                pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load")
                self._future = pool.submit(self.file.deserialise)
                pool.shutdown(wait=False)  # leaving a `with` block would wait for the load and undo the overlap
        return self

    def for_scoring(self) -> CardModel | LoadedModel:
        """The model scoring and the drift gate use: the card's coefficient form, else the deserialised model."""
        if self.file.coefficient_form is not None:
            return self.file.card_model()
        return self.loaded()

    def loaded(self) -> LoadedModel:
        """The deserialised model (waits for a background load; raises ModelIntegrityError if it was refused)."""
        with self._lock:
            if self._loaded is None:
                self._loaded = self._future.result() if self._future is not None else self.file.deserialise()
                self._future = None
            return self._loaded

    def __getstate__(self) -> dict[str, Any]:
        return {"file": self.file}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["file"])  # type: ignore[misc]
