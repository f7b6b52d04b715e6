"""Settings of the Thompson-sampled trust in the fusion's sources (``tasks/plan/trust.py``).

Each source of the blend (short and mid horizon edges, the RL size hint) keeps a
Normal-Inverse-Gamma posterior of the realised R-multiples it was credited with. The prior
below is weak on purpose: ``kappa0 = 1`` is one pseudo-episode at ``mu0 = 0`` R (no edge), and
``alpha0 = 2, beta0 = 1`` put the prior mean of the per-episode variance at
``beta0 / (alpha0 - 1) = 1`` R² (an episode's R spreads about one stop either way) while
keeping it finite. Seed 003 shrinks a source's evidence towards the configured mix by
``kappa / (kappa + 10)``; ``shrink_kappa`` is that 10, counted in closed episodes.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrustSettings(_Section):
    """Thompson-sampled trust in the blend's sources, updated by the nightly run."""

    enabled: bool = Field(
        True, description="Update the sources' posteriors from closed episodes at the end of "
        "every nightly run and, when a sampled blend moves a weight by min_change or more, "
        "write a new policy version for the next plan.")
    mu0: float = Field(
        0.0, ge=-5, le=5, description="Prior mean of a source's realised R per episode (0: no "
        "edge until the episodes say otherwise).")
    kappa0: float = Field(
        1.0, gt=0, le=1000, description="Prior strength of mu0, in pseudo-episodes.")
    alpha0: float = Field(
        2.0, gt=0, le=1000, description="Inverse-gamma shape of the per-episode variance of R "
        "(2: the prior mean of the variance, beta0 / (alpha0 - 1), is finite).")
    beta0: float = Field(
        1.0, gt=0, le=1000, description="Inverse-gamma scale of the per-episode variance of R "
        "(with alpha0 = 2: a prior variance of 1 R squared).")
    shrink_kappa: float = Field(
        10.0, gt=0, le=10000, description="Closed episodes at which a source's evidence gets "
        "half the say against the configured mix: its weight of evidence is n / (n + this) "
        "(seed 003: kappa / (kappa + 10)).")
    temperature: float = Field(
        0.5, gt=0, le=10, description="R per e-fold of the blend: a source whose sampled mean R "
        "is this much above another's gets e times its configured share relative to it.")
    min_change: float = Field(
        0.01, ge=0, le=1, description="Smallest move of any blend weight against the policy in "
        "force that is written as a new policy version (smaller moves change nothing).")
    seed: int = Field(
        3, ge=0, description="Seed of the Thompson draws; the draws of a night come from this "
        "seed and the session's date, so a re-run of the same night draws the same values.")
