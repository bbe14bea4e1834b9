"""What the sidecar and the operator share, and the only part of the sidecar
the operator imports: the sidecar config schema (`config`), the reference
profile and its binning (`profile`), the cumulative counts a sidecar reports
(`snapshot`), and the reader that turns Prometheus samples back into them
(`reader`)."""
