"""Judging one monitor's traffic: windows differenced from cumulative counts
(`windows`), golden signals (`signals`), SLO verdicts (`slo`), drift and the
monitor's conditions (`judge`), the per-interval runner (`runner`) and the
operator's own metrics of what it concluded (`metrics`). No Kubernetes."""
