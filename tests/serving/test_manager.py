"""serving.manager with a fake loader: version policies, availability-first swaps, in-flight holds."""

from __future__ import annotations

import threading

import grpc
import pytest
from tensorflow_serving.config import model_server_config_pb2

from serving.manager import AVAILABLE, END, UNLOADING, ModelManager, wanted_versions
from serving.status import ServingError


class FakeServable:
    def __init__(self, name, version, path):
        self.version = version


def broken_loader(broken: set[int]):
    def load(name, version, path):
        if version in broken:
            raise ValueError(f"corrupt SavedModel in {path}")
        return FakeServable(name, version, path)
    return load


def config(base, **policy):
    model = model_server_config_pb2.ModelConfig(name="m", base_path=str(base))
    for key, value in policy.items():
        if key == "specific":
            model.model_version_policy.specific.versions.extend(value)
        elif key == "latest":
            model.model_version_policy.latest.num_versions = value
        elif key == "all":
            model.model_version_policy.all.SetInParent()
    return model


def make_versions(base, *numbers):
    for number in numbers:
        (base / str(number)).mkdir(parents=True, exist_ok=True)


@pytest.mark.parametrize("policy, expected", [
    ({}, {5}), ({"latest": 2}, {3, 5}), ({"all": True}, {1, 3, 5}), ({"specific": [1, 4]}, {1}),
])
def test_version_policies_pick_like_tf_serving(policy, expected):
    assert wanted_versions(config("/", **policy), [1, 3, 5]) == expected


def test_requests_go_to_the_latest_available_version_and_named_ones(tmp_path):
    make_versions(tmp_path, 1, 2, "not-a-version")
    manager = ModelManager([config(tmp_path, all=True)], loader=broken_loader(set()))
    with manager.acquire("m") as servable:
        assert servable.version == 2
    with manager.acquire("m", version=1) as servable:
        assert servable.version == 1
    with pytest.raises(ServingError) as raised:
        with manager.acquire("m", version=3):
            pass
    assert raised.value.code == grpc.StatusCode.NOT_FOUND


def test_an_old_version_is_released_only_after_its_in_flight_requests(tmp_path):
    make_versions(tmp_path, 1)
    manager = ModelManager([config(tmp_path)], loader=broken_loader(set()))
    held = manager.acquire("m")
    servable = held.__enter__()  # a request in flight on version 1
    make_versions(tmp_path, 2)
    manager.poll()

    with manager.acquire("m") as newest:
        assert newest.version == 2  # new requests go to version 2 at once
    (old,) = [v for v in manager.status("m") if v.number == 1]
    assert old.state == UNLOADING and servable.version == 1

    released = threading.Event()
    threading.Thread(target=lambda: (held.__exit__(None, None, None), released.set())).start()
    released.wait(10)
    for _ in range(100):
        if [v.state for v in manager.status("m") if v.number == 1] == [END]:
            break
        threading.Event().wait(0.05)
    assert {v.number: v.state for v in manager.status("m")} == {1: END, 2: AVAILABLE}


def test_a_broken_newest_version_keeps_the_old_one_serving_until_it_is_fixed(tmp_path):
    make_versions(tmp_path, 1, 2)
    broken = {2}
    manager = ModelManager([config(tmp_path)], loader=lambda *args: broken_loader(broken)(*args))
    status = {v.number: v for v in manager.status("m")}
    assert status[2].state == END and "corrupt SavedModel" in status[2].error and status[2].error_code == 2
    with manager.acquire("m") as servable:
        assert servable.version == 1

    manager.poll()  # unchanged folder: not retried, version 1 stays
    assert {v.number: v.state for v in manager.status("m")} == {1: AVAILABLE, 2: END}

    broken.clear()
    (tmp_path / "2" / "saved_model.pb").write_bytes(b"fixed")  # the folder changes: retried
    manager.poll()
    with manager.acquire("m") as servable:
        assert servable.version == 2


def test_reload_drops_models_and_rejects_duplicate_names(tmp_path):
    make_versions(tmp_path, 1)
    manager = ModelManager([config(tmp_path)], loader=broken_loader(set()))
    with pytest.raises(ServingError, match="repeated: m"):
        manager.reload([config(tmp_path), config(tmp_path)])
    manager.reload([])
    with pytest.raises(ServingError, match=r"Latest\(m\)"):
        with manager.acquire("m"):
            pass


def test_a_label_must_name_an_available_version_unless_allowed(tmp_path):
    make_versions(tmp_path, 1)
    labelled = config(tmp_path)
    labelled.version_labels["canary"] = 2
    with pytest.raises(ServingError) as raised:
        ModelManager([labelled], loader=broken_loader(set()))
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "version 2 of model m" in raised.value.message and "--allow_version_labels" in raised.value.message

    manager = ModelManager([labelled], loader=broken_loader(set()), allow_labels_for_unavailable_versions=True)
    with pytest.raises(ServingError, match=r"Specific\(m, 2\)"):
        with manager.acquire("m", label="canary"):
            pass


def test_folders_that_are_not_plain_integers_are_ignored_and_new_versions_still_load(tmp_path, caplog):
    make_versions(tmp_path, 3, "²", "1.5", "-2", "+7", "007", "007x", str(2**63), "9" * 30, "tmp")
    (tmp_path / "5").write_text("a file, not a version folder")
    manager = ModelManager([config(tmp_path, all=True)], loader=broken_loader(set()))
    assert [v.number for v in manager.status("m")] == [3]

    make_versions(tmp_path, 4, 2**63 - 1)
    caplog.clear()
    with caplog.at_level("WARNING", logger="serving"):
        manager.poll()
        manager.poll()
    assert [v.number for v in manager.status("m")] == [2**63 - 1, 4, 3]
    with manager.acquire("m") as servable:
        assert servable.version == 2**63 - 1
    assert not [record for record in caplog.records if "ignoring" in record.getMessage()], \
        "each strange folder is logged once, at its first scan, not at every poll"
