"""The key facts of a card: the (label, value) pairs that head ``razorzoo show`` and the gallery's card pages."""
from __future__ import annotations

from razorzoo.zoo.registry import Card

__all__ = ["key_facts"]


def key_facts(card: Card) -> list[tuple[str, str]]:
    """(label, value) pairs: task, family, aliases, size, cost, input, metrics, license, files. Values are plain
    text straight from the card (renderers escape them for their medium)."""
    meta = card.meta
    facts = [("task", card.task + (f" (recipe {card.recipe})" if card.recipe else "")), ("family", card.family)]
    if card.aliases:
        facts.append(("aliases", ", ".join(card.aliases)))
    for key in ("algorithm", "search_space"):
        if meta.get(key):
            facts.append((key.replace("_", " "), str(meta[key])))
    if card.num_params:
        facts.append(("params", f"{card.num_params / 1e6:.3f} M ({card.num_params:,})"))
    if card.flops:
        shape = "x".join(map(str, card.flops_input))
        facts.append(("FLOPs", f"{card.flops / 1e9:.3f} G multiply-accumulates at {shape}"))
    if meta.get("input_size"):
        resolution = meta.get("resolution")
        resized = f" (resized inside the model to {resolution})" if resolution not in (None, meta["input_size"]) else ""
        facts.append(("input", f"{meta['input_size']}{resized}"))
    provenance = meta.get("provenance")
    source = provenance.get("metrics_source") if isinstance(provenance, dict) else None
    for metric, label in (("top1", "top-1"), ("top5", "top-5"), ("box_ap", "box AP")):
        if metric in card.metrics:
            facts.append((label, f"{card.metrics[metric]}" + (f"  ({source})" if source else "")))
    if card.front_matter.get("license"):
        facts.append(("license", str(card.front_matter["license"])))
    for label, ref in (("subnet", card.subnet), ("weights", card.weights)):
        if ref is not None:
            details = [f"sha256 {ref.sha256}" if ref.sha256 else "no published hash"]
            if ref.layout:
                details.append(f"layout {ref.layout}")
            if ref.extract_from:
                details.append(f"sliced from {ref.extract_from}")
            facts.append((label, f"{ref.url or ref.file}  ({', '.join(details)})"))
    return facts
