"""The committed stubs are exactly what `make proto` generates from the .proto."""

from __future__ import annotations

from pathlib import Path

from provider._proto import generate
from provider._proto.v1alpha1 import service_pb2 as pb


def test_generated_stubs_match_the_proto(tmp_path: Path) -> None:
    fresh = generate.generate(tmp_path)
    committed = Path(generate.__file__).parent / "v1alpha1"
    assert [p.name for p in fresh] == sorted(p.name for p in committed.iterdir() if p.is_file())
    for path in fresh:
        assert path.read_bytes() == (committed / path.name).read_bytes(), (
            f"{path.name} drifted from protos/v1alpha1/service.proto; run `make proto`"
        )


def test_wire_names_and_field_numbers_match_the_driver() -> None:
    service = pb.DESCRIPTOR.services_by_name["CSIDriverProvider"]
    assert service.full_name == "v1alpha1.CSIDriverProvider"
    assert sorted(m.name for m in service.methods) == ["Mount", "Version"]
    expected = {
        "VersionRequest": {"version": 1},
        "VersionResponse": {"version": 1, "runtime_name": 2, "runtime_version": 3},
        "MountRequest": {
            "attributes": 1,
            "secrets": 2,
            "target_path": 3,
            "permission": 4,
            "current_object_version": 5,
        },
        "MountResponse": {"object_version": 1, "error": 2, "files": 3},
        "File": {"path": 1, "mode": 2, "contents": 3},
        "ObjectVersion": {"id": 1, "version": 2},
        "Error": {"code": 1},
    }
    for message, numbers in expected.items():
        desc = pb.DESCRIPTOR.message_types_by_name[message]
        assert desc.full_name == f"v1alpha1.{message}"
        assert {f.name: f.number for f in desc.fields} == numbers
    assert pb.DESCRIPTOR.message_types_by_name["File"].fields_by_name["mode"].type == 5  # int32
