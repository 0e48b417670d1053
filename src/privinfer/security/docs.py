"""Render docs/threat-model.md from the threat matrix and leakage lists written in code.

python -m privinfer.security.docs > docs/threat-model.md   (a test checks it is current)
"""

from __future__ import annotations

from privinfer.security.matrix import MATRIX, render_markdown
from privinfer.security.report import LEAKAGE

INTRO = """# Threat model

Generated from `src/privinfer/security/matrix.py` and `report.py` by
`python -m privinfer.security.docs`; do not edit by hand. For the figures of a concrete
configuration (parameters, policy, truncation bounds) run `privinfer security --mode MODE`.

Assets: the **prompt** (and the client's other inputs), the **weights**, the **output** (tokens,
logits, embeddings) and **metadata** (lengths, token counts, timing). Each cell says whether the
asset is protected from that adversary, by which mechanism, and under which assumption.
"""


def render() -> str:
    parts = [INTRO]
    for mode in MATRIX:
        parts.append(f"\n## {mode}\n\n{render_markdown(mode)}\n\nLeaks by design:\n")
        parts.extend(f"- {item}\n" for item in LEAKAGE[mode])
    return "".join(parts)


if __name__ == "__main__":
    print(render(), end="")
