"""Prefect's flow-run heartbeats around a flow the command line calls: off by default, the team's value when set."""

from __future__ import annotations

from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings

from immunostrat.flows.runner import flow_heartbeats


def _frequency() -> int | None:
    return get_current_settings().flows.heartbeat_frequency


def test_heartbeats_are_off_inside_and_prefects_default_is_back_after() -> None:
    assert _frequency() == 180  # Prefect 3.8's default, with nothing configured (the test session sets none)
    with flow_heartbeats():
        assert _frequency() is None  # None: the flow engine starts no heartbeat thread
    assert _frequency() == 180


def test_a_frequency_the_team_set_is_kept() -> None:
    # As if PREFECT_FLOWS_HEARTBEAT_FREQUENCY=60 were exported (or set in the Prefect profile).
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 60}), flow_heartbeats():
        assert _frequency() == 60


def test_every_other_setting_is_the_same_inside() -> None:
    outside = get_current_settings()
    with temporary_settings({"api.url": "http://127.0.0.1:4999/api"}):
        with flow_heartbeats():
            inside = get_current_settings()
        # Only the flows' heartbeat frequency differs (None inside, 180 outside); the API URL set around it holds.
        assert inside.api.url == "http://127.0.0.1:4999/api"
        assert inside.model_dump(exclude={"flows"}) == get_current_settings().model_dump(exclude={"flows"})
        assert inside.flows.model_dump(exclude={"heartbeat_frequency"}) == outside.flows.model_dump(
            exclude={"heartbeat_frequency"}
        )
