"""Changing a model safely: the state machine (`machine`), canary-vs-stable
comparison (`compare`), the per-tick loop that carries decisions out through
an actions interface (`loop`), Deployment changes (`workloads`), the alert
hook (`alerting`) and the traffic routers (`routers/`)."""
