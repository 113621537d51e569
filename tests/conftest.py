"""Fixtures shared by the end-to-end tests."""

from pathlib import Path

import pytest

from mvs.synth import RoomSpec, generate_room


@pytest.fixture(scope="session")
def small_room(tmp_path_factory) -> Path:
    """A 40-frame 160x120 synthetic room in ScanNet export layout, with its mesh."""
    return generate_room(RoomSpec(seed=7, num_frames=40, width=160, height=120),
                         tmp_path_factory.mktemp("rooms") / "room7", progress=False)
