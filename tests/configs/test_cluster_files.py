"""The shipped cluster files, read as a user with a cluster reads them."""

import copy
import functools
import gzip
import ipaddress
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
FIXTURES = Path(__file__).parent / "fixtures"
# the oldest KubeRay the manifest names (authOptions) and the newest release
KUBERAY = ["v1.5.1", "v1.7.0"]


def _yaml(name: str):
    return yaml.safe_load((CLUSTER / name).read_text())


def _dockerfile() -> str:
    return (CLUSTER / "Dockerfile").read_text()


def test_launcher_runs_ray_in_the_project_image():
    launcher = _yaml("cluster.yaml")
    assert launcher["head_node_type"] in launcher["available_node_types"]
    assert launcher["docker"]["image"]  # the project and its dependencies: cluster/Dockerfile
    commands = [
        *launcher.get("initialization_commands", []),
        *launcher.get("setup_commands", []),
        *launcher.get("head_setup_commands", []),
        *launcher.get("worker_setup_commands", []),
    ]
    assert not any("|| true" in c for c in commands), "a failed install must stop `ray up`"
    # the launcher's dashboard stays on the head's loopback; `ray dashboard` forwards it
    assert any("--dashboard-host=127.0.0.1" in c for c in launcher["head_start_ray_commands"])
    # token authentication on every node, with the token the user made copied to each
    starts = [
        c
        for c in launcher["head_start_ray_commands"] + launcher["worker_start_ray_commands"]
        if "ray start" in c
    ]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in starts)
    assert launcher["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}


def test_rayjob_reaches_its_dashboard_with_a_token():
    job = _yaml("rayjob.yaml")
    spec = job["spec"]
    assert job["kind"] == "RayJob" and "python -m learner.main" in spec["entrypoint"]
    cluster = spec["rayClusterSpec"]
    host = cluster["headGroupSpec"]["rayStartParams"]["dashboard-host"]
    assert not ipaddress.ip_address(host).is_loopback
    assert cluster["authOptions"]["mode"] == "token"
    env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert "HF_HUB_OFFLINE" not in env.get("env_vars", {})
    pinned = re.search(r'"ray\[default\]==([\d.]+)"', _dockerfile())
    assert pinned and pinned.group(1) == cluster["rayVersion"]
    images = {
        c["image"]
        for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
        for c in group["template"]["spec"]["containers"]
    }
    assert images == {_yaml("cluster.yaml")["docker"]["image"]}


def test_runtime_envs_carry_the_dependencies_without_forcing_offline():
    plain = _yaml("runtime_env.yaml")
    with_pip = _yaml("runtime_env.pip.yaml")
    for env in (plain, with_pip):
        assert ".venv" in env["excludes"]
        assert "HF_HUB_OFFLINE" not in env["env_vars"]
    # the plain env relies on the image (or a local venv): no install step on job start
    assert "pip" not in plain and "uv" not in plain
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert with_pip["pip"] == [d for d in deps if not d.startswith("ray")]


def test_dockerfile_installs_the_project_on_a_cuda_base():
    text = _dockerfile()
    base = re.search(r"^FROM\s+(\S+)", text, re.M).group(1)
    assert base.startswith("nvidia/cuda:") and "cudnn" in base
    assert re.search(r"pip install .*\s\.\s", text.replace("\\\n", " "))
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


# The CEL rules (x-kubernetes-validations) of the RayJob CRDs above, in Python. A rule not
# listed here fails the check instead of passing unread.
_CEL = {
    "!((has(self.onSuccess) || has(self.onFailure)) && has(self.deletionRules))": lambda s: (
        not (("onSuccess" in s or "onFailure" in s) and "deletionRules" in s)
    ),
    "((has(self.onSuccess) && has(self.onFailure)) || has(self.deletionRules))": lambda s: (
        ("onSuccess" in s and "onFailure" in s) or "deletionRules" in s
    ),
    "!(has(self.jobStatus) && has(self.jobDeploymentStatus))": lambda s: (
        not ("jobStatus" in s and "jobDeploymentStatus" in s)
    ),
    "has(self.jobStatus) || has(self.jobDeploymentStatus)": lambda s: (
        "jobStatus" in s or "jobDeploymentStatus" in s
    ),
    "self in ['ray.io/kuberay-operator', 'kueue.x-k8s.io/multikueue']": lambda s: (
        s in ("ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue")
    ),
    "self == oldSelf": lambda s: True,  # a rule on updates: holds when the object is created
}


def _cel(validator, rules, instance, schema):
    for rule in rules:
        check = _CEL.get(rule["rule"])
        if check is None:
            yield jsonschema.ValidationError(f"CEL rule with no Python form: {rule['rule']}")
        elif not check(instance):
            yield jsonschema.ValidationError(rule.get("message", rule["rule"]))


def _list_type(validator, kind, instance, schema):
    """set: no two items equal; map: no two items with the same x-kubernetes-list-map-keys
    (a key left out counts as its default)."""
    if kind == "atomic" or not validator.is_type(instance, "array"):
        return
    keys = schema.get("x-kubernetes-list-map-keys", [])
    fields = schema.get("items", {}).get("properties", {})
    seen = set()
    for item in instance:
        key = [item.get(k, fields.get(k, {}).get("default")) for k in keys] if keys else item
        text = json.dumps(key, sort_keys=True)
        if text in seen:
            yield jsonschema.ValidationError(f"duplicate {text} in a list of type {kind}")
        seen.add(text)


_INT = {"int32": 2**31, "int64": 2**63}
_formats = jsonschema.FormatChecker(formats=())
for _name, _bound in _INT.items():
    _formats.checks(_name)(
        lambda v, b=_bound: not isinstance(v, int) or isinstance(v, bool) or -b <= v < b
    )
_K8sValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator,
    {"x-kubernetes-validations": _cel, "x-kubernetes-list-type": _list_type},
)


def _structural(node):
    """Kubernetes' reading of a CRD schema in JSON Schema terms. An object with properties
    is closed: the API server drops unknown fields and `kubectl apply` (field validation
    Strict, its default) refuses them, unless x-kubernetes-preserve-unknown-fields. nullable
    admits null. x-kubernetes-int-or-string comes with its anyOf from controller-gen.
    x-kubernetes-map-type only steers server-side apply merges: nothing to check. Other
    extensions are refused, so that a newer schema cannot pass unread."""
    if isinstance(node, list):
        return [_structural(n) for n in node]
    if not isinstance(node, dict):
        return node
    known = {
        "x-kubernetes-int-or-string",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-list-type",
        "x-kubernetes-map-type",
        "x-kubernetes-validations",
        "x-kubernetes-preserve-unknown-fields",
    }
    unknown = {k for k in node if k.startswith("x-kubernetes-")} - known
    assert not unknown, f"schema extension not handled here: {unknown}"
    out = {k: (v if k.startswith("x-kubernetes-") else _structural(v)) for k, v in node.items()}
    closed = not out.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and "additionalProperties" not in out and closed:
        out["additionalProperties"] = False
    if out.pop("nullable", False):
        out["type"] = [out["type"], "null"]
    if out.get("x-kubernetes-int-or-string"):
        assert out["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    return out


@functools.cache
def _crd(tag: str) -> tuple[dict, jsonschema.protocols.Validator]:
    """The RayJob CRD's openAPIV3Schema (ray.io/v1) of KubeRay `tag`, from the fixture."""
    data = json.loads(
        gzip.decompress((FIXTURES / f"kuberay-{tag}-rayjob-schema.json.gz").read_bytes())
    )
    assert data["kuberay"] == tag and data["crd_version"] == "ray.io/v1"
    schema = _structural(data["openAPIV3Schema"])
    jsonschema.Draft4Validator.check_schema(schema)
    return data, _K8sValidator(schema, format_checker=_formats)


def _crd_errors(tag: str, manifest: dict) -> list[str]:
    errors = _crd(tag)[1].iter_errors(manifest)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


@pytest.mark.parametrize("tag", KUBERAY)
def test_rayjob_passes_the_kuberay_crd_schema(tag):
    job = _yaml("rayjob.yaml")
    assert _crd_errors(tag, job) == []
    # what the operator checks beyond the schema (ray-operator/controllers/ray/utils/validation.go)
    name = job["metadata"]["name"]
    assert len(name) <= 47 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)
    cluster = job["spec"]["rayClusterSpec"]
    if cluster["authOptions"]["mode"] == "token":
        ray_version = tuple(int(x) for x in cluster["rayVersion"].split("."))
        assert ray_version >= (2, 52, 0)
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def _set(manifest: dict, path: str, value) -> dict:
    out = copy.deepcopy(manifest)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = out
    for p in parents:
        node = node[p]
    node[last] = value
    return out


_WORKER = "spec.rayClusterSpec.workerGroupSpecs.0"
_CONTAINER = f"{_WORKER}.template.spec.containers.0"


@pytest.mark.parametrize(
    "path, value, error",
    [
        ("spec.rayClusterSpec.authOption", {"mode": "token"}, "'authOption' was unexpected"),
        ("spec.rayClusterSpec.authOptions.mode", "Token", "'Token' is not one of"),
        (f"{_WORKER}.replicas", "2", "'2' is not of type 'integer'"),
        (f"{_WORKER}.replicas", 2**31, "is not a 'int32'"),
        (f"{_CONTAINER}.resources.limits.memory", "96 GB", "does not match"),
        (f"{_CONTAINER}.ports", [{"containerPort": 80}] * 2, "in a list of type map"),
        ("spec.deletionStrategy", {"onSuccess": {}}, "requires either BOTH"),
    ],
)
def test_the_crd_check_refuses_what_kubernetes_refuses(path, value, error):
    """Not a vacuous pass: a typo, a wrong type or enum, an int32 overflow, a bad quantity,
    a repeated list key and a broken CEL rule are each refused, under every KubeRay above."""
    job = _set(_yaml("rayjob.yaml"), path, value)
    for tag in KUBERAY:
        errors = _crd_errors(tag, job)
        assert any(error in e for e in errors), (tag, errors)
