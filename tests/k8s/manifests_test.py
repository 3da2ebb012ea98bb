#!/usr/bin/env python3
"""k8s/: every overlay rendered with `kubectl kustomize`, and the rendered
objects checked against each other and against fetchd itself.

    manifests_test.py --fetchd=build/bin/fetchd [unittest args]

The flag file each overlay ships is run through a real fetchd (on a loopback
port), so a misspelt flag or a bad value fails here, not in a rollout. The
prod flag file runs with its Secret paths pointed at files made here (a
certificate made with the openssl CLI, a tokens file, a key), and the prod
health probe's own command is run against it.
"""
import argparse
import ipaddress
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OVERLAYS = {"dev": {"replicas": 1, "namespace": "fetchd-dev",
                    "clients": ["fetchd-dev", "default"], "tls": False},
            "prod": {"replicas": 3, "namespace": "fetchd",
                     "clients": ["fetchd-clients"], "tls": True}}
SECRETS = os.path.join(ROOT, "k8s", "overlays", "prod", "secrets")
FETCHD = None  # set from --fetchd
FETCHCTL = None  # set from --fetchctl

# Egress must never reach these (the cluster's own networks and the cloud
# metadata service), whatever the port.
PRIVATE_V4 = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
              "169.254.0.0/16"]
PRIVATE_V6 = ["fc00::/7"]
NEVER_REACHED = ["10.1.2.3", "172.20.0.1", "192.168.1.1", "100.64.0.10",
                 "169.254.169.254", "fd00:ec2::254", "fc00::1"]
PUBLIC = ["93.184.216.34", "8.8.8.8", "2606:2800:220:1::1"]


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


def egress_allows_ip(policy, address, port):
    """Whether an ipBlock egress rule lets fetchd reach address:port."""
    ip = ipaddress.ip_address(address)
    for rule in policy.get("egress", []):
        ports = {p["port"] for p in rule.get("ports", [])}
        if ports and port not in ports:
            continue
        for peer in rule.get("to", []):
            block = peer.get("ipBlock")
            if not block:
                continue
            net = ipaddress.ip_network(block["cidr"])
            if ip.version != net.version or ip not in net:
                continue
            if not any(ip in ipaddress.ip_network(e)
                       for e in block.get("except", [])
                       if ipaddress.ip_network(e).version == ip.version):
                return True
    return False


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True,
                   timeout=60)


def make_tls_files(directory, work):
    """A CA and a server certificate it signs (localhost, client auth too)
    as a kubernetes.io/tls Secret holds them: tls.crt, tls.key, ca.crt."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", "-new", *ec, "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "1", "-subj", "/CN=fetchd manifests test CA", cwd=work)
    openssl("req", "-new", *ec, "-keyout", "tls.key", "-out", "tls.csr",
            "-subj", "/CN=localhost", cwd=work)
    with open(os.path.join(work, "ext.cnf"), "w") as f:
        f.write("basicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature\n"
                "extendedKeyUsage=serverAuth,clientAuth\n"
                "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", "ext.cnf",
            "-out", "tls.crt", cwd=work)
    for name in ("tls.crt", "tls.key", "ca.crt"):
        shutil.copy(os.path.join(work, name), os.path.join(directory, name))


PEM_BLOCK = re.compile(
    r"-----BEGIN [A-Z0-9 ]+-----\s*\n\s*[A-Za-z0-9+/=]{40,}\s*\n")


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
        cls.policy = cls.by_kind["NetworkPolicy"][0]["spec"]
        # mountPath -> (volume name, Secret name) for every Secret volume.
        secrets = {v["name"]: v["secret"]["secretName"]
                   for v in cls.pod["spec"]["volumes"] if "secret" in v}
        cls.secret_mounts = {m["mountPath"]: (m["name"], secrets[m["name"]])
                             for m in cls.container["volumeMounts"]
                             if m["name"] in secrets}

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

    def test_probes_check_grpc_health_on_the_grpc_port(self):
        ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        self.assertEqual(ports["grpc"], 50051)
        listen_port = int(self.flags["listen"].rpartition(":")[2])
        self.assertEqual(listen_port, ports["grpc"])
        metrics_port = int(self.flags["metrics_listen"].rpartition(":")[2])
        self.assertEqual(metrics_port, ports["metrics"])
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            spec = self.container[probe]
            if not OVERLAYS[self.overlay]["tls"]:
                # Plaintext: the kubelet's native gRPC probe.
                self.assertEqual(spec["grpc"]["port"], ports["grpc"], probe)
                continue
            # TLS: the kubelet cannot probe gRPC over TLS, so fetchctl does,
            # inside the pod, trusting the mounted CA.
            self.assertNotIn("grpc", spec, probe)
            command = spec["exec"]["command"]
            self.assertEqual(os.path.basename(command[0]), "fetchctl", probe)
            self.assertEqual(command[-1], "health", probe)
            probe_flags = flags_of("\n".join(command[1:-1]))
            self.assertEqual(probe_flags["addr"], f"127.0.0.1:{ports['grpc']}")
            tls_dir = self.mount_of("fetchd-tls")
            self.assertEqual(probe_flags["tls_ca"], f"{tls_dir}/ca.crt", probe)
            self.assertEqual(probe_flags["tls_cert"], f"{tls_dir}/tls.crt", probe)
            self.assertEqual(probe_flags["tls_key"], f"{tls_dir}/tls.key", probe)
            # fetchctl's RPC deadline ends before the kubelet gives up.
            self.assertLess(duration_seconds(probe_flags["timeout"]),
                            spec["timeoutSeconds"], probe)

    def mount_of(self, secret_name):
        paths = [path for path, (_, secret) in self.secret_mounts.items()
                 if secret == secret_name]
        self.assertEqual(len(paths), 1, secret_name)
        return paths[0]

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

    def test_network_policy_ingress_names_the_client_namespaces(self):
        policy = self.policy
        self.assertEqual(sorted(policy["policyTypes"]), ["Egress", "Ingress"])
        ingress = {r["ports"][0]["port"]: r for r in policy["ingress"]}
        self.assertEqual(sorted(ingress), [9090, 50051])
        for port, rule in ingress.items():
            self.assertEqual(len(rule["ports"]), 1, port)
            # One peer, chosen by namespace name only: no `{}` selector, no
            # pod label a caller could set on itself, no ipBlock.
            self.assertEqual(len(rule["from"]), 1, port)
            self.assertEqual(sorted(rule["from"][0]), ["namespaceSelector"], port)
            self.assertTrue(rule["from"][0]["namespaceSelector"], port)
        grpc = ingress[50051]["from"][0]["namespaceSelector"]
        self.assertNotIn("matchLabels", grpc)
        self.assertEqual(grpc["matchExpressions"],
                         [{"key": "kubernetes.io/metadata.name", "operator": "In",
                           "values": OVERLAYS[self.overlay]["clients"]}])
        self.assertEqual(ingress[9090]["from"][0]["namespaceSelector"],
                         {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}})

    def test_network_policy_egress_is_dns_and_public_addresses(self):
        egress = self.policy["egress"]
        for rule in egress:
            # A rule without `to` would allow every destination.
            self.assertTrue(rule.get("to"), rule)
        dns = [r for r in egress if any("podSelector" in t for t in r["to"])]
        self.assertEqual(len(dns), 1)
        self.assertEqual(dns[0]["to"], [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}])
        self.assertEqual(sorted((p["port"], p["protocol"]) for p in dns[0]["ports"]),
                         [(53, "TCP"), (53, "UDP")])
        blocks = {t["ipBlock"]["cidr"]: t["ipBlock"]
                  for r in egress for t in r["to"] if "ipBlock" in t}
        self.assertEqual(sorted(blocks), ["0.0.0.0/0", "::/0"])
        self.assertLessEqual(set(PRIVATE_V4), set(blocks["0.0.0.0/0"]["except"]))
        self.assertLessEqual(set(PRIVATE_V6), set(blocks["::/0"]["except"]))
        for address in NEVER_REACHED:
            for port in (53, 80, 443, 8080):
                self.assertFalse(egress_allows_ip(self.policy, address, port),
                                 f"{address}:{port}")
        for address in PUBLIC:
            self.assertTrue(egress_allows_ip(self.policy, address, 443), address)
            self.assertTrue(egress_allows_ip(self.policy, address, 80), address)

    def test_transport_security_flags(self):
        tls = OVERLAYS[self.overlay]["tls"]
        for flag in ("tls_cert", "tls_key", "auth_tokens_file", "token_key_file"):
            self.assertEqual(flag in self.flags, tls, flag)
        if tls:
            self.assertEqual(self.flags["reflection"], "false")
        else:  # plaintext for local use, and no Secrets to create first
            self.assertEqual(self.secret_mounts, {})

    def test_fetchd_starts_with_the_flag_file(self):
        with tempfile.TemporaryDirectory() as tmp:
            text = self.configmap["data"]["fetchd.flags"]
            probe = None
            if self.secret_mounts:
                text = self.point_secret_paths_at_temp_files(text, tmp)
                probe = self.container["readinessProbe"]["exec"]["command"]
            path = os.path.join(tmp, "fetchd.flags")
            with open(path, "w") as f:
                f.write(text)
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
                if "Unknown command line flag" in seen:
                    self.fail("this fetchd lacks a flag of the overlay's flag file "
                              "(the TLS, token and guard flags land with their "
                              f"branches):\n{seen}")
                self.assertIn('"event":"serving"', seen)
                self.assertIn(f'"cq_threads":{self.flags["cq_threads"]}', seen)
                self.assertIn(f'"workers":{self.flags["workers"]}', seen)
                if "token_key_file" in self.flags:
                    self.assertNotIn('"resume_token_key","source":"random"', seen)
                if probe:
                    port = int(re.search(r'"port":(\d+)', seen).group(1))
                    self.run_probe(probe, tmp, port)
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    self.assertEqual(proc.wait(timeout=30), 0)
                proc.stderr.close()

    def point_secret_paths_at_temp_files(self, text, tmp):
        """The flag file with each Secret mount path replaced by a temp dir
        holding what that Secret holds in production."""
        for mount, (volume, secret) in self.secret_mounts.items():
            directory = os.path.join(tmp, volume)
            os.mkdir(directory)
            if secret == "fetchd-tls":
                work = os.path.join(tmp, "ca-work")
                os.mkdir(work)
                make_tls_files(directory, work)
            elif secret == "fetchd-auth":
                with open(os.path.join(directory, "auth_tokens"), "w") as f:
                    f.write(f"manifests-test {os.urandom(32).hex()}\n")
                with open(os.path.join(directory, "token_key"), "w") as f:
                    f.write(os.urandom(48).hex() + "\n")
            else:
                self.fail(f"unexpected Secret {secret}")
            text = text.replace(f"={mount}/", f"={directory}/")
        self.assertNotIn("=/etc/", text)
        return text

    def run_probe(self, command, tmp, port):
        """The pod's health probe, as the kubelet would run it, against the
        fetchd started from the prod flags (TLS on)."""
        argv = [FETCHCTL]
        for arg in command[1:]:
            for mount, (volume, _) in self.secret_mounts.items():
                arg = arg.replace(f"={mount}/", f"={os.path.join(tmp, volume)}/")
            argv.append(arg.replace("127.0.0.1:50051", f"127.0.0.1:{port}"))
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        self.assertEqual(result.returncode, 0,
                         f"{argv}: {result.stdout}{result.stderr}")

class DevTest(OverlayTest, unittest.TestCase):
    overlay = "dev"


class ProdTest(OverlayTest, unittest.TestCase):
    overlay = "prod"

    def test_replicas_spread_over_zones_and_nodes(self):
        keys = sorted(c["topologyKey"]
                      for c in self.pod["spec"]["topologySpreadConstraints"])
        self.assertEqual(keys, ["kubernetes.io/hostname", "topology.kubernetes.io/zone"])

    def test_secrets_are_mounted_read_only_as_directories(self):
        self.assertEqual(sorted(s for _, s in self.secret_mounts.values()),
                         ["fetchd-auth", "fetchd-tls"])
        for mount in self.container["volumeMounts"]:
            if mount["mountPath"] not in self.secret_mounts:
                continue
            self.assertTrue(mount.get("readOnly"), mount)
            # subPath mounts never see an updated Secret.
            self.assertNotIn("subPath", mount)
            self.assertNotIn("subPathExpr", mount)
            # Not nested in another mount (the read-only flags volume).
            for other in self.container["volumeMounts"]:
                if other is not mount:
                    self.assertFalse(mount["mountPath"].startswith(
                        other["mountPath"].rstrip("/") + "/"), mount)
        for volume in self.pod["spec"]["volumes"]:
            if "secret" in volume:
                # Readable by the pod's group (fsGroup), by no one else.
                self.assertEqual(volume["secret"]["defaultMode"] & 0o007, 0)
                self.assertNotIn("items", volume["secret"])

    def test_flags_point_into_the_secrets(self):
        tls = self.mount_of("fetchd-tls")
        auth = self.mount_of("fetchd-auth")
        self.assertEqual(self.flags["tls_cert"], f"{tls}/tls.crt")
        self.assertEqual(self.flags["tls_key"], f"{tls}/tls.key")
        if "tls_client_ca" in self.flags:
            self.assertEqual(self.flags["tls_client_ca"], f"{tls}/ca.crt")
        self.assertEqual(self.flags["auth_tokens_file"], f"{auth}/auth_tokens")
        self.assertEqual(self.flags["token_key_file"], f"{auth}/token_key")
        self.assertEqual(self.flags["reflection"], "false")

    def test_the_overlay_renders_no_secret(self):
        # Applying the overlay must never overwrite the operator's Secrets.
        self.assertNotIn("Secret", self.by_kind)

    def test_secret_generator_makes_fetchd_auth_from_operator_files(self):
        with tempfile.TemporaryDirectory() as tmp:
            copy = os.path.join(tmp, "secrets")
            shutil.copytree(SECRETS, copy,
                            ignore=shutil.ignore_patterns("auth_tokens", "token_key"))
            with open(os.path.join(copy, "auth_tokens"), "w") as f:
                f.write("billing not-a-real-token\n")
            with open(os.path.join(copy, "token_key"), "w") as f:
                f.write("not-a-real-key-" * 4 + "\n")
            out = subprocess.run(["kubectl", "kustomize", copy], check=True,
                                 capture_output=True, text=True, timeout=60).stdout
        objects = [d for d in yaml.safe_load_all(out) if d]
        self.assertEqual([o["kind"] for o in objects], ["Secret"])
        secret = objects[0]
        self.assertEqual(secret["metadata"]["name"], "fetchd-auth")  # no hash
        self.assertEqual(secret["metadata"]["namespace"], OVERLAYS["prod"]["namespace"])
        self.assertEqual(secret["type"], "Opaque")
        self.assertEqual(sorted(secret["data"]), ["auth_tokens", "token_key"])

    def test_cert_manager_certificate_makes_fetchd_tls(self):
        with open(os.path.join(SECRETS, "cert-manager.yaml")) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            self.assertEqual(doc["metadata"]["namespace"], OVERLAYS["prod"]["namespace"])
        serving = [d["spec"] for d in docs if d["kind"] == "Certificate"
                   and d["spec"]["secretName"] == "fetchd-tls"]
        self.assertEqual(len(serving), 1)
        spec = serving[0]
        self.assertFalse(spec.get("isCA", False))
        self.assertLessEqual({"server auth", "client auth"}, set(spec["usages"]))
        names = set(spec["dnsNames"])
        self.assertIn("127.0.0.1", spec["ipAddresses"])  # the probes' target
        ns = OVERLAYS["prod"]["namespace"]
        for service in self.by_kind["Service"]:
            name = service["metadata"]["name"]
            self.assertIn(f"{name}.{ns}.svc", names)
            self.assertIn(f"{name}.{ns}.svc.cluster.local", names)
        issuers = {d["metadata"]["name"] for d in docs if d["kind"] == "Issuer"}
        self.assertIn(spec["issuerRef"]["name"], issuers)

    def test_operator_secret_files_are_ignored_by_git(self):
        with open(os.path.join(SECRETS, ".gitignore")) as f:
            ignored = set(f.read().split())
        self.assertLessEqual({"auth_tokens", "token_key"}, ignored)


class KeyMaterialTest(unittest.TestCase):
    def test_no_key_material_in_the_repository(self):
        """No PEM certificate or key anywhere in the sources: tests make
        theirs at run time, and operators create the Secrets."""
        found = []
        for top in ("k8s", "docker", "scripts", "server", "client", "tests",
                    "docs", "bench", "protos"):
            for directory, _, files in os.walk(os.path.join(ROOT, top)):
                for name in files:
                    path = os.path.join(directory, name)
                    try:
                        with open(path, encoding="utf-8") as f:
                            text = f.read()
                    except (UnicodeDecodeError, OSError):
                        continue
                    if PEM_BLOCK.search(text):
                        found.append(os.path.relpath(path, ROOT))
        self.assertEqual(found, [])
        tracked = subprocess.run(["git", "-C", ROOT, "ls-files", "k8s"],
                                 capture_output=True, text=True, timeout=60)
        if tracked.returncode == 0:  # a git checkout
            names = {os.path.basename(p) for p in tracked.stdout.split()}
            self.assertFalse(names & {"auth_tokens", "token_key"}, names)

    def test_the_pem_check_finds_a_pem_block(self):
        sample = ("-----BEGIN PRIVATE KEY-----\n" + "A" * 64 + "\n"
                  "-----END PRIVATE KEY-----\n")
        self.assertTrue(PEM_BLOCK.search(sample))
        self.assertFalse(PEM_BLOCK.search('"-----BEGIN CERTIFICATE-----\\n"'))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--fetchd", required=True)
    parser.add_argument("--fetchctl", required=True)
    args, rest = parser.parse_known_args()
    FETCHD = args.fetchd
    FETCHCTL = args.fetchctl
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
