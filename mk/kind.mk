# A local Driftline on kind (needs docker, kind, kubectl and helm on PATH).
# Included by the top-level Makefile:  include mk/kind.mk
#
#   make kind-up kind-images kind-load kind-install kind-example
#   make kind-down
#
# Images are tagged with the chart's appVersion so that the chart's defaults
# and examples/fraud (which runs the demo model from the sidecar image) use
# them as they are; `kind load` puts them on the nodes, no registry needed.

KIND ?= kind
KUBECTL ?= kubectl
HELM ?= $(if $(wildcard .venv/bin/helm),.venv/bin/helm,helm)
DOCKER ?= docker
KIND_CLUSTER ?= driftline
DRIFTLINE_NAMESPACE ?= driftline-system
IMAGE_REGISTRY ?= ghcr.io/driftline
IMAGE_TAG ?= $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}/\1/p' charts/driftline/Chart.yaml)
OPERATOR_IMAGE := $(IMAGE_REGISTRY)/operator:$(IMAGE_TAG)
SIDECAR_IMAGE := $(IMAGE_REGISTRY)/sidecar:$(IMAGE_TAG)
EXPLAINER_IMAGE := $(IMAGE_REGISTRY)/explainer:$(IMAGE_TAG)
KUBE_CONTEXT := kind-$(KIND_CLUSTER)

.PHONY: kind-demo kind-up images kind-images kind-load kind-install kind-example kind-explainer kind-down

# Everything, from nothing to a monitored model.
kind-demo: kind-up kind-load kind-install kind-example

kind-up:
	$(KIND) get clusters | grep -qx '$(KIND_CLUSTER)' || \
		$(KIND) create cluster --name $(KIND_CLUSTER) --config kind-config.yaml --wait 120s

images:
	$(DOCKER) build --target operator -t $(OPERATOR_IMAGE) .
	$(DOCKER) build --target sidecar -t $(SIDECAR_IMAGE) .

kind-images: images

kind-load: images
	$(KIND) load docker-image --name $(KIND_CLUSTER) $(OPERATOR_IMAGE) $(SIDECAR_IMAGE)

kind-install:
	$(HELM) upgrade --install driftline charts/driftline \
		--kube-context $(KUBE_CONTEXT) \
		--namespace $(DRIFTLINE_NAMESPACE) --create-namespace \
		--set operator.image.repository=$(IMAGE_REGISTRY)/operator \
		--set operator.image.tag=$(IMAGE_TAG) \
		--set sidecar.image.repository=$(IMAGE_REGISTRY)/sidecar \
		--set sidecar.image.tag=$(IMAGE_TAG) \
		--wait --timeout 5m

# The reference and the ModelMonitor first: once the monitor is Ready the
# webhook knows it, so the model's pods get the sidecar as they are created.
kind-example:
	$(KUBECTL) --context $(KUBE_CONTEXT) apply -f examples/fraud/reference-configmap.yaml -f examples/fraud/modelmonitor.yaml
	$(KUBECTL) --context $(KUBE_CONTEXT) wait --for=condition=Ready modelmonitor/fraud --timeout 120s
	$(KUBECTL) --context $(KUBE_CONTEXT) apply -k examples/fraud
	$(KUBECTL) --context $(KUBE_CONTEXT) rollout status deployment/fraud-v1 --timeout 180s
	$(KUBECTL) --context $(KUBE_CONTEXT) get modelmonitors,pods -l app=fraud -o wide

# Opt in, after kind-install: the explainer image (shap: minutes more to
# build, ~380 MB more) and the chart's explainer Deployment, which explains
# for ModelMonitors with spec.explain.enabled.
kind-explainer:
	$(DOCKER) build --target explainer -t $(EXPLAINER_IMAGE) .
	$(KIND) load docker-image --name $(KIND_CLUSTER) $(EXPLAINER_IMAGE)
	$(HELM) upgrade driftline charts/driftline \
		--kube-context $(KUBE_CONTEXT) --namespace $(DRIFTLINE_NAMESPACE) --reuse-values \
		--set explainer.enabled=true \
		--set explainer.image.repository=$(IMAGE_REGISTRY)/explainer \
		--set explainer.image.tag=$(IMAGE_TAG) \
		--wait --timeout 5m

kind-down:
	$(KIND) delete cluster --name $(KIND_CLUSTER)
