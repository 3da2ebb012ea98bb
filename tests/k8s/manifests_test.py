#!/usr/bin/env python3
"""k8s/: every overlay rendered with `kubectl kustomize`, and the rendered
objects checked against each other and against fetchd itself.

    manifests_test.py --fetchd=build/bin/fetchd [unittest args]

The flag file each overlay ships is run through a real fetchd (on a loopback
port), so a misspelt flag or a bad value fails here, not in a rollout.
"""
import argparse
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OVERLAYS = {"dev": {"replicas": 1, "namespace": "fetchd-dev"},
            "prod": {"replicas": 3, "namespace": "fetchd"}}
FETCHD = None  # set from --fetchd


def render(overlay):
    out = subprocess.run(
        ["kubectl", "kustomize", os.path.join(ROOT, "k8s", "overlays", overlay)],
        check=True, capture_output=True, text=True, timeout=60).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def duration_seconds(text):
    """absl duration flag text (5s, 500ms, 1m30s) -> seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    parts = re.findall(r"([0-9.]+)(h|ms|us|ns|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def cpu_cores(quantity):
    q = str(quantity)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def flags_of(flagfile_text):
    flags = {}
    for line in flagfile_text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, value = line.lstrip("-").partition("=")
        flags[name] = value
    return flags


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


class OverlayTest:
    """Mixed into one TestCase per overlay (see the end of the file)."""
    overlay = None

    @classmethod
    def setUpClass(cls):
        cls.objects = render(cls.overlay)
        cls.by_kind = {}
        for obj in cls.objects:
            cls.by_kind.setdefault(obj["kind"], []).append(obj)
        cls.deployment = cls.by_kind["Deployment"][0]
        cls.pod = cls.deployment["spec"]["template"]
        cls.container = cls.pod["spec"]["containers"][0]
        volume = next(v for v in cls.pod["spec"]["volumes"] if "configMap" in v)
        cls.configmap = next(c for c in cls.by_kind["ConfigMap"]
                             if c["metadata"]["name"] == volume["configMap"]["name"])
        cls.flags = flags_of(cls.configmap["data"]["fetchd.flags"])

    def test_every_object_is_there_once_in_the_overlay_namespace(self):
        kinds = sorted(o["kind"] for o in self.objects)
        self.assertEqual(kinds, ["ConfigMap", "Deployment", "HorizontalPodAutoscaler",
                                 "NetworkPolicy", "PodDisruptionBudget", "Service",
                                 "Service"])
        for obj in self.objects:
            self.assertEqual(obj["metadata"].get("namespace"),
                             OVERLAYS[self.overlay]["namespace"], obj["kind"])

    def test_replicas(self):
        self.assertEqual(self.deployment["spec"]["replicas"],
                         OVERLAYS[self.overlay]["replicas"])
        hpa = self.by_kind["HorizontalPodAutoscaler"][0]["spec"]
        self.assertEqual(hpa["minReplicas"], OVERLAYS[self.overlay]["replicas"])
        self.assertGreater(hpa["maxReplicas"], hpa["minReplicas"])

    def test_image_is_pinned(self):
        image = self.container["image"]
        name, _, tag = image.rpartition(":")
        self.assertTrue(name and tag, f"{image} has no tag")
        self.assertNotEqual(tag, "latest")
        self.assertNotIn("/", tag)

    def test_probes_are_grpc_on_the_grpc_port(self):
        ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        self.assertEqual(ports["grpc"], 50051)
        listen_port = int(self.flags["listen"].rpartition(":")[2])
        self.assertEqual(listen_port, ports["grpc"])
        metrics_port = int(self.flags["metrics_listen"].rpartition(":")[2])
        self.assertEqual(metrics_port, ports["metrics"])
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            self.assertEqual(self.container[probe]["grpc"]["port"], ports["grpc"], probe)

    def test_grace_period_covers_drain_and_shutdown(self):
        drain = duration_seconds(self.flags["drain_delay"])
        grace = duration_seconds(self.flags["shutdown_grace"])
        self.assertGreater(drain, 0)
        self.assertGreater(self.pod["spec"]["terminationGracePeriodSeconds"], drain + grace)
        # Readiness drops the pod within the drain delay; liveness does not
        # restart it while it drains.
        ready = self.container["readinessProbe"]
        self.assertLessEqual(ready["periodSeconds"] * ready["failureThreshold"], drain)
        live = self.container["livenessProbe"]
        self.assertGreater(live["periodSeconds"] * live["failureThreshold"], drain + grace)

    def test_threads_match_the_cpu_limit(self):
        # Inside a container fetchd sees the node's cores, not its limit.
        cores = math.ceil(cpu_cores(self.container["resources"]["limits"]["cpu"]))
        for flag in ("cq_threads", "workers"):
            self.assertTrue(1 <= int(self.flags[flag]) <= cores, flag)
        self.assertIn("memory", self.container["resources"]["limits"])
        self.assertIn("cpu", self.container["resources"]["requests"])

    def test_security_context(self):
        pod = self.pod["spec"]["securityContext"]
        self.assertTrue(pod["runAsNonRoot"])
        self.assertEqual(pod["runAsUser"], 65532)
        self.assertEqual(pod["runAsGroup"], 65532)
        self.assertEqual(pod["seccompProfile"]["type"], "RuntimeDefault")
        c = self.container["securityContext"]
        self.assertTrue(c["readOnlyRootFilesystem"])
        self.assertFalse(c["allowPrivilegeEscalation"])
        self.assertEqual(c["capabilities"]["drop"], ["ALL"])
        self.assertFalse(self.pod["spec"]["automountServiceAccountToken"])
        writable = {v["name"] for v in self.pod["spec"]["volumes"] if "emptyDir" in v}
        mounts = {m["name"] for m in self.container["volumeMounts"]
                  if not m.get("readOnly")}
        self.assertTrue(writable and writable <= mounts)

    def test_selectors_match_the_pods(self):
        labels = self.pod["metadata"]["labels"]
        self.assertTrue(selects(self.deployment["spec"]["selector"]["matchLabels"], labels))
        ports = {p["name"] for p in self.container["ports"]}
        services = {s["metadata"]["name"]: s["spec"] for s in self.by_kind["Service"]}
        for name, spec in services.items():
            self.assertTrue(spec["selector"] and selects(spec["selector"], labels), name)
            for port in spec["ports"]:
                self.assertIn(port["targetPort"], ports, name)
        self.assertEqual(services["fetchd-headless"]["clusterIP"], "None")
        self.assertEqual(services["fetchd"]["type"], "ClusterIP")
        pdb = self.by_kind["PodDisruptionBudget"][0]["spec"]
        self.assertTrue(selects(pdb["selector"]["matchLabels"], labels))
        hpa = self.by_kind["HorizontalPodAutoscaler"][0]["spec"]
        self.assertEqual(hpa["scaleTargetRef"]["kind"], "Deployment")
        self.assertEqual(hpa["scaleTargetRef"]["name"], self.deployment["metadata"]["name"])
        self.assertEqual(hpa["metrics"][0]["resource"]["name"], "cpu")
        policy = self.by_kind["NetworkPolicy"][0]["spec"]
        self.assertTrue(selects(policy["podSelector"]["matchLabels"], labels))

    def test_network_policy(self):
        policy = self.by_kind["NetworkPolicy"][0]["spec"]
        self.assertEqual(sorted(policy["policyTypes"]), ["Egress", "Ingress"])
        ingress = {r["ports"][0]["port"]: r["from"][0] for r in policy["ingress"]}
        self.assertEqual(sorted(ingress), [9090, 50051])
        self.assertEqual(ingress[50051]["podSelector"]["matchLabels"],
                         {"fetchd-client": "true"})
        self.assertEqual(ingress[9090]["namespaceSelector"]["matchLabels"],
                         {"kubernetes.io/metadata.name": "monitoring"})
        egress_ports = sorted(p["port"] for r in policy["egress"] for p in r["ports"])
        self.assertEqual(egress_ports, [53, 53, 80, 443])
        blocks = [t["ipBlock"] for r in policy["egress"] for t in r.get("to", [])]
        v4 = next(b for b in blocks if b["cidr"] == "0.0.0.0/0")
        self.assertIn("169.254.169.254/32", v4["except"])

    def test_fetchd_starts_with_the_flag_file(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "fetchd.flags")
            with open(path, "w") as f:
                f.write(self.configmap["data"]["fetchd.flags"])
            # Later flags win: loopback ports and no drain for the test.
            proc = subprocess.Popen(
                [FETCHD, f"--flagfile={path}", "--listen=127.0.0.1:0",
                 "--metrics_listen=127.0.0.1:0", "--drain_delay=0"],
                stderr=subprocess.PIPE, text=True)
            try:
                deadline = time.monotonic() + 30
                seen = ""
                while time.monotonic() < deadline:
                    line = proc.stderr.readline()
                    if not line:
                        break
                    seen += line
                    if '"event":"serving"' in line:
                        break
                self.assertIn('"event":"serving"', seen)
                self.assertIn(f'"cq_threads":{self.flags["cq_threads"]}', seen)
                self.assertIn(f'"workers":{self.flags["workers"]}', seen)
            finally:
                proc.send_signal(signal.SIGTERM)
                self.assertEqual(proc.wait(timeout=30), 0)


class DevTest(OverlayTest, unittest.TestCase):
    overlay = "dev"


class ProdTest(OverlayTest, unittest.TestCase):
    overlay = "prod"

    def test_replicas_spread_over_zones_and_nodes(self):
        keys = sorted(c["topologyKey"]
                      for c in self.pod["spec"]["topologySpreadConstraints"])
        self.assertEqual(keys, ["kubernetes.io/hostname", "topology.kubernetes.io/zone"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--fetchd", required=True)
    args, rest = parser.parse_known_args()
    FETCHD = args.fetchd
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
