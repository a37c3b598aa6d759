"""A small dimuon analysis: :class:`DimuonProcessor` histograms the opposite-sign dimuon mass."""

from __future__ import annotations

import awkward as ak
import hist
import numpy as np
from coffea import processor

__all__ = ["DimuonProcessor"]


class DimuonProcessor(processor.ProcessorABC):
    """Opposite-sign dimuon mass of the two leading good muons, with a cutflow.

    Good muons: pt > 10 GeV, |eta| < 2.4, tight ID, ``pfRelIso04_all < 0.15``.
    Events are weighted by ``genWeight`` (1 for data).

    Notes
    -----
    ``process`` returns ``{"hists": {"mass": hist.Hist}, "cutflow": {dataset:
    {"all", "two_muons", "opposite_sign": int}}, "sumw": {dataset: float}}``.
    """

    def empty_hists(self) -> dict[str, hist.Hist]:
        """Empty histograms, the shape of what :meth:`process` fills."""
        mass = hist.Hist(
            hist.axis.StrCategory([], growth=True, name="dataset", label="Dataset"),
            hist.axis.Regular(120, 0.0, 150.0, name="mass", label=r"$m_{\mu\mu}$ [GeV]"),
            storage=hist.storage.Weight(),
        )
        return {"mass": mass}

    def process(self, events):
        """Select muon pairs in one chunk of NanoEvents and fill the mass histogram."""
        dataset = events.metadata["dataset"]
        is_mc = "genWeight" in events.fields
        weight = ak.to_numpy(events.genWeight).astype(np.float64) if is_mc else np.ones(len(events))
        muons = events.Muon
        muons = muons[(muons.pt > 10) & (abs(muons.eta) < 2.4) & muons.tightId & (muons.pfRelIso04_all < 0.15)]
        two = ak.to_numpy(ak.num(muons) >= 2)
        pairs = ak.pad_none(muons, 2, axis=1)
        first, second = pairs[:, 0], pairs[:, 1]
        opposite = two & ak.to_numpy(ak.fill_none(first.charge != second.charge, False))
        mass = ak.to_numpy(ak.fill_none((first + second).mass, 0.0))
        hists = self.empty_hists()
        hists["mass"].fill(dataset=dataset, mass=mass[opposite], weight=weight[opposite])
        cutflow = {"all": len(events), "two_muons": int(two.sum()), "opposite_sign": int(opposite.sum())}
        return {"hists": hists, "cutflow": {dataset: cutflow}, "sumw": {dataset: float(weight.sum())}}

    def postprocess(self, accumulator):
        """Nothing to add after merging; returns ``accumulator`` unchanged."""
        return accumulator
