"""Text of a user's own model card (the kind RAZORZOO_CARDS holds), for tests that add, break or attack cards."""
from __future__ import annotations

import textwrap


def card_text(name: str, *, task: str = "classification", front: str = "", body: str = "My own searched subnet.\n",
              subnet_file: str | None = None, aliases: str = "[]", weights_sha256: str = "null", **meta: str) -> str:
    """A valid card for ``name`` whose subnet is ``<name>.yaml`` beside it (or ``subnet_file``).

    ``meta`` adds keys under ``razorzoo:`` (values as YAML text), ``front`` adds top-level front matter text.
    """
    extra = "".join(f"  {key}: {value}\n" for key, value in meta.items())
    return textwrap.dedent(f"""\
        ---
        library_name: razorzoo
        license: apache-2.0
        razorzoo:
          name: {name}
          task: {task}
          family: attentive
          aliases: {aliases}
          subnet:
            url: https://example.org/{name}.yaml
            sha256: null
            file: {subnet_file or name + '.yaml'}
          weights:
            url: https://example.org/{name}.pth
            sha256: {weights_sha256}
        """) + extra + front + "---\n\n# Custom\n\n" + body
