import pytest

from statestore.core.errors import InvalidStateIdError, InvalidStateTypeError
from statestore.core.paths import MAX_ID_LENGTH, StateType, build_state_store_path, object_key, state_key


@pytest.mark.parametrize(
    ("value", "expected"),
    [("workflows", True), ("credentials", True), ("WORKFLOWS", False), ("", False), ("invalid", False),
     (None, False), (StateType.WORKFLOWS, False)],
)  # fmt: skip
def test_is_member_is_exact_and_case_sensitive(value, expected):
    assert StateType.is_member(value) is expected


def test_path_matches_the_reference_layout():
    assert (
        build_state_store_path("workflow-123", StateType.WORKFLOWS)
        == "./local/tmp/persistent-artifacts/apps/default/workflows/workflow-123/config.json"
    )
    assert build_state_store_path("db-cred-456", "credentials").endswith("/credentials/db-cred-456/config.json")


def test_path_uses_app_name_and_root_from_the_environment(monkeypatch):
    from statestore.core import settings

    monkeypatch.setenv("STATESTORE_APP_NAME", "appName")
    monkeypatch.setenv("STATESTORE_TMP_ROOT", "/srv/tmp/")
    settings.get_settings.cache_clear()
    try:
        assert (
            build_state_store_path("workflow-123", StateType.WORKFLOWS)
            == "/srv/tmp/persistent-artifacts/apps/appName/workflows/workflow-123/config.json"
        )
    finally:
        settings.get_settings.cache_clear()


@pytest.mark.parametrize(
    "bad_id",
    ["", "a" * (MAX_ID_LENGTH + 1), "a/b", "a\\b", "..", "a..b", ".hidden", "a\x00b", "a\nb", "tab\there",
     "space here", "ünicode", "a:b", "~root", None, 123, b"bytes", ["list"]],
)  # fmt: skip
def test_unsafe_ids_are_rejected_as_value_errors(bad_id):
    with pytest.raises(InvalidStateIdError) as info:
        build_state_store_path(bad_id, StateType.WORKFLOWS)
    assert isinstance(info.value, ValueError)
    assert "state id" in str(info.value)


@pytest.mark.parametrize("good_id", ["workflow-123", "db-cred-456", "my_workflow.v2", "a" * MAX_ID_LENGTH, "0"])
def test_safe_ids_are_accepted(good_id):
    assert state_key(good_id, StateType.WORKFLOWS) == f"workflows/{good_id}"


@pytest.mark.parametrize("bad_type", ["WORKFLOWS", "invalid", "", None, 1])
def test_unknown_state_types_are_rejected(bad_type):
    with pytest.raises(InvalidStateTypeError, match="not a StateType"):
        object_key("workflow-123", bad_type)


def test_state_keys_parse_back():
    from statestore.core.paths import parse_state_key

    assert parse_state_key(state_key("wf-1.v2", "credentials")) == ("wf-1.v2", StateType.CREDENTIALS, "default")
    assert parse_state_key(state_key("wf-1", "workflows", app="orders")) == ("wf-1", StateType.WORKFLOWS, "orders")


def test_apps_are_separate_namespaces_and_the_default_app_keeps_the_old_key():
    assert state_key("wf-1", StateType.WORKFLOWS, app="default") == "workflows/wf-1"
    assert state_key("wf-1", StateType.WORKFLOWS, app="orders") == "orders/workflows/wf-1"
    # An app may be named like a state type: the number of segments still tells them apart.
    assert state_key("wf-1", StateType.WORKFLOWS, app="workflows") == "workflows/workflows/wf-1"
    assert object_key("wf-1", "workflows", app="orders") == "persistent-artifacts/apps/orders/workflows/wf-1/config.json"


@pytest.fixture
def environment(monkeypatch):
    from statestore.core import settings

    for name in ("STATESTORE_APP_NAME", "APP_ID"):
        monkeypatch.delenv(name, raising=False)
    settings.get_settings.cache_clear()
    yield monkeypatch
    settings.get_settings.cache_clear()


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, "default"), ({"APP_ID": "orders-app"}, "orders-app"),
     ({"APP_ID": "orders-app", "STATESTORE_APP_NAME": "orders"}, "orders")],
)  # fmt: skip
def test_the_app_name_comes_from_the_setting_then_the_dapr_app_id(environment, env, expected):
    from statestore.core.paths import caller_app_name

    for name, value in env.items():
        environment.setenv(name, value)
    assert caller_app_name() == expected
    assert state_key("wf-1", StateType.WORKFLOWS).startswith("workflows/" if expected == "default" else f"{expected}/")
    assert f"/apps/{expected}/workflows/wf-1/" in build_state_store_path("wf-1", StateType.WORKFLOWS)


def test_an_unsafe_app_name_is_a_clear_error(environment):
    from statestore.core.errors import InvalidAppNameError

    environment.setenv("STATESTORE_APP_NAME", "../other")
    with pytest.raises(InvalidAppNameError, match="app name '../other'"):
        build_state_store_path("wf-1", StateType.WORKFLOWS)
