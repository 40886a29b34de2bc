"""Terminal tables (rich) for a profile report."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from attnlab.report.schema import Report


def layer_table(report: Report) -> Table:
    """Per layer: first-token mass (mean / max head), heads over epsilon, Sink ratio and entropy."""
    eps = report.settings["epsilon"]
    s = report.summary
    table = Table(title=f"{report.model.name}: where attention goes ({report.settings['n_texts']} text(s))")
    for col in ("layer", "first-token mass", "max head", f"heads >= {eps}", f"Sink ratio % (alpha > {eps})",
                "entropy (nats)"):
        table.add_column(col, justify="right")
    for layer, (mass, ent) in enumerate(zip(s.first_token_mass, s.entropy)):
        best = max(range(len(mass)), key=mass.__getitem__)
        table.add_row(str(layer), f"{sum(mass) / len(mass):.3f}", f"{mass[best]:.3f} (H{best})",
                      f"{sum(m >= eps for m in mass)}/{len(mass)}", f"{s.sink_ratio_by_layer[layer]:.1f}",
                      f"{sum(ent) / len(ent):.2f}")
    return table


def top_heads_table(report: Report, k: int = 8) -> Table:
    """The ``k`` heads that put the most attention on the first token, with their entropy and span masses."""
    s = report.summary
    heads = sorted(((m, l, h) for l, row in enumerate(s.first_token_mass) for h, m in enumerate(row)), reverse=True)
    table = Table(title=f"top {k} sink heads")
    for col in ("head", "first-token mass", "entropy", *[f"mass on '{n}'" for n in s.span_mass]):
        table.add_column(col, justify="right")
    for m, l, h in heads[:k]:
        table.add_row(f"L{l}H{h}", f"{m:.3f}", f"{s.entropy[l][h]:.2f}",
                      *[f"{s.span_mass[n][l][h]:.3f}" for n in s.span_mass])
    return table


def print_report(report: Report, console: Console | None = None) -> None:
    """Print a profile report to the terminal: the per-layer table, the top sink heads, the Sink ratio."""
    console = console or Console()
    console.print(layer_table(report))
    console.print(top_heads_table(report))
    s = report.summary
    first = report.texts[0]
    console.print(f"Sink ratio Sink_1^{report.settings['epsilon']} = {s.sink_ratio:.1f}% of heads; "
                  f"{s.heads_with_sink_beyond_layer0} heads beyond layer 0 put >= {report.settings['epsilon']} on "
                  f"the first token ({first.first_token!r}, BOS used: {first.bos_used}).")
    n_hidden = sum(len(t.hidden_sinks) for t in report.texts)
    n_massive = sum(len(a.massive) for t in report.texts for a in t.activations)
    console.print(f"Hidden sinks (ACT, alpha > {report.settings['hidden_sink_threshold']} on a later key): "
                  f"{n_hidden} (head, key) pairs; massive activations (> 100 and >= 1000x median): {n_massive}.")
