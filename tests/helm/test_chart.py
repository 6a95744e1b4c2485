"""The Helm chart, linted and rendered with Helm's own Go SDK (PyPI helm-python-sdk)."""

import json
import pathlib
import tomllib

import helm_python as helm
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "ordo"


def render(values=None):
    chart = helm.Chart.load(str(CHART))
    merged = values or {}
    chart.validate_schema(chart.merge_values(merged) if hasattr(chart, "merge_values") else merged)
    files = chart.render(merged, name="ordo", namespace="streams", is_install=True)
    objects = []
    for path, text in files.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    notes = next((t for p, t in files.items() if p.endswith("NOTES.txt")), "")
    return objects, notes


def one(objects, kind):
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}"
    return found[0]


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_lint_strict_is_clean():
    # Severities as Helm's lint support package: 1 info, 2 warning, 3 error; strict fails on 2+.
    for values in ({}, {"servers": 3, "containers": 4}):
        result = helm.lint(str(CHART), values, strict=True)
        messages = [m for m in result.get("messages") or [] if m["severity"] >= 2]
        assert not messages, messages
        assert not result.get("errors"), result
    broken = helm.lint(str(CHART), {"servers": 0}, strict=True)
    assert any("/servers" in e for e in broken["errors"]), broken


@pytest.mark.parametrize("servers,containers", [(2, 3), (3, 4)])
def test_n_is_one_number_everywhere(servers, containers):
    values = {} if (servers, containers) == (2, 3) else {"servers": servers, "containers": containers}
    objects, notes = render(values)
    n = servers * containers
    sts = one(objects, "StatefulSet")
    assert sts["spec"]["replicas"] == servers
    env = env_of(sts["spec"]["template"]["spec"]["containers"][0])
    assert env["ORDO_PARTITIONS"] == str(n)
    assert env["ORDO_CONTAINERS"] == str(containers)
    assert env["ORDO_SERVERS"] == str(servers)
    job = one(objects, "Job")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["topics", "apply"]
    assert int(args[args.index("--servers") + 1]) * int(args[args.index("--containers") + 1]) == n
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert one(objects, "ConfigMap")["data"]["partitions"] == str(n)
    assert f"N = {n} partitions" in notes


def test_restricted_pods_probes_and_disruption_budget():
    objects, _ = render()
    sts = one(objects, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    c = pod["containers"][0]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/tmp", "/var/lib/ordo"}
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    labels = sts["metadata"]["labels"]
    for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                "app.kubernetes.io/managed-by"):
        assert key in labels
    job_pod = one(objects, "Job")["spec"]["template"]["spec"]
    assert job_pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert {o["kind"] for o in objects} >= {"Service", "ConfigMap"}


def test_schema_rejects_a_typo_and_bad_values():
    chart = helm.Chart.load(str(CHART))
    for bad in ({"server": 3}, {"servers": 0}, {"containers": "four"}, {"kafka": {"broker": "x:9092"}},
                {"partitioner": "crc32"}, {"topics": {"mode": "manual"}}):
        with pytest.raises(helm.HelmError):
            chart.validate_schema(chart.merge_values(bad) if hasattr(chart, "merge_values") else bad)


def test_strimzi_topics_and_service_monitor_switch_on():
    objects, _ = render({"topics": {"mode": "strimzi"}, "serviceMonitor": {"enabled": True}, "servers": 3,
                         "containers": 4})
    assert not [o for o in objects if o["kind"] == "Job"]
    topics = {o["spec"]["topicName"]: o for o in objects if o["kind"] == "KafkaTopic"}
    definitions = {}
    for path in (ROOT / "topics").glob("*.toml"):
        d = tomllib.loads(path.read_text())
        definitions[d["name"]] = d
    assert set(topics) == set(definitions)
    assert "reservation-owners" in topics
    for name, d in definitions.items():
        want = 12 if d["partitions"] == "N" else int(d["partitions"])
        assert topics[name]["spec"]["partitions"] == want, name
        assert topics[name]["spec"]["config"] == d["config"], f"{name} differs from topics/"
    assert one(objects, "ServiceMonitor")["spec"]["endpoints"][0]["path"] == "/metrics"


def test_kafka_properties_reach_the_pods():
    objects, _ = render({"kafka": {"brokers": "k:9093", "group": "g",
                                   "properties": {"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512"}}})
    cm = one(objects, "ConfigMap")["data"]
    assert cm["brokers"] == "k:9093"
    assert cm["kafka-properties"] == "sasl.mechanisms=SCRAM-SHA-512,security.protocol=SASL_SSL"


def test_static_membership_group_protocol_and_topic_prefix_reach_the_pods():
    objects, _ = render({"kafka": {"brokers": "k:9092", "group": "g", "topicPrefix": "staging.",
                                   "groupProtocol": "consumer"}, "topics": {"mode": "strimzi"}})
    container = one(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    names = [e["name"] for e in container["env"]]
    assert env["ORDO_INSTANCE_ID"]["value"] == "$(POD_NAME)"
    assert names.index("POD_NAME") < names.index("ORDO_INSTANCE_ID")
    assert env["ORDO_GROUP_PROTOCOL"]["value"] == "consumer"
    assert env["ORDO_GUARANTEE"]["value"] == "at-least-once"
    assert env["ORDO_TOPIC_PREFIX"]["valueFrom"]["configMapKeyRef"]["key"] == "topic-prefix"
    assert one(objects, "ConfigMap")["data"]["topic-prefix"] == "staging."
    topics = {o["spec"]["topicName"] for o in objects if o["kind"] == "KafkaTopic"}
    assert "staging.reservation-events" in topics and "staging.reservation-owners" in topics
    objects, _ = render({"kafka": {"brokers": "k:9092", "group": "g", "staticMembership": False,
                                   "guarantee": "exactly-once", "commitIntervalMs": 20}})
    container = one(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    assert "ORDO_INSTANCE_ID" not in env_of(container)
    env = {e["name"]: e for e in container["env"]}
    assert (env["ORDO_GUARANTEE"]["value"], env["ORDO_COMMIT_INTERVAL"]["value"]) == ("exactly-once", "20")
    chart = helm.Chart.load(str(CHART))
    for bad in ({"kafka": {"brokers": "k", "group": "g", "topicPrefix": "a/b"}},
                {"kafka": {"brokers": "k", "group": "g", "groupProtocol": "eager"}},
                {"kafka": {"brokers": "k", "group": "g", "guarantee": "exactly-twice"}},
                {"kafka": {"brokers": "k", "group": "g", "commitIntervalMs": 0}}):
        with pytest.raises(helm.HelmError):
            chart.validate_schema(chart.merge_values(bad) if hasattr(chart, "merge_values") else bad)


def test_members_advertise_their_stable_name_through_the_headless_service():
    objects, _ = render({"servers": 3})
    sts = one(objects, "StatefulSet")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    headless = [o for o in objects if o["kind"] == "Service" and o["spec"].get("clusterIP") == "None"]
    assert len(headless) == 1
    name = headless[0]["metadata"]["name"]
    assert sts["spec"]["serviceName"] == name
    assert headless[0]["spec"]["publishNotReadyAddresses"] is True
    port = container["ports"][0]["containerPort"]
    assert env["ORDO_ADVERTISE"]["value"] == f"http://$(POD_NAME).{name}.streams.svc:{port}"
    # Kubernetes expands $(POD_NAME) only from variables defined before it.
    names = [e["name"] for e in container["env"]]
    assert names.index("POD_NAME") < names.index("ORDO_ADVERTISE")


def test_repartition_hook_stops_the_members_then_moves_to_the_new_n():
    objects, notes = render()
    assert not [o for o in objects if o["metadata"]["name"].endswith("-repartition")]
    assert "repartition.enabled=true" in notes
    objects, notes = render({"servers": 3, "containers": 4, "repartition": {"enabled": True}})
    job = next(o for o in objects if o["kind"] == "Job" and o["metadata"]["name"] == "ordo-repartition")
    topics_job = next(o for o in objects if o["kind"] == "Job" and o["metadata"]["name"] == "ordo-topics")
    hook = job["metadata"]["annotations"]
    assert hook["helm.sh/hook"] == "pre-upgrade"
    # It runs before the topics job, which checks the topics at the new N.
    assert int(hook["helm.sh/hook-weight"]) < int(topics_job["metadata"]["annotations"]["helm.sh/hook-weight"])
    spec = job["spec"]["template"]["spec"]
    stop = spec["initContainers"][0]["args"][0]
    sts = one(objects, "StatefulSet")["metadata"]["name"]
    assert f"scale statefulset/{sts} --replicas=0" in stop and "status.replicas}'=0" in stop
    move = spec["containers"][0]
    assert move["args"] == ["repartition", "--apply", "--servers", "3", "--containers", "4"]
    assert env_of(move)["ORDO_BROKERS"] == "kafka:9092"
    assert env_of(move)["ORDO_GROUP"] == "ordo"
    assert "ORDO_ALLOW_UNPROCESSED" not in env_of(move)
    # Growing takes the in-place path unless the rebuild is asked for.
    assert "ORDO_REBUILD" not in env_of(move)
    # The hook's service account may scale this StatefulSet and nothing else.
    role = next(o for o in objects if o["kind"] == "Role" and o["metadata"]["name"] == "ordo-repartition")
    assert all(rule["resourceNames"] == [sts] for rule in role["rules"])
    assert {r for rule in role["rules"] for r in rule["resources"]} == {"statefulsets", "statefulsets/scale"}
    binding = next(o for o in objects if o["kind"] == "RoleBinding")
    assert binding["subjects"][0]["name"] == spec["serviceAccountName"] == "ordo-repartition"
    # The job's pods are not the StatefulSet's.
    selector = one(objects, "StatefulSet")["spec"]["selector"]["matchLabels"]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert not all(labels.get(k) == v for k, v in selector.items())
    assert "N is now 12" in notes
    objects, _ = render({"repartition": {"enabled": True, "allowUnprocessed": True}})
    job = next(o for o in objects if o["kind"] == "Job" and o["metadata"]["name"] == "ordo-repartition")
    assert env_of(job["spec"]["template"]["spec"]["containers"][0])["ORDO_ALLOW_UNPROCESSED"] == "true"
    objects, _ = render({"repartition": {"enabled": True, "rebuild": True}})
    job = next(o for o in objects if o["kind"] == "Job" and o["metadata"]["name"] == "ordo-repartition")
    assert env_of(job["spec"]["template"]["spec"]["containers"][0])["ORDO_REBUILD"] == "true"


def test_dashboard_configmap_carries_a_grafana_dashboard_the_sidecar_loads():
    objects, _ = render()
    assert not [o for o in objects if o["metadata"]["name"] == "ordo-dashboards"]
    objects, _ = render({"dashboards": {"enabled": True, "labels": {"release": "kps"}}})
    cm = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "ordo-dashboards")
    # The kube-prometheus-stack sidecar's convention.
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["labels"]["release"] == "kps"
    dash = json.loads(cm["data"]["ordo.json"])
    # What Grafana requires of a dashboard model to import it.
    assert dash["title"] and dash["uid"] and isinstance(dash["schemaVersion"], int)
    assert isinstance(dash["panels"], list) and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for p in dash["panels"]:
        assert p["type"] == "timeseries" and p["title"]
        grid = p["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("x", "y", "w", "h")) and grid["x"] + grid["w"] <= 24
        assert p["targets"] and all(t["expr"] and t["refId"] for t in p["targets"])
        assert p["datasource"]["uid"] == "${datasource}"
    names = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "job"} <= names
    # The same file the repository keeps (the dashboard test checks its metrics exist).
    assert json.loads((CHART / "dashboards" / "ordo.json").read_text()) == dash


def test_secret_properties_come_from_a_secret_and_never_reach_a_configmap():
    values = {
        "kafka": {
            "properties": {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512"},
            "secretProperties": {"sasl.password": {"secret": "kafka-creds", "key": "password"}},
        },
        "repartition": {"enabled": True},
    }
    objects, _ = render(values)
    cm = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "ordo")
    assert cm["data"]["kafka-properties"] == (
        "sasl.mechanism=SCRAM-SHA-512,security.protocol=SASL_SSL,sasl.password=@env:ORDO_KAFKA_SECRET_0"
    )
    # Every container that talks to Kafka gets the variable from the Secret, by reference.
    containers = [one(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]]
    for name in ("ordo-topics", "ordo-repartition"):
        job = next(o for o in objects if o["kind"] == "Job" and o["metadata"]["name"] == name)
        containers.append(job["spec"]["template"]["spec"]["containers"][0])
    for c in containers:
        env = {e["name"]: e for e in c["env"]}
        assert env["ORDO_KAFKA_SECRET_0"]["valueFrom"]["secretKeyRef"] == {"name": "kafka-creds", "key": "password"}, c["name"]
        assert "value" not in env["ORDO_KAFKA_SECRET_0"]
    # No rendered ConfigMap holds a secret-bearing property's value, only the reference.
    for o in objects:
        if o["kind"] == "ConfigMap":
            for v in (o.get("data") or {}).values():
                assert "sasl.password=" not in v or "sasl.password=@env:" in v
    # A secret given as a plain property is refused, naming where it belongs.
    with pytest.raises(Exception, match="secretProperties"):
        render({"kafka": {"properties": {"sasl.password": "hunter2"}}})


def test_the_api_token_comes_from_a_secret_mounted_as_a_file():
    objects, _ = render({"http": {"tokenSecret": "ordo-api-token"}})
    pod = one(objects, "StatefulSet")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert env_of(container)["ORDO_HTTP_TOKEN_FILE"] == "/etc/ordo/http-token/token"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "http-token")
    assert mount == {"name": "http-token", "mountPath": "/etc/ordo/http-token", "readOnly": True}
    volume = next(v for v in pod["volumes"] if v["name"] == "http-token")
    assert volume["secret"] == {"secretName": "ordo-api-token", "items": [{"key": "token", "path": "token"}]}
    # The probes stay on routes the token does not guard.
    assert {container[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")} <= {"/readyz", "/healthz"}
    # Without it nothing is mounted and no flag is set.
    objects, _ = render()
    container = one(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    assert "ORDO_HTTP_TOKEN_FILE" not in env_of(container)
    assert all(m["name"] != "http-token" for m in container["volumeMounts"])


def test_network_policy_admits_the_members_and_the_listed_peers_only():
    objects, _ = render()
    assert not [o for o in objects if o["kind"] == "NetworkPolicy"]
    prometheus = {"podSelector": {"matchLabels": {"app": "prometheus"}}}
    objects, _ = render({"networkPolicy": {"enabled": True, "from": [prometheus]}})
    policy = one(objects, "NetworkPolicy")["spec"]
    selector = one(objects, "StatefulSet")["spec"]["selector"]["matchLabels"]
    assert policy["podSelector"] == {"matchLabels": selector}
    assert policy["policyTypes"] == ["Ingress"]
    [rule] = policy["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert rule["from"] == [{"podSelector": {"matchLabels": selector}}, prometheus]
    with pytest.raises(Exception):
        render({"networkPolicy": {"enabled": True, "form": []}})
