"""The admission webhook: which pods get the sidecar (`admission`), the JSON
patch that injects it (`inject`), and the sidecar container itself (`sidecar`)."""
