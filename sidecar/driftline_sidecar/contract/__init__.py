"""What the sidecar and the operator share, and the only part of the sidecar
the operator imports: the sidecar config schema (`config`), the reference
profile and its binning (`profile`), the cumulative counts a sidecar reports
(`snapshot`), the names of the Prometheus metrics they are kept in
(`metric_names`), and the one reader that turns those metrics' samples back
into a snapshot (`reader`), for the sidecar's `/v1/snapshot` and the
operator's Prometheus source alike."""
