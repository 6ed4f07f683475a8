"""What a stage did with its input records: the Account (in = out + dropped + dead), the Beam
counters it is read from, and the guards that fail a stage whose books balance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from apache_beam.metrics.metric import MetricsFilter

from prefsynth.schemas.io import METRICS_NAMESPACE


class AccountingError(RuntimeError):
    pass


class StageGuardError(RuntimeError):
    """A stage whose books balance but whose result is not worth committing: an empty output, or
    more dead letters than `max_dead_fraction` allows. Its dead letters are committed all the same."""


@dataclass
class Account:
    """What a stage did with its input records."""

    stage: str
    n_in: int
    n_out: int
    dropped: dict[str, int] = field(default_factory=dict)
    dead: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)  # every Beam counter of the stage

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    @property
    def n_dead(self) -> int:
        return sum(self.dead.values())

    @property
    def balanced(self) -> bool:
        return self.n_in == self.n_out + self.n_dropped + self.n_dead

    def check(self) -> None:
        if not self.balanced:
            raise AccountingError(
                f"stage {self.stage}: in={self.n_in} but out={self.n_out} + dropped={self.n_dropped} "
                f"+ dead={self.n_dead} = {self.n_out + self.n_dropped + self.n_dead}; records were lost"
            )

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(n_dropped=self.n_dropped, n_dead=self.n_dead, balanced=self.balanced)
        d["wall_s"] = round(self.wall_s, 2)
        return d

    def summary_line(self) -> str:
        drops = ", ".join(f"{k}={v}" for k, v in sorted(self.dropped.items())) or "none"
        deads = ", ".join(f"{k}={v}" for k, v in sorted(self.dead.items())) or "none"
        rate = f", {self.n_in / self.wall_s:.4g} records/s" if self.wall_s > 0 and self.n_in else ""
        return (f"[{self.stage}] in={self.n_in} out={self.n_out} dropped={self.n_dropped} ({drops}) "
                f"dead={self.n_dead} ({deads}) in {self.wall_s:.1f}s{rate}")


def counters(result, namespace: str = METRICS_NAMESPACE) -> dict[str, int]:
    """Beam counter values of a finished pipeline (committed where the runner has them)."""
    found = result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]
    out: dict[str, int] = {}
    for c in found:
        value = c.committed if c.committed is not None else c.attempted
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(value or 0)
    return out


def dead_limit(explicit: float | None = None) -> float:
    """`max_dead_fraction`: the one given, else that of the params this process loaded last
    (`load_params`), else the default of params.yaml."""
    from prefsynth.config import Params, load_params

    if explicit is not None:
        return float(explicit)
    loaded = getattr(load_params, "last_loaded", None)
    if loaded is not None:
        return float(loaded.max_dead_fraction)
    return float(Params.__dataclass_fields__["max_dead_fraction"].default)


def guard_problem(account: Account, max_dead_fraction: float) -> str | None:
    """Why a balanced stage must still fail, or None. max_dead_fraction >= 1 turns the guard off."""
    if max_dead_fraction >= 1:
        return None
    if account.n_in == 0:
        return "its input is empty (0 records)"
    if account.n_dead / account.n_in > max_dead_fraction:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(account.dead.items(), key=lambda kv: -kv[1]))
        return (f"{account.n_dead} of {account.n_in} input records ({account.n_dead / account.n_in:.0%}) are dead "
                f"letters ({reasons}), more than max_dead_fraction={max_dead_fraction:g}")
    if account.n_out == 0:
        return (f"its output is empty ({account.n_in} records in: {account.n_dropped} dropped, "
                f"{account.n_dead} dead)")
    return None
