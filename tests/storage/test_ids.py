"""File ids: the file's type in its name, and nothing guessable in the rest."""

from __future__ import annotations

import pytest

from gateway.storage.ids import content_type_of, is_file_id, new_file_id


@pytest.mark.parametrize(
    ("media", "extension"),
    [("image/png", "png"), ("image/jpeg", "jpg"), ("image/webp", "webp"), ("text/html", "bin")],
)
def test_an_id_names_its_type(media: str, extension: str) -> None:
    file_id = new_file_id(media)

    assert is_file_id(file_id)
    assert file_id.endswith("." + extension)
    assert content_type_of(file_id) == (media if extension != "bin" else "application/octet-stream")


def test_ids_are_distinct_and_every_character_of_every_position_is_drawn() -> None:
    ids = [new_file_id("image/png") for _ in range(5000)]

    assert len(set(ids)) == len(ids)
    bodies = [file_id.removeprefix("file_").removesuffix(".png") for file_id in ids]
    assert {len(body) for body in bodies} == {22}
    for position in range(22):  # each of the 62 digits, at each place: 5000 draws miss
        assert len({body[position] for body in bodies}) == 62  # one with p < 10^-32
