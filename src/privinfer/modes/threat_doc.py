"""Render docs/threat-model.md from every mode plug-in's threat rows and leakage list.

python -m privinfer.modes.threat_doc > docs/threat-model.md   (a test checks it is current)
"""

from __future__ import annotations

from privinfer.modes import get, names
from privinfer.security.matrix import render_markdown

INTRO = """# Threat model

Generated from each mode plug-in's `threat` rows and `leakage` list (`src/privinfer/modes/`) by
`python -m privinfer.modes.threat_doc`; do not edit by hand. For the figures of a concrete
configuration (parameters, policy, truncation bounds) run `privinfer security --mode MODE`.

Assets: the **prompt** (and the client's other inputs), the **weights**, the **output** (tokens,
logits, embeddings) and **metadata** (lengths, token counts, timing). Each cell says whether the
asset is protected from that adversary, by which mechanism, and under which assumption.
"""


def render() -> str:
    parts = [INTRO]
    for name in names():
        mode = get(name)
        parts.append(f"\n## {name}\n\n{render_markdown(mode.threat)}\n\nLeaks by design:\n")
        parts.extend(f"- {item}\n" for item in mode.leakage)
    return "".join(parts)


if __name__ == "__main__":
    print(render(), end="")
