"""The kopf handlers: the only module that imports kopf.

Each handler is a thin shell: it reads what it needs from the API (`kube`),
asks pure functions what to do (`status`, `admission`, `inject`, `render`),
and writes the answer back as a status patch, an Event or a JSON patch.

Deletion: the analysis daemon makes kopf put a finalizer on every
ModelMonitor anyway (to stop the daemon cleanly), and `cleanup` is not
optional, so the finalizer stays until it has succeeded. For a canary it
first puts all traffic back on stable (`workloads.finalize`: the router's
`finalize`, the canary scaled to zero, the weight read back as 0), retrying
until that holds, as Flagger's finalizer does; then it deletes the sidecar
ConfigMap explicitly (the sidecar router needs it until then). The
ConfigMap's ownerReference stays as the safety net for when the operator is
not running.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonpatch
import kopf
import yaml
from pydantic import ValidationError

from driftline_operator import kube
from driftline_operator.api.names import CONFIG_KEY, GROUP, PLURAL, VERSION, config_map_name
from driftline_operator.api.spec import ModelMonitorSpec, spec_from
from driftline_operator.api.status import INVALID_SPEC, is_ready, upsert_condition
from driftline_operator.controller import alert_rules, manifests, reference, status, tokens
from driftline_operator.controller.loop import AnalysisLoop
from driftline_operator.controller.settings import OperatorConfig
from driftline_operator.controller.tls import write_self_signed
from driftline_operator.explain.remote import RemoteRunner
from driftline_operator.explain.worker import LazyPool
from driftline_operator.rollout import workloads
from driftline_operator.rollout.notices import routes_condition
from driftline_operator.rollout.notifier import Notifier
from driftline_operator.rollout.routers import RouterError, RouteTarget
from driftline_operator.rollout.routers.factory import router_for
from driftline_operator.webhook import admission, inject
from driftline_sidecar.contract.config import RoutingConfig

MONITORS = (GROUP, VERSION, PLURAL)

# The webhook's URL path is "/" + this id; the chart's MutatingWebhookConfiguration uses it.
WEBHOOK_ID = "inject-sidecar"
WEBHOOK_PATH = f"/{WEBHOOK_ID}"

# How soon a monitor waiting for its reference ConfigMap looks again.
REFERENCE_RETRY_SECONDS = 30.0
# How soon a deletion waiting for a canary's traffic to return to stable tries again.
FINALIZE_RETRY_SECONDS = 5.0
# How often a daemon of an invalid monitor re-reads its (possibly fixed) spec.
INVALID_RECHECK_SECONDS = 30.0


class _NamespacedWebhookServer(kopf.WebhookServer):
    """kopf's HTTPS webhook server, filling the pod's namespace from the request.

    Pods made by controllers (ReplicaSets) may arrive without
    metadata.namespace; the AdmissionReview's request.namespace always has it.
    """

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async def with_namespace(request: Any, **kwargs: Any) -> Any:
            payload = request.get("request") or {}
            obj = payload.get("object")
            if isinstance(obj, dict) and payload.get("namespace"):
                obj.setdefault("metadata", {}).setdefault("namespace", payload["namespace"])
            return await fn(request, **kwargs)

        async for client_config in super().__call__(with_namespace):
            yield client_config


def _webhook_server(config: OperatorConfig) -> kopf.WebhookServer:
    certfile, keyfile = config.certfile, config.keyfile
    if certfile is None or keyfile is None:
        # Local and test runs only: in a cluster the chart mounts the webhook's Secret.
        certfile, keyfile = write_self_signed(Path(tempfile.mkdtemp(prefix="driftline-tls-")))
    return _NamespacedWebhookServer(
        addr=config.webhook_host,
        port=config.webhook_port,
        certfile=str(certfile),
        pkeyfile=str(keyfile),
    )


# Two operators, two registries (see `replica`): every replica runs SERVING,
# which only reads (the index) and answers the webhook; only the holder of the
# Lease runs ACTING, which holds every handler that writes. Nothing here
# registers with kopf's default registry.
SERVING = kopf.OperatorRegistry()
ACTING = kopf.OperatorRegistry()


@kopf.on.login(registry=SERVING)
@kopf.on.login(registry=ACTING)
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The kubernetes client's credentials (in-cluster or KUBECONFIG), as
    kopf's default registry would pick them; explicit registries start empty."""
    return kopf.login_via_client(**kwargs)


@kopf.on.startup(registry=SERVING)
def configure_serving(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # No finalizer, progress or diff-base settings: this operator never writes
    # a ModelMonitor (its default finalizer name is not ACTING's, so it never
    # removes ACTING's either).
    settings.admission.server = _webhook_server(memo.config)
    if memo.get("dev"):
        # Only for a developer's cluster: in-cluster the chart owns the configuration.
        settings.admission.managed = f"driftline-operator.{GROUP}"


@kopf.on.startup(registry=ACTING)
def configure_acting(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    memo.api = kube.connect()
    memo.admin_key = tokens.operator_key(memo.config.keyfile)
    # Shared by every monitor's memo (kopf copies the memo per object, shallowly).
    explainer_url = memo.config.explainer_url
    memo.explanation_pool = LazyPool(
        processes=memo.config.explainer_processes,
        operator_per_minute=memo.config.explanations_per_minute,
        # The chart's explainer Deployment, when there is one; else local processes.
        runner=(lambda: RemoteRunner(explainer_url)) if explainer_url else None,
    )
    # One for all monitors: a receiver's queue keeps its notices in order.
    memo.notifier = Notifier(
        memo.config.receivers,
        logger=logging.getLogger("driftline_operator.notifications"),
        pagerduty_url=memo.config.pagerduty_url,
    )
    # Keep kopf's bookkeeping in annotations: the CRD's status schema is structural.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.persistence.finalizer = f"{GROUP}/finalizer"


@kopf.on.cleanup(registry=ACTING)
async def stop_explaining(memo: kopf.Memo, **_: Any) -> None:
    if "explanation_pool" in memo:
        await asyncio.to_thread(memo.explanation_pool.close)


@kopf.on.cleanup(registry=ACTING)
async def stop_notifying(memo: kopf.Memo, **_: Any) -> None:
    if "notifier" in memo:
        await memo.notifier.close()


# -- ModelMonitor: configuration ------------------------------------------------


def _warn(body: Any, *, reason: str, message: str) -> None:
    kopf.warn(body, reason=reason, message=message)


@kopf.on.resume(*MONITORS, id="reconcile", registry=ACTING)
@kopf.on.create(*MONITORS, id="reconcile", registry=ACTING)
@kopf.on.update(*MONITORS, id="reconcile", field="spec", registry=ACTING)
def reconcile(
    body: kopf.Body, name: str, namespace: str | None, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    assert namespace is not None  # ModelMonitors are namespaced: kopf always passes one
    raw = dict(body)
    now = status.now_rfc3339()
    try:
        spec = spec_from(raw)
    except ValidationError as error:
        message = status.invalid_spec_message(error)
        patch.status.update(status.not_ready(raw, reason=INVALID_SPEC, message=message, now=now))
        _warn(body, reason=INVALID_SPEC, message=f"ModelMonitor {namespace}/{name}: {message}")
        return  # nothing is created for it, and the webhook skips it

    problem = _reference_problem(memo.api, namespace, spec)
    if problem is not None:
        patch.status.update(
            status.not_ready(raw, reason=problem.reason, message=problem.message, now=now)
        )
        _warn(body, reason=problem.reason, message=problem.message)
        # Retried: a ConfigMap created or fixed later makes the monitor Ready.
        raise kopf.TemporaryError(problem.message, delay=REFERENCE_RETRY_SECONDS)

    routing, routing_problem = _routing(memo.api, namespace, name, spec)
    token = tokens.admin_token(memo.admin_key, namespace=namespace, name=name, uid=_uid(body))
    manifest = manifests.config_map(
        name, namespace, spec, owner=raw, admin_token=token, routing=routing
    )
    kube.apply(memo.api, kube.CONFIGMAPS, manifest)
    pods = kube.list_objects(memo.api, kube.PODS, namespace, selector=spec.selector)
    counts = status.pod_counts(pods, spec.selector)
    ready = status.ready(raw, config_map=manifest["metadata"]["name"], pods=counts, now=now)
    rules = alert_rules.apply_alert_rules(
        memo.api, name, namespace, spec, owner=raw, labels=memo.config.prometheus_rule_labels
    )
    ready["conditions"] = upsert_condition(ready["conditions"], rules, now=now)
    routed = routes_condition(spec.notifications, memo.notifier.receivers)
    ready["conditions"] = upsert_condition(ready["conditions"], routed, now=now)
    patch.status.update(ready)
    if routed.status == "False":
        _warn(
            body, reason=routed.reason, message=f"ModelMonitor {namespace}/{name}: {routed.message}"
        )
    if counts.not_injected:
        _warn(body, reason="PodsNotInjected", message=status.describe_pods(counts))
    if routing_problem is not None:
        _warn(body, reason="ShadowServiceNotFound", message=routing_problem)
        raise kopf.TemporaryError(routing_problem, delay=REFERENCE_RETRY_SECONDS)


def _uid(body: kopf.Body) -> str:
    return str(body.get("metadata", {}).get("uid", ""))


def _routing(
    api: Any, namespace: str, name: str, spec: ModelMonitorSpec
) -> tuple[RoutingConfig, str | None]:
    """The sidecars' routing section, and what keeps it from being complete.

    shadow: the mirror's URL (a named Service port resolved to its number).
    canary with the sidecar router: the weight the rollout has set so far,
    kept from the current ConfigMap, so re-rendering (a restarted operator,
    a spec change) never sends canary traffic back to stable behind its back.
    """
    rollout = spec.rollout
    if rollout.strategy == "shadow" and rollout.shadow_service is not None:
        service = rollout.shadow_service
        port = service.port
        if isinstance(port, str) and not port.isdigit():
            found = kube.read(api, kube.SERVICES, namespace, service.name) or {}
            numbers = [
                p["port"]
                for p in (found.get("spec") or {}).get("ports", [])
                if p.get("name") == port
            ]
            if not numbers:
                where = f"spec.rollout.shadowService: Service {namespace}/{service.name}"
                problem = (
                    f"{where} not found" if not found else f"{where} has no port named {port!r}"
                )
                return RoutingConfig(), f"{problem}; nothing is mirrored until it exists"
            port = numbers[0]
        return manifests.shadow_routing(spec, namespace=namespace, port=int(port)), None
    if rollout.strategy == "canary" and rollout.router == "sidecar":
        current = kube.read(api, kube.CONFIGMAPS, namespace, config_map_name(name)) or {}
        text = (current.get("data") or {}).get(CONFIG_KEY)
        try:
            document = yaml.safe_load(text) if text else None
            routing = RoutingConfig.model_validate((document or {}).get("routing") or {})
        except (yaml.YAMLError, ValidationError, AttributeError):
            routing = RoutingConfig()  # not ours to repair: the next weight rewrites it
        return RoutingConfig(
            canary_url=routing.canary_url, canary_weight=routing.canary_weight
        ), None
    return RoutingConfig(), None


def _reference_problem(
    api: Any, namespace: str, spec: ModelMonitorSpec
) -> reference.ReferenceProblem | None:
    """What keeps the reference profile from being used (missing, not JSON,
    not a profile), or None when it is fine or there is none."""
    if spec.reference is None:
        return None
    ref = spec.reference.config_map_ref
    config_map = kube.read(api, kube.CONFIGMAPS, namespace, ref.name)
    try:
        reference.load_reference(config_map, ref, namespace=namespace)
    except reference.ReferenceProblem as problem:
        return problem
    return None


@kopf.on.delete(*MONITORS, id="cleanup", registry=ACTING)
async def cleanup(
    body: kopf.Body,
    name: str,
    namespace: str | None,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    assert namespace is not None  # ModelMonitors are namespaced: kopf always passes one
    async with _acting(memo):
        await _finalize_rollout(body, name=name, namespace=namespace, memo=memo, logger=logger)
    config_map = config_map_name(name)
    if await asyncio.to_thread(kube.delete, memo.api, kube.CONFIGMAPS, namespace, config_map):
        logger.info(f"Deleted ConfigMap {namespace}/{config_map}.")


async def _finalize_rollout(
    body: kopf.Body, *, name: str, namespace: str, memo: kopf.Memo, logger: kopf.Logger
) -> None:
    """A canary's traffic all back on stable, or a retry (the finalizer stays)."""
    try:
        spec = spec_from(dict(body))
    except ValidationError:
        return  # an invalid monitor never routed anything
    if spec.rollout.strategy != "canary":
        return
    token = tokens.admin_token(memo.admin_key, namespace=namespace, name=name, uid=_uid(body))
    try:
        target = RouteTarget.from_spec(
            spec,
            namespace=namespace,
            monitor=name,
            config_map=config_map_name(name),
            config_key=CONFIG_KEY,
            admin_token=token,
        )
        router = router_for(spec.rollout.router, memo.api)
    except RouterError as error:
        logger.info(f"No canary traffic to put back on stable: {error}")
        return  # without both Deployments and a router, no traffic was ever split
    try:
        await workloads.finalize(memo.api, router=router, target=target)
    except workloads.NotFinalized as error:
        message = f"{error}; the ModelMonitor is deleted once it succeeds, retrying"
        logger.warning(message)
        _warn(body, reason="RolloutNotFinalized", message=message)
        raise kopf.TemporaryError(message, delay=FINALIZE_RETRY_SECONDS) from error
    logger.info(
        f"All traffic is back on stable Deployment {namespace}/{target.stable}; "
        f"canary Deployment {namespace}/{target.canary} is scaled to zero."
    )


# -- ModelMonitor: the analysis loop ----------------------------------------------


@kopf.daemon(*MONITORS, id="analysis", cancellation_timeout=10.0, registry=ACTING)
async def analysis(
    stopped: kopf.DaemonStopped,
    body: kopf.Body,
    name: str,
    namespace: str | None,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Every spec.analysis.interval: pods, collection, verdicts, status, Events.

    A daemon rather than a timer: the interval is per monitor and may change,
    and the loop keeps the previous collection to difference the next one.
    """
    assert namespace is not None  # ModelMonitors are namespaced: kopf always passes one
    loop = AnalysisLoop(
        api=memo.api,
        namespace=namespace,
        name=name,
        previous_status=body.get("status"),
        logger=logger,
        admin_token=tokens.admin_token(
            memo.admin_key, namespace=namespace, name=name, uid=_uid(body)
        ),
        explanation_pool=memo.explanation_pool,
        notifier=memo.notifier,
    )
    try:
        while not stopped:
            try:
                spec = spec_from(dict(body))
            except ValidationError:
                await stopped.wait(INVALID_RECHECK_SECONDS)  # reconcile reports it
                continue
            if is_ready(body):
                async with _acting(memo):
                    if stopped:  # deleted while waiting: `cleanup` has finalized it
                        break
                    await _analyse_once(loop, spec=spec, body=body, logger=logger, stopped=stopped)
            await stopped.wait(spec.analysis.interval.seconds)
    finally:
        await loop.close()


def _acting(memo: kopf.Memo) -> asyncio.Lock:
    """One monitor's rollout acts in one place at a time (kopf gives each
    object a memo of its own): a tick under way when the monitor is deleted
    finishes before `cleanup` puts traffic back on stable, and none starts after."""
    if "acting" not in memo:
        memo.acting = asyncio.Lock()
    lock: asyncio.Lock = memo.acting
    return lock


async def _analyse_once(
    loop: AnalysisLoop,
    *,
    spec: ModelMonitorSpec,
    body: kopf.Body,
    logger: kopf.Logger,
    stopped: kopf.DaemonStopped,
) -> None:
    """One tick; a failure is logged and the next tick tries again with the
    loop's state intact (a daemon restart would forget the previous collection)."""
    try:
        events = await loop.tick(spec=spec, body=dict(body))
    except Exception:
        logger.exception("Analysis failed; retrying at the next interval.")
        return
    if _deleted(stopped, body):
        # Deleted during the tick: its Events tell no one anything, and in a
        # namespace being deleted the API server refuses them (403). An
        # operator that is only exiting still posts them.
        return
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def _deleted(stopped: kopf.DaemonStopped, body: kopf.Body) -> bool:
    deleting = kopf.DaemonStoppingReason.RESOURCE_DELETED in (stopped.reason or [])
    return deleting or bool(body.metadata.get("deletionTimestamp"))


# -- Pods: the admission webhook ---------------------------------------------------


@kopf.index(*MONITORS, id="monitors", registry=SERVING)
def monitors(body: kopf.Body, namespace: str | None, **_: Any) -> dict[str, admission.MonitorEntry]:
    assert namespace is not None  # ModelMonitors are namespaced: kopf always passes one
    return {namespace: admission.entry_from(dict(body))}


@kopf.on.mutate(
    "", "v1", "pods", id=WEBHOOK_ID, operations=["CREATE"], ignore_failures=True, registry=SERVING
)
def inject_sidecar(
    body: kopf.Body,
    patch: kopf.Patch,
    warnings: list[str],
    memo: kopf.Memo,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    """Add the sidecar to a pod a ModelMonitor selects; never refuse a pod.

    Every failure is logged and surfaced as an admission warning, and the pod
    is admitted unchanged: a broken monitor must not stop a model from starting.
    """
    # kopf passes every index as a keyword named by its id; WebhookFn only promises **kwargs.
    monitors: kopf.Index[str, admission.MonitorEntry] = kwargs["monitors"]
    pod = dict(body)
    metadata = pod.get("metadata") or {}
    namespace = metadata.get("namespace") or ""
    who = f"pod {namespace}/{metadata.get('name') or metadata.get('generateName', '') + '*'}"
    try:
        config: OperatorConfig = memo.config
        reason = admission.skip_reason(
            pod, namespace=namespace, operator_namespace=config.namespace
        )
        if reason is not None:
            logger.debug(f"Not injecting {who}: {reason}.")
            return
        entry = admission.choose(monitors.get(namespace, ()), metadata.get("labels") or {})
        if entry is None or entry.spec is None:
            return
        settings = inject.InjectSettings(
            sidecar_image=config.sidecar_image, otlp_endpoint=config.otlp_endpoint
        )
        ops = inject.mutate(pod, monitor_name=entry.name, spec=entry.spec, settings=settings)
    except inject.InjectionError as error:
        logger.warning(f"Not injecting {who}: {error}")
        warnings.append(f"driftline: sidecar not injected: {error}")
        return
    except Exception as error:
        logger.exception(f"Not injecting {who}: unexpected error")
        warnings.append(f"driftline: sidecar not injected: internal error: {error}")
        return
    if ops:
        logger.info(f"Injecting the sidecar of ModelMonitor {entry.name} into {who}.")
        patch.fns.append(lambda raw: jsonpatch.apply_patch(raw, ops, in_place=True))
