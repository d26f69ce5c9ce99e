#!/usr/bin/env python3
"""Writes the seed corpus (fuzz/corpus/{decode,policy,record}/seed-*) from the shared corpus.

Usage: python3 fuzz/corpus/make_seeds.py /work/shared
Provenance of every source is in fuzz/corpus/README.md. Output is deterministic.
"""
import json
import os
import struct
import sys

shared = sys.argv[1] if len(sys.argv) > 1 else "/work/shared"
here = os.path.dirname(os.path.abspath(__file__))
corpus = os.path.join(shared, "corpus")


def write(target, name, data):
    d = os.path.join(here, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def compact(v):
    return json.dumps(v, separators=(",", ":"))


# --- decode: falco trace files, whole -------------------------------------------------------------------
FALCO = [
    "create_secret", "delete_secret", "create_kube_system_secret", "create_service_account_token_secret",
    "create_configmap_sensitive_values", "exec_pod", "attach_pod", "anonymous_creates_namespace_foo",
    "create_clusterrolebinding", "create_nginx_pod_privileged", "create_nginx_pod_sensitive_mount",
    "create_deployment", "create_cluster_role_wildcard_verbs", "delete_namespace_foo",
    "modify_cluster_role_node_problem_detector", "fal_01_003",
]
falco_events = {}
for name in FALCO:
    with open(os.path.join(corpus, "falco/trace_files", name + ".json"), "rb") as f:
        data = f.read()
    write("decode", "falco-" + name + ".json", data)
    falco_events[name] = data

# --- decode: audit2rbac, the whole demo log (JSON lines) and a few single lines ---------------------------
with open(os.path.join(corpus, "audit2rbac/demo.log"), "rb") as f:
    demo = f.read()
write("decode", "audit2rbac-demo.log", demo)
lines = [l for l in demo.splitlines() if l.strip()]
for i in (0, 5, 17, 30):
    write("decode", "audit2rbac-demo-line%02d.json" % (i + 1), lines[i])

# --- decode: panther rule tests, the `event` field one per file -------------------------------------------
PANTHER = {
    "eks": [0, 8, 17, 109, 203, 212, 234, 243],
    "gke": [23, 31, 53, 206, 221, 245, 254],
    "aks": [46, 92, 205, 220, 235, 253],
    "unknown": [25],
}
with open(os.path.join(corpus, "panther/tests_extracted/panther_k8s_rule_tests.jsonl")) as f:
    rows = [json.loads(l) for l in f]
for shape, idxs in PANTHER.items():
    for i in idxs:
        write("decode", "panther-%s-%03d.json" % (shape, i), compact(rows[i]["event"]))

# --- decode: envelopes built around real events -----------------------------------------------------------
native = [json.loads(falco_events[n].decode().splitlines()[0]) for n in ("create_secret", "exec_pod", "delete_secret")]
items = [{k: v for k, v in e.items() if k not in ("kind", "apiVersion")} for e in native]
write("decode", "eventlist.json", compact({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": items}))
write("decode", "eventlist-empty.json", '{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":null}')
write("decode", "array.json", compact(native))
write("decode", "eks-subscription.json", compact({
    "messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": "/aws/eks/prod/cluster",
    "logStream": "kube-apiserver-audit-0", "subscriptionFilters": ["kubetrail"],
    "logEvents": [{"id": "1", "timestamp": 1587491825541, "message": compact(e)} for e in native[:2]],
}))
write("decode", "eks-insights.json", compact({"@timestamp": "2020-04-21 17:57:05.541", "@message": compact(native[1])}))
aks = [rows[i]["event"] for i in PANTHER["aks"][:2]]
write("decode", "aks-records.json", compact({"records": aks}))

# --- decode: secrets and tokens with bodies, for the redaction invariant ----------------------------------
secret_event = dict(native[0])
secret_event["level"] = "RequestResponse"
secret = {"kind": "Secret", "apiVersion": "v1",
          "metadata": {"name": "db", "namespace": "default", "annotations": {
              "kubectl.kubernetes.io/last-applied-configuration":
                  compact({"kind": "Secret", "apiVersion": "v1", "data": {"password": "aHVudGVyMg=="}})}},
          "data": {"password": "aHVudGVyMg==", "user": "YWRtaW4="}, "stringData": {"token": "s3cr3t"}, "type": "Opaque"}
secret_event["requestObject"] = secret
secret_event["responseObject"] = dict(secret, stringData=None)
write("decode", "secret-requestresponse.json", compact(secret_event))
patch_event = dict(secret_event, verb="patch", requestObject=[{"op": "replace", "path": "/data/password", "value": "bmV3"}])
patch_event.pop("responseObject")
write("decode", "secret-jsonpatch.json", compact(patch_event))
list_event = dict(secret_event, verb="list", requestObject=None,
                  responseObject={"kind": "SecretList", "apiVersion": "v1", "items": [secret]})
write("decode", "secretlist.json", compact(list_event))
token_event = dict(native[0], level="RequestResponse", verb="create",
                   requestURI="/api/v1/namespaces/default/serviceaccounts/default/token?access_token=abc",
                   objectRef={"resource": "serviceaccounts", "subresource": "token", "namespace": "default", "name": "default", "apiVersion": "v1"},
                   responseObject={"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                                   "spec": {"audiences": ["api"]}, "status": {"token": "eyJhbGciOi.x.y", "expirationTimestamp": "2020-04-21T18:57:05Z"}})
token_event.pop("requestObject", None)
write("decode", "tokenrequest.json", compact(token_event))

# --- policy: the conformance loader cases and two real policies -------------------------------------------
def loader_inputs(path):
    try:
        import yaml  # type: ignore
        with open(path) as f:
            return [c["input"] for c in yaml.safe_load(f)["loader_cases"]]
    except ImportError:
        sys.exit("make_seeds.py needs PyYAML to read policy-cases.yaml")

for i, text in enumerate(loader_inputs(os.path.join(shared, "conformance/policy-cases.yaml"))):
    write("policy", "loader-case-%d.yaml" % i, text)
for src, name in (("falco/upstream/audit-policy.yaml", "falco-audit-policy.yaml"),
                  ("audit2rbac/demo-policy.yaml", "audit2rbac-demo-policy.yaml")):
    with open(os.path.join(corpus, src), "rb") as f:
        write("policy", name, f.read())

# --- record: write-ahead log records (kubetrail-store's format, version 1) around real events ------------
def record(received_us, cluster, source, audit_id, stage, event):
    out = bytes([1]) + struct.pack("<q", received_us)
    for field in (cluster, source, audit_id, stage):
        b = field.encode()
        out += struct.pack("<H", len(b)) + b
    return out + event


for name in ("create_secret", "exec_pod"):
    line = falco_events[name].splitlines()[0]
    ev = json.loads(line)
    write("record", name + ".bin", record(1587491825541358, "prod", "webhook", ev["auditID"], ev["stage"], line))
write("record", "empty-fields.bin", record(0, "", "", "", "", b""))
