"""Static checks of the stored notebooks: every image they show travels inside the file.

A notebook opened from anywhere (``make lab``, ``cd notebooks && jupyter lab``, VS Code, a released
student copy) can only show images it carries as cell attachments: a Jupyter server rooted at
``notebooks/`` cannot serve ``../assets``. The diagrams' source of truth stays in
``assets/diagrams``; the attachments must be byte-for-byte copies of those files.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
_IMAGE = re.compile(r"!\[[^\]]*\]\((?P<target>[^)\s]+)\)|<img[^>]*\ssrc=\"(?P<src>[^\"]+)\"")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_image_is_embedded_or_remote(path):
    cells = json.loads(path.read_text())["cells"]
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "markdown":
            continue
        text = "".join(cell["source"])
        for m in _IMAGE.finditer(text):
            target = m["target"] or m["src"]
            if target.startswith(("http://", "https://", "data:")):
                continue
            assert target.startswith("attachment:"), (
                f"{path.name} cell {i} links the local file {target!r}, which a Jupyter server rooted "
                "elsewhere cannot show: embed it as a cell attachment")
            name = target.removeprefix("attachment:")
            assert name in cell.get("attachments", {}), f"{path.name} cell {i}: attachment {name!r} is missing"


def test_embedded_diagrams_equal_their_source_files():
    seen = 0
    for path in NOTEBOOKS:
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            for name, bundle in cell.get("attachments", {}).items():
                source = ROOT / "assets" / "diagrams" / name
                assert source.is_file(), f"{path.name} cell {i} carries {name!r}, which has no source in assets/diagrams"
                (data,) = bundle.values()  # nbformat may store the base64 text as a list of lines
                assert base64.b64decode("".join(data)) == source.read_bytes(), (
                    f"{path.name} cell {i}: attachment {name!r} differs from assets/diagrams/{name}; "
                    "re-embed the edited diagram")
                seen += 1
    assert seen >= 2  # 03's block diagram and 07's KV-cache diagram
