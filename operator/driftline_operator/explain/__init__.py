"""SHAP explanations of a model treated as a black box through its own protocol.

- ``model``: the model as a function of a matrix, one HTTP request per call,
  straight to the model container's port (never through the sidecar, so
  explanations are never counted as user traffic);
- ``background``: the rows features are masked with, from the reference profile;
- ``explainer``: ``shap`` over both, and what one explanation holds.
"""
