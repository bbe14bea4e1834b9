"""What a user declares and what Driftline reports: the ModelMonitor resource
(`spec`, `status`), the names Driftline gives things (`names`), label
selectors, and the CRD generated from the models (`crdgen`). Pure: no I/O."""
