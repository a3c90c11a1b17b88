"""The spec models of systematic variations (see :mod:`.spec` and :mod:`.variations`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["FunctionRef", "Variation", "PseudoTerm"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class FunctionRef(_Strict):
    """User code (same trust as a coffea processor): ``package.module:callable``, run on the workers
    as ``callable(events, objects)`` -> one number per event; ``columns``: the branches it reads."""

    function: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$")
    columns: list[str] = Field(default_factory=list)


class Variation(_Strict):
    """A shape variation (``shape``), a one-sided (``weight``) or up/down (``up``, ``down``) weight."""

    shape: dict[str, str] | None = None
    weight: str | FunctionRef | None = None
    up: str | FunctionRef | None = None
    down: str | FunctionRef | None = None
    datasets: list[str] | None = Field(None, description="the dataset labels it applies to "
                                       "(default: every nominal dataset)")

    @model_validator(mode="after")
    def _one_kind(self) -> Variation:
        kinds = [k for k, v in (("shape", self.shape), ("weight", self.weight)) if v is not None]
        if self.up is not None or self.down is not None:
            if self.up is None or self.down is None:
                raise ValueError("a weight variation with up needs down too (and the other way round)")
            kinds.append("up/down")
        if len(kinds) != 1:
            raise ValueError("a variation is one of: shape: {Collection.field: expression}, weight: "
                             f"expression, or up: and down: expressions (got {', '.join(kinds) or 'none'})")
        if self.shape is not None and not self.shape:
            raise ValueError("shape: needs at least one Collection.field: expression")
        return self

    def names(self, name: str) -> list[str]:
        """The variation axis entries it makes."""
        return [f"{name}_up", f"{name}_down"] if self.up is not None else [name]


class PseudoTerm(_Strict):
    process: str
    variation: str = "nominal"
    factor: float = 1.0
