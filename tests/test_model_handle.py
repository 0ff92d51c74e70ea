"""The run's model: resolved and verified once at launch, shipped to other processes as checksummed skops bytes."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from immunostrat.modelling.handle import ModelHandle
from immunostrat.modelling.registry import ModelIntegrityError, UnknownModelError, resolve_model_file


def test_a_pickled_handle_carries_the_verified_bytes_never_an_estimator() -> None:
    handle = ModelHandle(resolve_model_file("champion")).start_loading()
    loaded = handle.loaded()
    assert set(handle.__getstate__()) == {"file"}  # no fitted estimator travels: the skops archive's bytes only
    received = pickle.loads(pickle.dumps(handle))
    assert received._loaded is None
    assert received.sha256 == handle.sha256 and received.file.data == handle.file.data
    again = received.loaded()  # deserialised on arrival, after the checksum is checked again
    assert again.model_id == loaded.model_id and again is not loaded
    assert list(again.estimator.predict_proba([[0.0] * len(again.features)])[0]) == pytest.approx(
        list(loaded.estimator.predict_proba([[0.0] * len(loaded.features)])[0]), abs=0
    )  # the same bytes give the same model, bit for bit


def test_bytes_changed_on_the_way_are_refused() -> None:
    file = resolve_model_file("champion")
    tampered = dataclasses.replace(file, data=file.data[:-1] + bytes([file.data[-1] ^ 1]))
    with pytest.raises(ModelIntegrityError, match="no longer match their sha256"):
        pickle.loads(pickle.dumps(ModelHandle(tampered))).loaded()


def test_an_unknown_model_is_refused_at_resolution_without_loading_skops() -> None:
    with pytest.raises(UnknownModelError):
        resolve_model_file("no-such-model")
