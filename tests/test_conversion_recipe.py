"""The maintainer recipe (conversion/convert_zoo.py) against a local mirror, on copies of the real cards."""
import hashlib
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from http_server import FileServer, build_mirror

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "conversion"))
from convert_zoo import main as convert_zoo  # noqa: E402

from razorzoo.errors import CardError  # noqa: E402
from razorzoo.zoo.edit import set_card_hashes  # noqa: E402
from razorzoo.zoo.registry import CARDS_DIR, parse_card  # noqa: E402

NAMES = ("rtmdet_tiny-ofa_lat31", "ofa_lat31")
_SHA = re.compile(r"^(\s*sha256:[ \t]*)\S+", re.M)


def _unhashed(text: str) -> str:
    """The card with every sha256 value replaced by null (what a maintainer starts from for a new card)."""
    return _SHA.sub(r"\1null", text)


def test_set_card_hashes_edits_only_the_sha256_values(tmp_path):
    card = tmp_path / "yolov6s-attentive_a6.md"
    (tmp_path / "subnets").mkdir()
    subnet = "subnets/ATTENTIVE_SUBNET_A6.yaml"
    (tmp_path / subnet).write_bytes((CARDS_DIR / subnet).read_bytes())
    original = (CARDS_DIR / card.name).read_text()
    card.write_text(original)
    full = {"weights": "a" * 64, "subnet": "b" * 64}
    assert set_card_hashes(card, full)
    edited = card.read_text()
    changed = [(a, b) for a, b in zip(original.splitlines(), edited.splitlines()) if a != b]
    assert changed == [("    sha256: null", "    sha256: " + "b" * 64),
                       ("    sha256: dcc72668", "    sha256: " + "a" * 64)]
    assert len(edited) == len(original) + 64 - 4 + 64 - 8
    parsed = parse_card(card)
    assert (parsed.weights.sha256, parsed.subnet.sha256) == ("a" * 64, "b" * 64)
    assert not set_card_hashes(card, full)  # idempotent
    with pytest.raises(CardError, match="razorzoo.subnet"):
        set_card_hashes(_supernet_copy(tmp_path), {"subnet": "c" * 64})  # a supernet has no subnet entry


def _sha256_of_served(www: Path, url: str) -> str:
    return hashlib.sha256((www / unquote(urlsplit(url).path).lstrip("/")).read_bytes()).hexdigest()


def _supernet_copy(tmp_path: Path) -> Path:
    card = tmp_path / "attentive_supernet.md"
    card.write_text((CARDS_DIR / card.name).read_text())
    return card


def test_recipe_fetches_verifies_converts_and_records_full_hashes(tmp_path):
    www, served_cards = build_mirror(list(NAMES), tmp_path / "mirror")
    cards = tmp_path / "cards"
    (cards / "subnets").mkdir(parents=True)
    for file in (served_cards / "subnets").iterdir():
        (cards / "subnets" / file.name).write_bytes(file.read_bytes())
    originals = {}
    for name in NAMES:
        originals[name] = _unhashed((CARDS_DIR / f"{name}.md").read_text())
        (cards / f"{name}.md").write_text(originals[name])
    cache = tmp_path / "cache"
    with FileServer(www) as server:
        result = subprocess.run(
            [sys.executable, str(REPO / "conversion" / "convert_zoo.py"), "--cards", str(cards), "--mirror",
             server.url, "--cache", str(cache)], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        for name in NAMES:
            assert f"ok   {name}" in result.stdout and "card updated" in result.stdout
            card = parse_card(cards / f"{name}.md")
            assert card.weights.sha256 == _sha256_of_served(www, card.weights.url)
            assert card.subnet.sha256 == _sha256_of_served(www, card.subnet.url)
            # only the two sha256 lines changed
            before, after = originals[name].splitlines(), (cards / f"{name}.md").read_text().splitlines()
            assert len(before) == len(after)
            assert sum(a != b for a, b in zip(before, after)) == 2
        assert len(list((cache / "models").rglob("model.safetensors"))) == len(NAMES)
        requests = len(server.requests)
        # a second run re-uses the cache (the full hashes now in the cards still match it) and changes nothing
        assert convert_zoo(["--cards", str(cards), "--mirror", server.url, "--cache", str(cache)]) == 0
        assert len(server.requests) == requests
