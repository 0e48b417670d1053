"""The threat matrix's vocabulary: assets, adversaries and cells (protected or not, how, under
which assumption). Each mode states its own rows in its plug-in (`privinfer.modes.<name>`);
the CLI and the docs render them with the functions here."""

from __future__ import annotations

from dataclasses import dataclass

ASSETS = ("prompt", "weights", "output", "metadata")
ADVERSARIES = (
    "network observer",
    "host operator",
    "one compute party",
    "two colluding parties",
    "the client",
    "the server",
)


@dataclass(frozen=True)
class Cell:
    protected: str  # "yes", "no", "partly", "n/a"
    mechanism: str
    assumption: str = ""


NA = Cell("n/a", "this adversary does not exist in this mode")
META_LEAK = "token counts, sequence length and timing are visible"


def matrix_json(rows: dict[str, dict[str, Cell]]) -> dict[str, dict[str, dict[str, str]]]:
    """A mode's threat rows (adversary -> asset -> Cell) as plain JSON data."""
    return {
        adv: {asset: dict(cell.__dict__) for asset, cell in row.items()}
        for adv, row in rows.items()
    }


def render_markdown(rows: dict[str, dict[str, Cell]]) -> str:
    """A mode's threat rows as a Markdown table, one row per adversary."""
    out = [f"| adversary | {' | '.join(ASSETS)} |", "|---|" + "---|" * len(ASSETS)]
    for adv, row in rows.items():
        cells = []
        for asset in ASSETS:
            c = row[asset]
            cells.append(
                c.protected
                if c.protected in ("n/a",)
                else f"**{c.protected}**: {c.mechanism}"
                + (f" (if {c.assumption})" if c.assumption else "")
            )
        out.append(f"| {adv} | " + " | ".join(cells) + " |")
    return "\n".join(out)
