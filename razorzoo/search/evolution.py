"""Evolution search over a MobileNet search space, as MMRazor's ``EvolutionSearchLoop``.

Every generation: fill the population with random subnets that meet the constraint, score them, keep the ``top_k``
of everything seen so far, then breed the next population by mutation (a top-k parent with each choice resampled
with ``mutate_prob``) and crossover (each choice from one of two top-k parents). Candidates are genomes over the
choices of :data:`razorzoo.arch.subnet.SEARCH_SPACES` and become subnets through ``load_subnet``, so none can leave
the search space. Differences from upstream, on purpose: a subnet is scored once (scores are cached by genome, so
a candidate kept in the top-k is not re-validated), and the random generator's state is part of the saved search
state, so a stopped search resumed from it ends exactly where an uninterrupted one does.
"""
from __future__ import annotations

import math
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from razorzoo.arch.subnet import SEARCH_SPACES, MobileNetSpace, MobileNetSubnet, load_subnet
from razorzoo.bounded import check_number, safe_repr
from razorzoo.documents import Fields, read_json_file
from razorzoo.errors import RazorzooError
from razorzoo.files import write_json_atomic
from razorzoo.wording import count

__all__ = ["ChoiceSpace", "SearchSettings", "EvolutionSearch", "Genome"]

Genome = tuple  # one value per ChoiceSpace key, in key order
STATE_FORMAT = "razorzoo-search-state"
MAX_POPULATION = 10_000  # candidates per generation (upstream's default: 50)
MAX_GENERATIONS = 10_000  # (upstream's default: 20)


@dataclass(frozen=True)
class ChoiceSpace:
    """The searchable choices of a family: subnet YAML keys (without ``backbone.``) and their allowed values.

    OFA's ``expand_ratio_se`` is not searched: it follows ``expand_ratio``, as the OFA weights require.
    """

    family: str
    keys: tuple[str, ...]
    options: tuple[tuple[int, ...], ...]

    @classmethod
    def for_family(cls, family: str) -> "ChoiceSpace":
        space = SEARCH_SPACES.get(family)
        if not isinstance(space, MobileNetSpace):
            raise RazorzooError(f"evolution search covers the attentive and ofa search spaces, not {safe_repr(family)}")
        items: list[tuple[str, tuple[int, ...]]] = [("first_channels", space.first_channels),
                                                    ("last_channels", space.last_channels)]
        for i, stage in enumerate(space.stages, start=1):
            items += [(f"layers.{i}.depth", stage.depths), (f"layers.{i}.out_channels", stage.out_channels)]
            blocks = [f"layers.{i}.{b}." for b in range(max(stage.depths))] if space.fine_grained else [f"layers.{i}."]
            for prefix in blocks:
                items += [(prefix + "kernel_size", stage.kernel_sizes), (prefix + "expand_ratio", stage.expand_ratios)]
        return cls(family, tuple(k for k, _ in items), tuple(tuple(v) for _, v in items))

    def smallest(self) -> Genome:
        """Every choice at its minimum: the cheapest subnet (FLOPs, params and latency grow with every choice)."""
        return tuple(min(values) for values in self.options)

    def sample(self, rng: random.Random) -> Genome:
        return tuple(rng.choice(values) for values in self.options)

    def mutate(self, genome: Genome, rng: random.Random, prob: float) -> Genome:
        """MMRazor ``crossover(parent, sample_subnet(), prob)``: each choice resampled with probability ``prob``."""
        fresh = self.sample(rng)
        return tuple(new if rng.random() < prob else old for old, new in zip(genome, fresh))

    @staticmethod
    def crossover(a: Genome, b: Genome, rng: random.Random) -> Genome:
        return tuple(x if rng.random() < 0.5 else y for x, y in zip(a, b))

    def subnet(self, genome: Genome) -> MobileNetSubnet:
        """The subnet of a genome, validated by ``load_subnet`` against the search space."""
        values: dict[str, Any] = {"backbone." + k: v for k, v in zip(self.keys, genome)}
        if self.family == "ofa":
            values.update({k.replace("expand_ratio", "expand_ratio_se"): v for k, v in values.items()
                           if k.endswith("expand_ratio") and _has_se(self.family, k)})
        return load_subnet(values, family=self.family)  # type: ignore[return-value]

    def to_json(self, genome: Genome) -> dict[str, int]:
        return dict(zip(self.keys, genome))

    def from_json(self, data: Mapping[str, Any]) -> Genome:
        genome = tuple(data.get(k) for k in self.keys)
        if set(data) != set(self.keys) or any(v not in opts for v, opts in zip(genome, self.options)):
            raise RazorzooError(f"a saved {self.family} candidate is outside the search space; the state file was "
                                "written for another search")
        return genome


def _has_se(family: str, key: str) -> bool:
    stage = int(key.split(".")[2]) - 1
    return SEARCH_SPACES[family].stages[stage].with_se  # type: ignore[union-attr]


@dataclass(frozen=True)
class SearchSettings:
    """MMRazor's ``EvolutionSearchLoop`` arguments (its defaults: 50, 20, 10, 25, 25, 0.1)."""

    population: int = 50
    generations: int = 20
    top_k: int = 10
    num_mutation: int = 25
    num_crossover: int = 25
    mutate_prob: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        for name, maximum in (("population", MAX_POPULATION), ("generations", MAX_GENERATIONS),
                              ("top_k", MAX_POPULATION), ("num_mutation", MAX_POPULATION),
                              ("num_crossover", MAX_POPULATION), ("seed", (1 << 63) - 1)):
            check_number(getattr(self, name), name, minimum=0 if name in ("num_mutation", "num_crossover", "seed")
                         else 1, maximum=maximum, integer=True)
        if self.num_mutation + self.num_crossover > self.population:
            raise RazorzooError(f"num_mutation + num_crossover ({self.num_mutation} + {self.num_crossover}) must not "
                                f"exceed the population ({self.population})")
        if not isinstance(self.mutate_prob, (int, float)) or not 0 <= self.mutate_prob <= 1:
            raise RazorzooError(f"mutate_prob must be in [0, 1], got {safe_repr(self.mutate_prob)}")

    @classmethod
    def for_population(cls, population: int, generations: int, seed: int = 0, **kwargs: Any) -> "SearchSettings":
        """Upstream's proportions at another population size: top-k 1/5, half mutation, half crossover."""
        return cls(population=population, generations=generations, top_k=max(1, population // 5),
                   num_mutation=population // 2, num_crossover=population // 2, seed=seed, **kwargs)


@dataclass
class EvolutionSearch:
    """One search: ``score(genome)`` gives a sortable score (higher is better), ``feasible(genome)`` checks the
    constraint. ``state_path`` (JSON) is written after every generation and read by :meth:`resume`.

    ``scores`` holds every scored genome with its score, in the order they were scored.
    """

    space: ChoiceSpace
    settings: SearchSettings
    score: Callable[[Genome], tuple]
    feasible: Callable[[Genome], bool]
    state_path: Path | None = None
    key: dict[str, Any] = field(default_factory=dict)  # what else must match to resume (constraint, supernet, ...)
    progress: Callable[[str], None] = lambda message: None
    describe: Callable[[Genome], str] | None = None  # a scored candidate in progress lines (default: its score)
    generation: int = 0
    candidates: list[Genome] = field(default_factory=list)
    top_k: list[Genome] = field(default_factory=list)
    scores: dict[Genome, tuple] = field(default_factory=dict)
    rng: random.Random = field(init=False)
    max_tries: int = 100  # random samples per wanted candidate before giving up

    def __post_init__(self) -> None:
        self.rng = random.Random(self.settings.seed)

    def run(self, stop_after: int | None = None) -> list[Genome]:
        """Run the remaining generations (or stop once ``stop_after`` generations are done); return the top-k."""
        while self.generation < self.settings.generations:
            if stop_after is not None and self.generation >= stop_after:
                break
            self._generation()
            self.save()
        return list(self.top_k)

    def _generation(self) -> None:
        s = self.settings
        where = f"generation {self.generation + 1}/{s.generations}"
        bred = len(self.candidates)
        tries = self._fill()
        if tries:
            self.progress(f"{where}: {count(len(self.candidates) - bred, 'random candidate')} meeting the "
                          f"constraint, from {count(tries, 'sample')}"
                          + (f", with {count(bred, 'candidate')} bred from the last generation" if bred else ""))
        for i, genome in enumerate(self.candidates, start=1):
            if genome not in self.scores:
                self.scores[genome] = tuple(self.score(genome))
            self.progress(f"{where}, candidate {i}/{len(self.candidates)}: {self._describe(genome)}")
        pool = list(dict.fromkeys(self.candidates + self.top_k))  # unique, first occurrence order
        pool.sort(key=lambda g: self.scores[g], reverse=True)  # stable: ties keep pool order
        self.top_k = pool[: s.top_k]
        self.progress(f"{where} done, best so far: {self._describe(self.top_k[0])}")
        self.candidates = (self._offspring(s.num_mutation, lambda: self.space.mutate(
            self.rng.choice(self.top_k), self.rng, s.mutate_prob))
            + self._offspring(s.num_crossover, lambda: self.space.crossover(
                self.rng.choice(self.top_k), self.rng.choice(self.top_k), self.rng)))
        self.generation += 1

    def _describe(self, genome: Genome) -> str:
        return self.describe(genome) if self.describe is not None else f"score {_fmt(self.scores[genome])}"

    def _fill(self) -> int:
        """Top the candidates up to the population with random feasible subnets; return the samples drawn."""
        tries = 0
        while len(self.candidates) < self.settings.population:
            genome = self.space.sample(self.rng)
            tries += 1
            if self.feasible(genome):
                self.candidates.append(genome)
            elif tries > self.max_tries * self.settings.population:
                raise RazorzooError(f"found only {len(self.candidates)} of {count(self.settings.population, 'subnet')}"
                                    f" that meet the constraint in {count(tries, 'random sample')}; loosen the "
                                    "constraint")
        return tries

    def _offspring(self, count: int, make: Callable[[], Genome]) -> list[Genome]:
        """Up to ``count`` feasible children, at most ``10 * count`` attempts (upstream's limit)."""
        children: list[Genome] = []
        for _ in range(10 * count):
            if len(children) == count:
                break
            child = make()
            if self.feasible(child):
                children.append(child)
        return children

    # -- saved state -------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        return {"format": STATE_FORMAT, "version": 1, "family": self.space.family,
                "settings": asdict(self.settings), "key": self.key, "generation": self.generation,
                "candidates": [self.space.to_json(g) for g in self.candidates],
                "top_k": [self.space.to_json(g) for g in self.top_k],
                "scores": [{"subnet": self.space.to_json(g), "score": list(s)} for g, s in self.scores.items()],
                "rng": [version, list(internal), gauss]}

    def save(self) -> None:
        if self.state_path is not None:
            write_json_atomic(self.state_path, self.state())

    def resume(self, path: str | os.PathLike) -> None:
        """Continue from a state written by :meth:`save` with the same settings, key and search space; every field
        is checked against them (a generation in 0..generations, candidates inside the search space, finite scores,
        a valid random-generator state), so an edited or foreign file cannot make the search run for ever.

        Raises:
            RazorzooError: the file is not a search state, or belongs to a different search.
        """
        import json

        where = f"search state {safe_repr(str(path))}"
        data = Fields(read_json_file(path, what=where, error=RazorzooError), where, error=RazorzooError)
        if data.value.get("format") != STATE_FORMAT:
            raise RazorzooError(f"{where} is not a razorzoo search state (no \"format\": \"{STATE_FORMAT}\")")
        data.int("version", minimum=1, maximum=1)
        expected = {"family": self.space.family, "settings": asdict(self.settings), "key": self.key}
        for name, value in expected.items():
            if data.value.get(name) != json.loads(json.dumps(value)):
                raise RazorzooError(f"{where} was written by a search with other {name} "
                                    f"({safe_repr(data.value.get(name))} instead of {safe_repr(value)}); resume with "
                                    "the same options or start anew")
        s = self.settings
        generation = data.int("generation", minimum=0, maximum=s.generations)
        candidates = [self._genome(g, where) for g in data.array("candidates", max_items=s.population)]
        top_k = [self._genome(g, where) for g in data.array("top_k", max_items=s.top_k)]
        scores = {}
        for entry in data.objects("scores", max_items=(s.generations + 1) * s.population):
            scores[self._genome(entry.value.get("subnet"), where)] = tuple(entry.numbers("score", length=2))
        unscored = [i for i, g in enumerate(top_k) if g not in scores]
        if unscored:
            raise RazorzooError(f"{where}: top_k[{unscored[0]}] has no entry in scores; the file was edited or is "
                                "damaged: start anew")
        self.rng.setstate(_rng_state(data.array("rng", max_items=3, min_items=3), where))
        self.generation, self.candidates, self.top_k, self.scores = generation, candidates, top_k, scores

    def _genome(self, value: Any, where: str) -> Genome:
        if not isinstance(value, dict):
            raise RazorzooError(f"{where}: a saved candidate is {safe_repr(value)}, not an object of choices")
        try:
            return self.space.from_json(value)
        except RazorzooError as exc:
            raise RazorzooError(f"{where}: {exc}") from None


def _rng_state(value: list, where: str) -> tuple:
    """``random.Random.getstate()`` from its JSON form, checked (a Mersenne Twister state: version 3, 624 words and
    an index, each an unsigned 32-bit integer; the gauss slot None or a finite number)."""
    version, internal, gauss = value
    words_ok = isinstance(internal, list) and len(internal) == 625 and all(
        type(w) is int and 0 <= w < 1 << 32 for w in internal) and internal[-1] <= 624
    gauss_ok = gauss is None or (type(gauss) is float and math.isfinite(gauss))
    if version != 3 or not words_ok or not gauss_ok:
        raise RazorzooError(f"{where}: rng is not a random-generator state razorzoo wrote")
    return version, tuple(internal), gauss


def _fmt(score: tuple) -> str:
    return ", ".join(f"{v:.4g}" for v in score)
