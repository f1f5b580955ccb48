#!/usr/bin/env bash
# Checks deploy/ and the observability part of docker-compose.yml without a cluster, a
# Prometheus or a Docker engine:
#
#   render       kustomize renders deploy/k8s/base and every overlay in deploy/k8s/overlays
#   kubernetes   every rendered object validates, strictly (an unknown field fails),
#                against the Kubernetes JSON schemas of kubernetes-validate, and the objects
#                agree with each other (selectors, ports, names, grace periods, no secret
#                value outside a Secret)
#   keda         ScaledObjects and TriggerAuthentications validate against KEDA's CRD
#                schemas kept in deploy/k8s/schemas
#   rules        promtool check rules deploy/prometheus/alerts.yml
#   rule tests   promtool test rules deploy/prometheus/alerts_test.yml (the alerts fire)
#   prometheus   promtool check config on deploy/prometheus/prometheus.yml and kubernetes.yml
#   dashboard    deploy/grafana/courier.json is a well-formed dashboard whose data source
#                matches the provisioning, and every query of it (and the ScaledObject's)
#                parses (promtool, as recording rules)
#   metrics      every metric and label that the dashboard, the alert rules, their tests
#                and the ScaledObject use is listed in deploy/metrics.txt
#   compose      docker-compose.yml: the observability profile's services, networks and
#                mounts (and `docker compose config` where a Compose plugin is installed)
#
# Then each check runs once more on a copy of deploy/ broken on purpose, and must refuse
# it: a check that cannot fail proves nothing. One line per check.
#
# Tools: kubectl (its built-in kustomize, v5 or later) or kustomize; promtool from the PATH
# or from Debian's `prometheus` package, unpacked into target/deploy-tools; Python tools in
# target/pyenv (scripts/python-tools.sh). As root it installs what is missing.
# Environment: K8S_VERSIONS (default "1.31 1.37"), the Kubernetes versions to validate for.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

K8S_VERSIONS=${K8S_VERSIONS:-"1.31 1.37"}
TOOLS=target/deploy-tools
PY=target/pyenv/bin/python

die() { printf 'check-deploy: %s\n' "$*" >&2; exit 1; }
is_root() { [[ $(id -u) -eq 0 ]]; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
trap 'echo "check-deploy: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

# --- tools ----------------------------------------------------------------------------------
apt_updated=false
apt_ready() {
    # apt-cache knows nothing before the first `apt-get update` of a fresh machine.
    if ! $apt_updated && ! apt-cache show "$1" >/dev/null 2>&1; then
        is_root || die "the package lists do not know $1; run apt-get update as root"
        apt-get update -qq
        apt_updated=true
    fi
}

if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    is_root || die "python3-venv is missing; install with: sudo apt-get install -y python3 python3-venv"
    apt_ready python3-venv
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
fi
scripts/python-tools.sh

# kustomize v5 reads `labels` (with includeTemplates) and components: kubectl 1.27 and later.
kustomize_version() { grep -oE 'v[0-9]+\.[0-9]+\.[0-9]+' | head -n 1; }
KUSTOMIZE=()
if command -v kustomize >/dev/null 2>&1; then
    v=$(kustomize version 2>/dev/null | kustomize_version || true)
    if [[ ${v#v} =~ ^([5-9]|[1-9][0-9])\. ]]; then
        KUSTOMIZE=(kustomize build)
        RENDERER="kustomize $v"
    fi
fi
if ((${#KUSTOMIZE[@]} == 0)) && command -v kubectl >/dev/null 2>&1; then
    v=$(kubectl version --client 2>/dev/null | grep -i kustomize | kustomize_version || true)
    if [[ ${v#v} =~ ^([5-9]|[1-9][0-9])\. ]]; then
        KUSTOMIZE=(kubectl kustomize)
        RENDERER="kubectl $(kubectl version --client 2>/dev/null | grep -i '^client' | kustomize_version), kustomize $v"
    fi
fi
if ((${#KUSTOMIZE[@]} == 0)); then
    # Debian's kubernetes-client, where it is recent enough (bookworm's is 1.20, whose
    # kustomize v2.0.3 cannot read these kustomizations).
    if is_root; then
        apt_ready kubernetes-client
        candidate=$(apt-cache policy kubernetes-client | awk '/Candidate:/ { print $2 }')
        if [[ $candidate =~ ^(1\.(2[7-9]|[3-9][0-9])|[2-9])\. ]]; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null
            KUSTOMIZE=(kubectl kustomize)
            RENDERER="kubectl $candidate (Debian's kubernetes-client)"
        fi
    fi
    ((${#KUSTOMIZE[@]})) || die "needs kustomize v5 or later: kubectl 1.27+ (kubectl kustomize) or a kustomize binary on the PATH"
fi

PROMTOOL=
if command -v promtool >/dev/null 2>&1; then
    PROMTOOL=$(command -v promtool)
elif [[ -x $TOOLS/promtool ]] && "$TOOLS/promtool" --version >/dev/null 2>&1; then
    PROMTOOL=$PWD/$TOOLS/promtool
else
    # promtool alone, from Debian's `prometheus` package, without installing the server
    # (and its service) on this machine.
    apt_ready prometheus
    deb=$WORK/deb
    mkdir -p "$deb"
    # (apt warns that it downloads unsandboxed as root: not worth showing)
    if ! (cd "$deb" && apt-get download -qq prometheus 2>&1 | { grep -v 'unsandboxed as root' >&2 || true; }); then
        die "could not download Debian's prometheus package (for promtool)"
    fi
    debfile=$(find "$deb" -name 'prometheus_*.deb' | head -n 1)
    [[ -n $debfile ]] || die "no prometheus package in what apt-get downloaded (for promtool)"
    dpkg-deb -x "$debfile" "$deb/x"
    mkdir -p "$TOOLS"
    cp "$deb/x/usr/bin/promtool" "$TOOLS/promtool.new"
    mv "$TOOLS/promtool.new" "$TOOLS/promtool"
    PROMTOOL=$PWD/$TOOLS/promtool
fi
PROMTOOL_VERSION=$("$PROMTOOL" --version 2>&1 | head -n 1 | grep -oE '[0-9]+\.[0-9]+\.[0-9]+[^ ]*' | head -n 1)
KV_VERSION=$("$PY" -c 'import kubernetes_validate.version as v; print(v.__version__)')

# --- the Python side of the checks -------------------------------------------------------------
read -r -d '' PYCHECK <<'PY' || true
import functools, json, re, sys
from pathlib import Path

import yaml

def fail(msgs):
    for m in msgs:
        print("  " + m)
    sys.exit(1)

def load_all(path):
    return [d for d in yaml.safe_load_all(Path(path).read_text()) if d]

def rendered(paths):
    """{render name: [objects]} from the rendered files."""
    return {Path(p).stem: load_all(p) for p in paths}

# ---- kubernetes: strict schemas, then how the objects fit together ----------------------
SECRET_KEYS = {"DATABASE_URL", "REDIS_URL", "COURIER__DATABASE__URL", "COURIER__REDIS__URL",
               "COURIER__SECRETS__ENCRYPTION_KEY", "COURIER__SECRETS__PREVIOUS_ENCRYPTION_KEYS",
               "COURIER__SIGNING__SECRETS"}

def containers(pod):
    return pod.get("containers", []) + pod.get("initContainers", [])

def check_kubernetes(versions, paths):
    import kubernetes_validate.utils as kv
    # Each validate() reads the (large) schema files again: read each once.
    kv.schema_contents = functools.lru_cache(maxsize=None)(kv.schema_contents)
    errors, count = [], 0
    for name, objs in rendered(paths).items():
        for o in objs:
            ident = f"{name}: {o.get('kind')}/{o.get('metadata', {}).get('name')}"
            if o.get("apiVersion", "").startswith("keda.sh/"):
                continue  # the keda check
            count += 1
            for v in versions:
                try:
                    kv.validate(o, v, strict=True)
                except kv.ValidationError as e:
                    path = ".".join(str(p) for p in e.path)
                    errors.append(f"{ident} (Kubernetes {v}): {path}: {e.message}")
                except kv.SchemaNotFoundError as e:
                    errors.append(f"{ident}: {e.message}")
                except kv.VersionNotSupportedError:
                    fail([f"kubernetes-validate {kv.__version__} has no schemas for Kubernetes {v}"])
        errors += consistency(name, objs)
    if errors:
        fail(errors)
    print(f"{count} objects")

def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

def consistency(name, objs):
    errs = []
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    deployments = by_kind.get("Deployment", [])
    workloads = deployments + by_kind.get("Job", [])
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    generated = {o["metadata"]["name"] for o in objs if o["kind"] in ("Secret", "ConfigMap")}

    def pod_of(w):
        return w["spec"]["template"]

    for w in workloads:
        ident = f"{name}: {w['kind']}/{w['metadata']['name']}"
        tmpl = pod_of(w)
        labels = tmpl.get("metadata", {}).get("labels", {})
        sel = w["spec"].get("selector", {}).get("matchLabels")
        if w["kind"] == "Deployment" and not matches(sel, labels):
            errs.append(f"{ident}: selector {sel} does not match the pod labels {labels}")
        spec = tmpl["spec"]
        psc = spec.get("securityContext", {})
        for c in containers(spec):
            csc = c.get("securityContext", {})
            cid = f"{ident} container {c['name']}"
            if not (csc.get("runAsNonRoot", psc.get("runAsNonRoot"))):
                errs.append(f"{cid}: runAsNonRoot is not set")
            if csc.get("runAsUser", psc.get("runAsUser")) != 10001:
                errs.append(f"{cid}: runAsUser is not 10001 (the images' user)")
            if csc.get("readOnlyRootFilesystem") is not True:
                errs.append(f"{cid}: readOnlyRootFilesystem is not true")
            res = c.get("resources", {})
            if not res.get("requests") or not res.get("limits"):
                errs.append(f"{cid}: resource requests and limits are not both set")
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                port = c.get(probe, {}).get("httpGet", {}).get("port")
                if isinstance(port, str) and port not in ports:
                    errs.append(f"{cid}: {probe} names port {port!r}, which the container lacks")
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            for key in SECRET_KEYS & {k for k, v in env.items() if v is not None}:
                errs.append(f"{cid}: {key} is set inline; it belongs in the Secret courier-secrets")
            refs = [r for e in c.get("envFrom", []) for r in [e.get("secretRef"), e.get("configMapRef")] if r]
            for r in refs:
                n = r["name"]
                if n not in generated and n not in ("courier-secrets", "courier-config"):
                    errs.append(f"{cid}: envFrom names {n}, which this render does not hold")
            if not any("secretRef" in e for e in c.get("envFrom", [])):
                errs.append(f"{cid}: takes no environment from the Secret")
            component = labels.get("app.kubernetes.io/component")
            if component == "api" and w["kind"] == "Deployment":
                if env.get("COURIER__SERVER__MIGRATE_ON_START") != "false":
                    errs.append(f"{cid}: COURIER__SERVER__MIGRATE_ON_START is not \"false\"")
                for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                    if c.get(probe, {}).get("httpGet", {}).get("path") != path:
                        errs.append(f"{cid}: {probe} is not GET {path}")
            if component == "worker":
                grace_ms = int(env.get("COURIER__WORKER__SHUTDOWN_GRACE_MS") or 100000)
                period = spec.get("terminationGracePeriodSeconds", 30)
                if period * 1000 <= grace_ms:
                    errs.append(f"{cid}: terminationGracePeriodSeconds {period} is not above the "
                                f"worker's shutdown grace of {grace_ms} ms")
                mport = env.get("COURIER__WORKER__METRICS_PORT")
                if mport is None or int(mport) not in ports.values():
                    errs.append(f"{cid}: COURIER__WORKER__METRICS_PORT is not one of its ports")
                for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                    p = c.get(probe, {}).get("httpGet", {})
                    port = ports.get(p.get("port"), p.get("port"))
                    if p.get("path") != path or str(port) != str(mport):
                        errs.append(f"{cid}: {probe} is not GET {path} on the metrics port")

    for s in by_kind.get("Service", []):
        ident = f"{name}: Service/{s['metadata']['name']}"
        targets = [d for d in deployments if matches(s["spec"].get("selector"), pod_of(d)["metadata"].get("labels", {}))]
        if not targets:
            errs.append(f"{ident}: its selector matches no Deployment's pods")
        for port in s["spec"].get("ports", []):
            tp = port.get("targetPort")
            for d in targets:
                have = [p for c in pod_of(d)["spec"]["containers"] for p in c.get("ports", [])]
                if not any(tp in (p.get("name"), p["containerPort"]) for p in have):
                    errs.append(f"{ident}: targetPort {tp} is no port of Deployment/{d['metadata']['name']}")
    for p in by_kind.get("PodDisruptionBudget", []):
        if not any(matches(p["spec"]["selector"].get("matchLabels"), pod_of(d)["metadata"].get("labels", {})) for d in deployments):
            errs.append(f"{name}: PodDisruptionBudget/{p['metadata']['name']}: its selector matches no Deployment's pods")
    for h in by_kind.get("HorizontalPodAutoscaler", []) + by_kind.get("ScaledObject", []):
        ref = h["spec"]["scaleTargetRef"]
        if (ref.get("kind", "Deployment"), ref["name"]) not in names:
            errs.append(f"{name}: {h['kind']}/{h['metadata']['name']}: scales {ref['name']}, which this render lacks")
    for cm in by_kind.get("ConfigMap", []):
        for key in SECRET_KEYS & set(cm.get("data", {})):
            errs.append(f"{name}: ConfigMap/{cm['metadata']['name']}: holds {key}; it belongs in the Secret")
    if name == "base" and "Secret" in by_kind:
        errs.append("base: holds a Secret; secret values belong in an overlay or in the cluster")
    return errs

# ---- keda: the CRD schemas kept in the repository ----------------------------------------
def check_keda(schema_dir, paths):
    import jsonschema
    schemas = {
        "ScaledObject": json.loads(Path(schema_dir, "keda-scaledobject.json").read_text()),
        "TriggerAuthentication": json.loads(Path(schema_dir, "keda-triggerauthentication.json").read_text()),
    }
    errors, counts = [], {}
    for name, objs in rendered(paths).items():
        auths = {o["metadata"]["name"] for o in objs if o.get("kind") == "TriggerAuthentication"}
        for o in objs:
            if not o.get("apiVersion", "").startswith("keda.sh/"):
                continue
            kind = o.get("kind")
            ident = f"{name}: {kind}/{o.get('metadata', {}).get('name')}"
            schema = schemas.get(kind)
            if schema is None:
                errors.append(f"{ident}: no schema for {kind} in {schema_dir}")
                continue
            counts[kind] = counts.get(kind, 0) + 1
            validator = jsonschema.Draft202012Validator(schema, format_checker=None)
            for e in sorted(validator.iter_errors(o), key=lambda e: list(e.path)):
                path = ".".join(str(p) for p in e.path)
                errors.append(f"{ident}: {path}: {e.message}")
            if kind == "ScaledObject" and isinstance(o.get("spec"), dict):
                spec = o["spec"]
                # The CRD's CEL rule.
                if spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100):
                    errors.append(f"{ident}: minReplicaCount must be less than or equal to maxReplicaCount")
                for t in spec.get("triggers") or []:
                    ref = (t.get("authenticationRef") or {})
                    if ref and ref.get("kind", "TriggerAuthentication") == "TriggerAuthentication" \
                            and ref.get("name") not in auths:
                        errors.append(f"{ident}: trigger {t.get('name')} uses TriggerAuthentication "
                                      f"{ref.get('name')}, which this render lacks")
    if not counts.get("ScaledObject"):
        errors.append("no ScaledObject in any render")
    if errors:
        fail(errors)
    print(", ".join(f"{n} {k}" for k, n in sorted(counts.items())))

# ---- PromQL: names, labels and functions ---------------------------------------------------
FUNCTIONS = set("""
abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes clamp
clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year days_in_month
deg delta deriv exp floor histogram_avg histogram_count histogram_fraction histogram_quantile
histogram_stddev histogram_stdvar histogram_sum holt_winters hour idelta increase irate
label_join label_replace last_over_time ln log10 log2 mad_over_time max_over_time min_over_time
minute month pi predict_linear present_over_time quantile_over_time rad rate resets round scalar
sgn sin sinh sort sort_desc sort_by_label sort_by_label_desc sqrt stddev_over_time
stdvar_over_time sum_over_time tan tanh time timestamp vector year
""".split())
AGGREGATIONS = set("sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio".split())
KEYWORDS = set("and or unless bool offset by without on ignoring group_left group_right atan2 inf nan".split())
LABEL_LISTS = set("by without on ignoring group_left group_right".split())
TARGET_LABELS = {"instance", "job"}
TOKEN = re.compile(r"""
    (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<var>\$\{[^}]*\}|\$[A-Za-z_]\w*)
  | (?P<dur>\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*(?![\w:]))
  | (?P<num>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<id>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<ws>\s+)
  | (?P<op>.)
""", re.X | re.S)

def load_metrics(path):
    known = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 3 or fields[1] not in ("counter", "gauge", "histogram"):
            raise SystemExit(f"{path}: bad line: {line!r} (want: name type labels)")
        name, kind, labels = fields
        labels = set() if labels == "-" else set(labels.split(","))
        if kind == "histogram":
            known[name + "_bucket"] = labels | {"le"}
            known[name + "_sum"] = labels
            known[name + "_count"] = labels
        else:
            known[name] = labels
    return known

def promql_problems(expr, known):
    """Metric names, label names and functions of one expression that are not known."""
    toks = [(m.lastgroup, m.group()) for m in TOKEN.finditer(expr) if m.lastgroup != "ws"]
    problems, metrics, label_uses = [], [], []
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else None
        if kind == "op" and text == "{":
            owner = toks[i - 1][1] if i > 0 and toks[i - 1][0] == "id" else None
            j = i + 1
            while j < len(toks) and toks[j][1] != "}":
                if toks[j][0] == "id" and j + 1 < len(toks) and toks[j + 1][1] in ("=", "!", "=~", "!~"):
                    label_uses.append((toks[j][1], owner))
                j += 1
            i = j + 1
            continue
        if kind == "id":
            if text in LABEL_LISTS and nxt == "(":
                j = i + 2
                while j < len(toks) and toks[j][1] != ")":
                    if toks[j][0] == "id":
                        label_uses.append((toks[j][1], None))
                    j += 1
                i = j + 1
                continue
            if text in AGGREGATIONS and nxt in ("by", "without"):
                pass  # sum by (queue) (...)
            elif nxt == "(":
                if text not in FUNCTIONS and text not in AGGREGATIONS:
                    problems.append(f"unknown function {text}")
            elif text not in KEYWORDS:
                metrics.append(text)
                if text not in known:
                    problems.append(f"unknown metric {text}")
        i += 1
    everything = set().union(*(known.get(m, set()) for m in metrics)) | TARGET_LABELS
    for label, owner in label_uses:
        if label == "__name__" or (owner and owner not in known):
            continue
        allowed = (known.get(owner, set()) | TARGET_LABELS) if owner else everything
        if label not in allowed:
            problems.append(f"unknown label {label}" + (f" on {owner}" if owner else ""))
    if not metrics:
        problems.append("selects no metric")
    return problems

def expressions(deploy, rendered_paths):
    """(where, PromQL) of every query in deploy/ and in the rendered ScaledObjects."""
    out = []
    for g in yaml.safe_load(Path(deploy, "prometheus/alerts.yml").read_text())["groups"]:
        for r in g["rules"]:
            out.append((f"alerts.yml {r.get('alert') or r.get('record')}", r["expr"]))
    tests = yaml.safe_load(Path(deploy, "prometheus/alerts_test.yml").read_text())
    for t in tests.get("tests", []):
        for s in t.get("input_series", []):
            out.append(("alerts_test.yml series", s["series"]))
    dash = json.loads(Path(deploy, "grafana/courier.json").read_text())
    for p in panels(dash):
        for t in p.get("targets", []):
            out.append((f"courier.json panel {p.get('title')!r} {t.get('refId')}", t.get("expr", "")))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query", "") if isinstance(q, dict) else q
            m = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*([A-Za-z_]\w*)\s*\)\s*", q or "")
            expr = f"{m.group(1)}{{{m.group(2)}!=\"\"}}" if m else q
            out.append((f"courier.json variable {v.get('name')}", expr))
    for path in rendered_paths:
        for o in load_all(path):
            if o.get("kind") == "ScaledObject":
                for t in o["spec"].get("triggers") or []:
                    if t.get("type") == "prometheus":
                        out.append((f"{Path(path).stem}: ScaledObject/{o['metadata']['name']}",
                                    t["metadata"].get("query", "")))
    return out

def check_metrics(deploy, rendered_paths):
    known = load_metrics(Path(deploy, "metrics.txt"))
    errors, n = [], 0
    for where, expr in expressions(deploy, rendered_paths):
        n += 1
        for p in promql_problems(expr, known):
            errors.append(f"{where}: {p} (not in deploy/metrics.txt): {expr.strip()}")
    if errors:
        fail(errors)
    print(f"{n} queries, {len(known)} series names")

# ---- the Grafana dashboard and its provisioning ------------------------------------------
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h",
                "${__rate_interval}": "5m", "${__interval}": "1m", "${__range}": "1h"}

def panels(dash):
    for p in dash.get("panels", []):
        yield p
        yield from p.get("panels", [])

def check_dashboard(deploy, rules_out, rendered_paths):
    errors = []
    path = Path(deploy, "grafana/courier.json")
    try:
        dash = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        fail([f"{path}: not JSON: {e}"])
    for key, kind in (("uid", str), ("title", str), ("schemaVersion", int), ("panels", list)):
        if not isinstance(dash.get(key), kind):
            errors.append(f"courier.json: {key} is missing or not a {kind.__name__}")
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds_var = variables.get("datasource", {})
    ds_files = list(Path(deploy, "grafana/provisioning/datasources").glob("*.yml"))
    provisioned = [d for f in ds_files for d in yaml.safe_load(f.read_text()).get("datasources", [])]
    uids = {d.get("uid") for d in provisioned if d.get("type") == "prometheus"}
    if ds_var.get("type") != "datasource" or ds_var.get("query") != "prometheus":
        errors.append("courier.json: no `datasource` variable of type prometheus")
    elif ds_var.get("current", {}).get("value") not in uids:
        errors.append(f"courier.json: the datasource variable's default {ds_var.get('current', {}).get('value')!r} "
                      f"is no provisioned Prometheus uid {sorted(uids)}")
    providers = [p for f in Path(deploy, "grafana/provisioning/dashboards").glob("*.yml")
                 for p in yaml.safe_load(f.read_text()).get("providers", [])]
    if not any(p.get("type") == "file" and p.get("options", {}).get("path") for p in providers):
        errors.append("grafana/provisioning/dashboards: no file provider with a path")
    ids, rules = set(), []
    for p in panels(dash):
        pid = p.get("id")
        where = f"courier.json panel {p.get('title')!r}"
        if pid in ids or not isinstance(pid, int):
            errors.append(f"{where}: id {pid!r} is missing or used twice")
        ids.add(pid)
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in "xywh") or g.get("x", 0) + g.get("w", 0) > 24:
            errors.append(f"{where}: gridPos {g} does not fit the 24 columns")
        if p.get("type") == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${datasource}":
            errors.append(f"{where}: data source is not the ${{datasource}} variable")
        refs = [t.get("refId") for t in p.get("targets", [])]
        if not refs or len(set(refs)) != len(refs):
            errors.append(f"{where}: no targets, or refIds used twice")
        for t in p.get("targets", []):
            expr = t.get("expr") or ""
            if not expr.strip():
                errors.append(f"{where}: target {t.get('refId')} has no expr")
                continue
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            for var in re.findall(r"\$\{?(\w+)\}?", expr):
                if var not in variables:
                    errors.append(f"{where}: uses ${var}, which is no dashboard variable")
                expr = re.sub(r"\$\{?" + var + r"\}?", ".*", expr)
            rules.append({"record": f"courier_dashboard:panel_{pid}_{t.get('refId')}", "expr": expr})
    for path in rendered_paths:
        for o in load_all(path):
            if o.get("kind") == "ScaledObject":
                for i, t in enumerate(o["spec"].get("triggers") or []):
                    if t.get("type") == "prometheus":
                        rules.append({"record": f"courier_keda:{Path(path).stem.replace('-', '_')}_{i}",
                                      "expr": t["metadata"]["query"]})
    Path(rules_out).write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    if errors:
        fail(errors)
    print(f"{len(ids)} panels")

# ---- docker-compose.yml -----------------------------------------------------------------
def check_compose(root):
    root = Path(root)
    errors = []
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())
    services = compose.get("services", {})
    for name in ("prometheus", "grafana"):
        s = services.get(name)
        if not s:
            errors.append(f"no service {name}")
            continue
        if "observability" not in s.get("profiles", []):
            errors.append(f"{name}: not in the profile observability")
        for v in s.get("volumes", []):
            src = v.split(":", 1)[0] if isinstance(v, str) else v.get("source", "")
            if src.startswith("."):
                if not (root / src).exists():
                    errors.append(f"{name}: mounts {src}, which does not exist")
            elif src not in compose.get("volumes", {}):
                errors.append(f"{name}: volume {src} is not declared")
        for net in s.get("networks", []):
            if net not in compose.get("networks", {}):
                errors.append(f"{name}: network {net} is not declared")
    if "internal" not in services.get("prometheus", {}).get("networks", []):
        errors.append("prometheus: not on the network `internal`, where the API and workers are")
    worker_env = services.get("worker", {}).get("environment", {})
    if str(worker_env.get("COURIER__WORKER__METRICS_PORT")) != "9464":
        errors.append("worker: COURIER__WORKER__METRICS_PORT is not 9464")
    for name in ("redis", "postgres", "migrate", "api", "worker"):
        if name not in services or services[name].get("profiles"):
            errors.append(f"{name}: missing, or moved into a profile")
    prom = yaml.safe_load((root / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom.get("scrape_configs", [])}
    api = [t for s in jobs.get("courier-api", {}).get("static_configs", []) for t in s.get("targets", [])]
    if "api:8080" not in api:
        errors.append("prometheus.yml: job courier-api does not scrape api:8080")
    sd = jobs.get("courier-worker", {}).get("dns_sd_configs", [{}])[0]
    if sd.get("names") != ["worker"] or sd.get("type") != "A" or sd.get("port") != 9464:
        errors.append("prometheus.yml: job courier-worker does not find the workers by DNS (worker, A, 9464)")
    if errors:
        fail(errors)
    print(f"{len(services)} services")

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "kubernetes":
        check_kubernetes(args[0].split(), args[1:])
    elif cmd == "keda":
        check_keda(args[0], args[1:])
    elif cmd == "metrics":
        check_metrics(args[0], args[1:])
    elif cmd == "dashboard":
        check_dashboard(args[0], args[1], args[2:])
    elif cmd == "compose":
        check_compose(args[0])
    elif cmd == "k8s-static":
        # prometheus kubernetes.yml for a promtool without Kubernetes discovery: each
        # kubernetes_sd_configs becomes a static target, the rest stays as it is.
        conf = yaml.safe_load(Path(args[0]).read_text())
        for job in conf.get("scrape_configs", []):
            if job.pop("kubernetes_sd_configs", None) is not None:
                job["static_configs"] = [{"targets": ["pod.courier.svc:8080"]}]
        Path(args[1]).write_text(yaml.safe_dump(conf))
    else:
        raise SystemExit(f"unknown check {cmd}")
PY
pycheck() { "$PY" -c "$PYCHECK" "$@"; }

# --- the checks: each takes the root of a tree (this repository or a broken copy) -----------------
# and writes what it found to stdout; it fails with a non-zero status.

# Rendered objects of a tree, one file per kustomization, in $2.
render_dir() { printf '%s/rendered-%s' "$WORK" "$(basename "$1")"; }

check_render() {
    local root=$1 out
    out=$(render_dir "$root")
    rm -rf "$out"
    mkdir -p "$out"
    local dirs=("$root/deploy/k8s/base") summary=() d
    while IFS= read -r d; do dirs+=("$d"); done < <(find "$root/deploy/k8s/overlays" -mindepth 1 -maxdepth 1 -type d | sort)
    for d in "${dirs[@]}"; do
        local name=${d#"$root/deploy/k8s/"}
        name=${name#overlays/}
        "${KUSTOMIZE[@]}" "$d" >"$out/$name.yaml" 2>"$out/$name.err" || { cat "$out/$name.err"; return 1; }
        # kustomize warns (deprecated fields) on stderr without failing: refuse those too.
        if [[ -s $out/$name.err ]]; then cat "$out/$name.err"; return 1; fi
        summary+=("$name $(grep -c '^kind:' "$out/$name.yaml")")
    done
    local IFS=, joined
    joined="${summary[*]}"
    echo "${joined//,/, }"
}
rendered_files() { find "$(render_dir "$1")" -name '*.yaml' | sort; }

check_kubernetes() { mapfile -t files < <(rendered_files "$1"); pycheck kubernetes "$K8S_VERSIONS" "${files[@]}"; }
check_keda() { mapfile -t files < <(rendered_files "$1"); pycheck keda "$1/deploy/k8s/schemas" "${files[@]}"; }
# promtool_quiet args...: runs promtool, keeps its output, prints it when it fails.
promtool_quiet() { local out; out=$("$PROMTOOL" "$@" 2>&1) || { echo "$out"; return 1; }; }
check_rules() {
    promtool_quiet check rules "$1/deploy/prometheus/alerts.yml" || return 1
    echo "$(grep -c '^ *- alert:' "$1/deploy/prometheus/alerts.yml") alerts"
}
check_rule_tests() {
    (cd "$1/deploy/prometheus" && promtool_quiet test rules alerts_test.yml) || return 1
    echo "$(grep -c '^ *- interval:' "$1/deploy/prometheus/alerts_test.yml") scenarios"
}
check_prometheus() {
    promtool_quiet check config "$1/deploy/prometheus/prometheus.yml" || return 1
    # Debian's promtool is built without Kubernetes discovery: check kubernetes.yml with a
    # static target in place of kubernetes_sd_configs (the relabelling is checked as is).
    local dir
    dir=$(mktemp -d -p "$WORK")
    cp "$1/deploy/prometheus/alerts.yml" "$dir/"
    pycheck k8s-static "$1/deploy/prometheus/kubernetes.yml" "$dir/kubernetes.yml" || return 1
    promtool_quiet check config "$dir/kubernetes.yml" || return 1
    echo "prometheus.yml, kubernetes.yml"
}
check_dashboard() {
    local rules
    rules=$WORK/dashboard-queries-$(basename "$1").yml
    mapfile -t files < <(rendered_files "$1")
    local panels
    panels=$(pycheck dashboard "$1/deploy" "$rules" "${files[@]}") || { echo "$panels"; return 1; }
    # Every query parses as PromQL: promtool reads them as recording rules.
    promtool_quiet check rules "$rules" || return 1
    echo "$panels, $(grep -c 'record:' "$rules") queries parse"
}
check_metrics() { mapfile -t files < <(rendered_files "$1"); pycheck metrics "$1/deploy" "${files[@]}"; }
check_compose() {
    pycheck compose "$1" || return 1
    if docker compose version >/dev/null 2>&1; then
        local env=$WORK/compose.env
        printf 'REDIS_PASSWORD=x\nPOSTGRES_PASSWORD=x\nCOURIER__SECRETS__ENCRYPTION_KEY=x\n' >"$env"
        docker compose --project-directory "$1" -f "$1/docker-compose.yml" --env-file "$env" \
            --profile observability config -q 2>&1 || return 1
        echo "docker compose config: ok"
    fi
}

# --- broken copies --------------------------------------------------------------------------------
# A copy of what the checks read, with one file changed: break NAME FILE PYTHON-EXPR, where
# the expression maps the file's text `s` to the broken text (and must change it).
break_copy() {
    local name=$1 file=$2 expr=$3 root=$WORK/broken-$1
    rm -rf "$root"
    mkdir -p "$root"
    cp -r deploy docker-compose.yml "$root/"
    "$PY" - "$root/$file" "$expr" <<'PY' || exit 1
import sys
path, expr = sys.argv[1], sys.argv[2]
s = open(path).read()
t = eval(expr, {"s": s})
if t == s:
    raise SystemExit(f"check-deploy: breaking {path} changed nothing: {expr}")
open(path, "w").write(t)
PY
    echo "$root"
}

# run_check TITLE FUNCTION BROKEN-ROOT EXPECTED-REGEX WHAT-WAS-BROKEN
run_check() {
    local title=$1 fn=$2 broken=$3 expect=$4 what=$5 out
    if ! out=$("$fn" "$PWD" 2>&1); then
        printf 'check-deploy: %-11s FAILED\n%s\n' "$title" "$out" >&2
        exit 1
    fi
    local summary
    summary=$(tail -n 1 <<<"$out" | sed -E 's/^ *(SUCCESS: *)?//')
    local bad
    if bad=$("$fn" "$broken" 2>&1); then
        printf 'check-deploy: %-11s FAILED: it accepts a broken copy (%s)\n' "$title" "$what" >&2
        exit 1
    fi
    if ! grep -qE "$expect" <<<"$bad"; then
        printf 'check-deploy: %-11s FAILED: the broken copy (%s) fails for another reason:\n%s\n' \
            "$title" "$what" "$bad" >&2
        exit 1
    fi
    printf 'check-deploy: %-11s ok (%s); refuses %s\n' "$title" "$summary" "$what"
}

T0=$SECONDS
echo "check-deploy: $RENDERER; kubernetes-validate $KV_VERSION (Kubernetes $K8S_VERSIONS, strict); promtool $PROMTOOL_VERSION"

b_render=$(break_copy render deploy/k8s/base/kustomization.yaml \
    's.replace("  - api-pdb.yaml\n", "  - api-pdb.yaml\n  - missing.yaml\n")')
b_k8s=$(break_copy kubernetes deploy/k8s/base/api-deployment.yaml \
    's.replace("  revisionHistoryLimit: 5\n", "  revisionHistoryLimit: 5\n  replica: 2\n")')
b_keda=$(break_copy keda deploy/k8s/base/worker-scaledobject.yaml \
    's.replace("    - type: prometheus\n      name: queued-jobs\n", "    - name: queued-jobs\n")')
b_rules=$(break_copy rules deploy/prometheus/alerts.yml \
    's.replace("max by (queue) (courier_queue_oldest_queued_age_seconds) > 300", "max by (queue) (courier_queue_oldest_queued_age_seconds > 300")')
b_tests=$(break_copy rule-tests deploy/prometheus/alerts.yml \
    's.replace("(courier_queue_oldest_queued_age_seconds) > 300", "(courier_queue_oldest_queued_age_seconds) > 3000")')
b_prom=$(break_copy prometheus deploy/prometheus/prometheus.yml \
    's.replace("refresh_interval: 15s", "refresh_intervall: 15s")')
# shellcheck disable=SC2016  # $queue is the dashboard's variable, not the shell's
b_dash=$(break_copy dashboard deploy/grafana/courier.json \
    's.replace("max by (queue, state) (courier_queue_depth{queue=~\\\"$queue\\\"})", "max by (queue, state) (courier_queue_depth{queue=~\\\"$queue\\\"}")')
b_metrics=$(break_copy metrics deploy/grafana/courier.json \
    's.replace("courier_queue_oldest_queued_age_seconds", "courier_queue_oldest_age_seconds")')
b_compose=$(break_copy compose docker-compose.yml \
    's.replace("./deploy/grafana/courier.json:", "./deploy/grafana/dashboard.json:")')
# The later checks read the broken copies' renders.
for b in "$b_k8s" "$b_keda" "$b_tests" "$b_prom" "$b_dash" "$b_metrics" "$b_compose" "$b_rules"; do
    check_render "$b" >/dev/null || die "rendering the broken copy $b failed"
done

run_check render check_render "$b_render" 'missing\.yaml' "a kustomization that lists a missing file"
run_check kubernetes check_kubernetes "$b_k8s" 'replica' "a Deployment with an unknown field"
run_check keda check_keda "$b_keda" "'type' is a required property" "a ScaledObject trigger without type"
run_check rules check_rules "$b_rules" 'courier_queue_oldest_queued_age_seconds|parse error|unclosed' "a broken alert expression"
run_check rule-tests check_rule_tests "$b_tests" 'CourierQueueBacklog' "an alert that no longer fires when it should"
run_check prometheus check_prometheus "$b_prom" 'refresh_intervall' "an unknown field in prometheus.yml"
run_check dashboard check_dashboard "$b_dash" 'courier_dashboard:panel|unclosed|parse error' "a dashboard query that does not parse"
run_check metrics check_metrics "$b_metrics" 'unknown metric courier_queue_oldest_age_seconds' "an unknown metric name in the dashboard"
run_check compose check_compose "$b_compose" 'dashboard\.json' "a Grafana mount of a file that does not exist"

echo "check-deploy: all checks passed in $((SECONDS - T0)) s"
