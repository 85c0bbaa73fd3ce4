from statestore.core.document import apply_events
from statestore.cli.main import changes, describe
from tests.strategies import field_updated, object_replaced


def test_changes_name_added_changed_and_removed_fields():
    assert changes(None, {"a": 1}) == ["+ a = 1"]
    assert changes({"a": 1, "b": 2}, {"a": 3, "c": "x"}) == ['+ c = "x"', "~ a = 3", "- b"]
    assert changes({"a": 1}, {"a": 1}) == []


def test_describe_shows_each_value_with_the_stamp_that_wrote_it():
    document = apply_events(None, [object_replaced({"a": 1}), field_updated("b", 2, seq=2, hlc=(5, 0))])
    view = describe(document)
    assert view["state"] == {"a": 1, "b": 2}
    assert view["fields"]["b"]["written"]["seq"] == 2 and view["replaced"]["seq"] == 1
    assert view["producers"]["p1"]["processed_upto"] == 2
