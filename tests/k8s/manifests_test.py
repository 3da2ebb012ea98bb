#!/usr/bin/env python3
"""k8s/: every overlay rendered with `kubectl kustomize`, and the rendered
objects checked against each other and against fetchd itself.

    manifests_test.py --fetchd=build/bin/fetchd [unittest args]

The flag file each overlay ships is run through a real fetchd (on a loopback
port), so a misspelt flag or a bad value fails here, not in a rollout. The
prod flag file runs with its Secret paths pointed at files made here (a
certificate made with the openssl CLI, a tokens file, a key), and the prod
health probe's own command is run against it. Every run keeps its jobs in a
SQLite file made here (a later --job_store wins over the flag file's), so
no run ever looks up or connects to the prod overlay's PostgreSQL host;
its connection URI is checked by libpq's own parser, which connects to
nothing.
"""
import argparse
import ctypes
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
import urllib.parse

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OVERLAYS = {"dev": {"replicas": 1, "namespace": "fetchd-dev",
                    "clients": ["fetchd-dev", "default"], "tls": False,
                    "store": "sqlite"},
            "prod": {"replicas": 3, "namespace": "fetchd",
                     "clients": ["fetchd-clients"], "tls": True,
                     "store": "postgres"}}
SECRETS = os.path.join(ROOT, "k8s", "overlays", "prod", "secrets")
DB_SECRETS = os.path.join(SECRETS, "fetchd-db")
DATA_DIR = "/var/lib/fetchd"  # fetchd's --data_dir default
FETCHD = None  # set from --fetchd
FETCHCTL = None  # set from --fetchctl

# Egress must never reach these (the cluster's own networks and the cloud
# metadata service), whatever the port.
PRIVATE_V4 = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
              "169.254.0.0/16"]
PRIVATE_V6 = ["fc00::/7"]
NEVER_REACHED = ["10.1.2.3", "172.20.0.1", "192.168.1.1", "100.64.0.10",
                 "169.254.169.254", "fd00:ec2::254", "fc00::1"]
NEVER_REACHED_PORTS = [53, 80, 443, 5432, 8080]
PUBLIC = ["93.184.216.34", "8.8.8.8", "2606:2800:220:1::1"]


def render(overlay):
    return render_dir(os.path.join(ROOT, "k8s", "overlays", overlay))


def render_dir(directory):
    out = subprocess.run(["kubectl", "kustomize", directory], check=True,
                         capture_output=True, text=True, timeout=60).stdout
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


def quantity_bytes(quantity):
    """A Kubernetes byte quantity (64Mi, 1Gi, 500M, 1000) -> bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
             "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    m = re.fullmatch(r"([0-9]+)([A-Za-z]*)", str(quantity))
    if not m or (m.group(2) and m.group(2) not in units):
        raise ValueError(f"not a byte quantity: {quantity!r}")
    return int(m.group(1)) * units.get(m.group(2), 1)


class _ConninfoOption(ctypes.Structure):
    _fields_ = [("keyword", ctypes.c_char_p), ("envvar", ctypes.c_char_p),
                ("compiled", ctypes.c_char_p), ("val", ctypes.c_char_p),
                ("label", ctypes.c_char_p), ("dispchar", ctypes.c_char_p),
                ("dispsize", ctypes.c_int)]


def libpq_conninfo(conninfo):
    """libpq's own reading of a connection string (PQconninfoParse, which
    connects to nothing and reads no environment): {keyword: value} of what
    it sets, or ValueError with libpq's message. fetchd hands --job_store to
    the same function."""
    libpq = ctypes.CDLL("libpq.so.5")
    libpq.PQconninfoParse.restype = ctypes.POINTER(_ConninfoOption)
    libpq.PQconninfoParse.argtypes = [ctypes.c_char_p,
                                      ctypes.POINTER(ctypes.c_void_p)]
    libpq.PQconninfoFree.argtypes = [ctypes.POINTER(_ConninfoOption)]
    libpq.PQfreemem.argtypes = [ctypes.c_void_p]
    error = ctypes.c_void_p()
    options = libpq.PQconninfoParse(conninfo.encode(), ctypes.byref(error))
    if not options:
        message = ctypes.string_at(error.value).decode() if error.value else "?"
        if error.value:
            libpq.PQfreemem(error)
        raise ValueError(message.strip())
    try:
        parsed = {}
        i = 0
        while options[i].keyword is not None:
            if options[i].val is not None:
                parsed[options[i].keyword.decode()] = options[i].val.decode()
            i += 1
        return parsed
    finally:
        libpq.PQconninfoFree(options)


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


def check_data_dir_and_sqlite_store(test, pod, flags):
    """The pod mounts a writable, size-limited, disk-backed emptyDir at
    --data_dir's default; when `flags` keep jobs in SQLite, the file is
    there, and --max_store_bytes stops Submit at half the emptyDir's size
    (running jobs write on past it; past sizeLimit the pod is evicted)."""
    container = pod["spec"]["containers"][0]
    mounts = [m for m in container["volumeMounts"] if m["mountPath"] == DATA_DIR]
    test.assertEqual(len(mounts), 1, DATA_DIR)
    mount = mounts[0]
    test.assertFalse(mount.get("readOnly", False), mount)
    test.assertNotIn("subPath", mount)
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    test.assertIn("emptyDir", volume, volume)
    # A tmpfs would count the store against the container's memory limit.
    test.assertNotEqual(volume["emptyDir"].get("medium"), "Memory")
    size_limit = quantity_bytes(volume["emptyDir"]["sizeLimit"])
    store = flags.get("job_store", "")
    if store.startswith(("postgres://", "postgresql://")) or store == "none":
        return
    # Unset: fetchd's default, sqlite:DATA_DIR/jobs.db.
    path = store[len("sqlite:"):] if store else f"{flags.get('data_dir', DATA_DIR)}/jobs.db"
    test.assertTrue(not store or store.startswith("sqlite:"), store)
    test.assertEqual(os.path.dirname(path), DATA_DIR, store)
    cap = int(flags.get("max_store_bytes", "0"))
    test.assertGreater(cap, 0, "--max_store_bytes must stop Submit before the "
                               "emptyDir's sizeLimit evicts the pod")
    test.assertLessEqual(cap, size_limit // 2)


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
        # Every emptyDir is writable in fetchd's container, except one an
        # init container fills for it (the probes' fetchctl).
        init_filled = {m["name"] for c in self.pod["spec"].get("initContainers", [])
                       for m in c.get("volumeMounts", [])}
        writable = {v["name"] for v in self.pod["spec"]["volumes"]
                    if "emptyDir" in v and v["name"] not in init_filled}
        mounts = {m["name"] for m in self.container["volumeMounts"]
                  if not m.get("readOnly")}
        self.assertTrue(writable and writable <= mounts)
        for init in self.pod["spec"].get("initContainers", []):
            c = init["securityContext"]
            self.assertTrue(c["readOnlyRootFilesystem"], init["name"])
            self.assertFalse(c["allowPrivilegeEscalation"], init["name"])
            self.assertEqual(c["capabilities"]["drop"], ["ALL"], init["name"])
            self.assertIn("memory", init["resources"]["limits"], init["name"])

    def test_exec_probes_run_what_an_init_container_copied_in(self):
        """The runtime image holds fetchd alone (no shell, no fetchctl:
        scripts/image.sh --smoke checks it), so an exec probe's binary must
        come from a volume an init container of the same release's debug
        image (TAG-debug) filled, mounted read-only in fetchd's container."""
        image = self.container["image"]
        inits = {c["name"]: c for c in self.pod["spec"].get("initContainers", [])}
        mounts = {m["mountPath"]: m for m in self.container["volumeMounts"]}
        emptydirs = {v["name"] for v in self.pod["spec"]["volumes"] if "emptyDir" in v}
        execs = [self.container[p]["exec"]["command"]
                 for p in ("readinessProbe", "livenessProbe", "startupProbe")
                 if "exec" in self.container[p]]
        self.assertEqual(len(execs), 3 if OVERLAYS[self.overlay]["tls"] else 0)
        if not execs:
            self.assertEqual(inits, {})
        for command in execs:
            binary = command[0]
            self.assertNotEqual(binary, "/usr/local/bin/fetchctl")
            mount = mounts.get(os.path.dirname(binary))
            self.assertIsNotNone(mount, f"{binary} is not in a mounted volume")
            self.assertTrue(mount.get("readOnly"), mount)
            self.assertIn(mount["name"], emptydirs)
            fillers = [c for c in inits.values()
                       if any(m["name"] == mount["name"] for m in c["volumeMounts"])]
            self.assertEqual(len(fillers), 1, mount["name"])
            init = fillers[0]
            self.assertEqual(init["image"], image + "-debug")
            target = next(m["mountPath"] for m in init["volumeMounts"]
                          if m["name"] == mount["name"])
            self.assertEqual(init["command"],
                             ["/busybox/cp", "/usr/local/bin/fetchctl",
                              f"{target}/{os.path.basename(binary)}"])

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
        # Only an overlay whose jobs live in PostgreSQL has a rule for it
        # (ProdTest checks it).
        db = [r for r in egress if all(sorted(t) == ["namespaceSelector"]
                                       for t in r["to"])]
        self.assertEqual(len(db), OVERLAYS[self.overlay]["store"] == "postgres")
        self.assertEqual(len(egress), 2 + len(db))
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
            for port in NEVER_REACHED_PORTS:
                self.assertFalse(egress_allows_ip(self.policy, address, port),
                                 f"{address}:{port}")
        for address in PUBLIC:
            self.assertTrue(egress_allows_ip(self.policy, address, 443), address)
            self.assertTrue(egress_allows_ip(self.policy, address, 80), address)

    def test_data_dir_is_a_writable_empty_dir(self):
        check_data_dir_and_sqlite_store(self, self.pod, self.flags)

    def test_job_store(self):
        store = self.flags.get("job_store", "")
        if OVERLAYS[self.overlay]["store"] == "sqlite":
            self.assertTrue(not store or store.startswith("sqlite:"), store)
        else:
            self.assertRegex(store, r"^postgres(ql)?://")
        self.assertGreaterEqual(int(self.flags.get("max_jobs_running", "2")), 1)

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
            db = os.path.join(tmp, "jobs.db")
            # Later flags win: loopback ports, no drain, and jobs in a file
            # here, so fetchd never looks up or connects to the prod
            # overlay's database (nor writes the host's /var/lib/fetchd).
            # No PG* variable of ours reaches libpq either.
            env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
            proc = subprocess.Popen(
                [FETCHD, f"--flagfile={path}", "--listen=127.0.0.1:0",
                 "--metrics_listen=127.0.0.1:0", "--drain_delay=0",
                 f"--job_store=sqlite:{db}",
                 f"--data_dir={os.path.join(tmp, 'data')}"],
                stderr=subprocess.PIPE, text=True, env=env)
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
                port = int(re.search(r'"port":(\d+)', seen).group(1))
                if probe:
                    self.run_probe(probe, tmp, port)
                # The Jobs service serves from the test's store, the one
                # the override named.
                self.assertTrue(os.path.exists(db), seen)
                self.assertFalse(os.path.exists(os.path.join(tmp, "data")))
                self.run_probe(probe, tmp, port, service="fetchd.v1.Jobs")
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
            elif secret == "fetchd-db":
                # Never read: the test's --job_store (a SQLite file) wins
                # over the flag file's PostgreSQL URI that names ca.crt.
                with open(os.path.join(directory, "ca.crt"), "w") as f:
                    f.write("not a certificate: fetchd-db in the manifests test\n")
                with open(os.path.join(directory, "password"), "w") as f:
                    f.write(os.urandom(16).hex())
            else:
                self.fail(f"unexpected Secret {secret}")
            text = text.replace(f"={mount}/", f"={directory}/")
        self.assertNotIn("=/etc/", text)
        return text

    def run_probe(self, command, tmp, port, service=None):
        """The pod's health probe, as the kubelet would run it, against the
        fetchd started from the prod flags (TLS on); with `service`, the
        same check of that service's health (command None: plaintext)."""
        if command is None:
            command = ["fetchctl", "--addr=127.0.0.1:50051", "--timeout=5s",
                       "health"]
        argv = [FETCHCTL]
        for arg in command[1:]:
            for mount, (volume, _) in self.secret_mounts.items():
                arg = arg.replace(f"={mount}/", f"={os.path.join(tmp, volume)}/")
            argv.append(arg.replace("127.0.0.1:50051", f"127.0.0.1:{port}"))
        if service:
            argv.append(f"--service={service}")
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        self.assertEqual(result.returncode, 0,
                         f"{argv}: {result.stdout}{result.stderr}")
        if service:
            self.assertRegex(result.stdout, r"\bSERVING\b")
            self.assertNotIn("NOT_SERVING", result.stdout)

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
                         ["fetchd-auth", "fetchd-db", "fetchd-tls"])
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

    def test_job_store_is_postgres_with_the_password_from_the_secret(self):
        store = self.flags["job_store"]
        url = urllib.parse.urlsplit(store)
        self.assertIn(url.scheme, ("postgres", "postgresql"))
        self.assertIsNone(url.password)
        conninfo = libpq_conninfo(store)  # libpq accepts every part of it
        for key in ("password", "passfile"):
            self.assertNotIn(key, conninfo)
        # Named: libpq's default user is the OS user's name (nonroot in
        # the image), not the database's.
        self.assertTrue(conninfo.get("user"))
        self.assertTrue(conninfo.get("host"))
        self.assertTrue(conninfo.get("dbname"))
        # The server's certificate is checked, against the mounted CA.
        self.assertEqual(conninfo["sslmode"], "verify-full")
        self.assertEqual(conninfo["sslrootcert"],
                         f"{self.mount_of('fetchd-db')}/ca.crt")
        self.assertGreater(int(conninfo["connect_timeout"]), 0)
        # The password reaches libpq as PGPASSWORD from the Secret, and no
        # libpq variable has a value written into the manifests.
        env = {e["name"]: e for e in self.container.get("env", [])}
        self.assertEqual(env["PGPASSWORD"]["valueFrom"],
                         {"secretKeyRef": {"name": "fetchd-db", "key": "password"}})
        for name, var in env.items():
            if name.startswith("PG"):
                self.assertNotIn("value", var, name)
        for data in (self.configmap.get("data") or {}).values():
            self.assertNotRegex(data, r"(?i)password\s*=")
            self.assertNotRegex(data, r"://[^/@\s:]+:[^/@\s]*@")  # user:pw@

    def test_the_libpq_check_catches_a_bad_uri(self):
        self.assertEqual(libpq_conninfo(
            "postgresql://u@h.ns.svc:5432/d?sslmode=verify-full")["sslmode"],
            "verify-full")
        with self.assertRaises(ValueError):
            libpq_conninfo("postgresql://u@h/d?sslrootcrt=/etc/fetchd-db/ca.crt")

    def test_network_policy_egress_admits_the_job_store(self):
        conninfo = libpq_conninfo(self.flags["job_store"])
        port = int(conninfo.get("port", "5432"))
        # SERVICE.NAMESPACE.svc[.cluster.local]: the rule's namespace.
        labels = conninfo["host"].split(".")
        self.assertEqual(labels[2:3], ["svc"], conninfo["host"])
        namespace = labels[1]
        self.assertNotEqual(namespace, OVERLAYS["prod"]["namespace"])
        rules = [r for r in self.policy["egress"]
                 if all(sorted(t) == ["namespaceSelector"] for t in r["to"])]
        self.assertEqual(len(rules), 1)
        self.assertEqual(rules[0]["to"], [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": namespace}}}])
        self.assertEqual(rules[0]["ports"], [{"port": port, "protocol": "TCP"}])
        # The database port is open to that namespace only, not to the
        # internet nor to private addresses.
        for address in PUBLIC + NEVER_REACHED:
            self.assertFalse(egress_allows_ip(self.policy, address, port), address)

    def test_job_lease_and_jobs_running(self):
        lease = duration_seconds(self.flags["job_lease"])
        # Renewed every lease/3: long enough to ride out a database
        # failover, short enough that a dead replica's jobs move on soon.
        self.assertGreaterEqual(lease, 30)
        self.assertLessEqual(lease, 300)
        running = int(self.flags["max_jobs_running"])
        cores = math.ceil(cpu_cores(self.container["resources"]["limits"]["cpu"]))
        self.assertTrue(1 <= running <= 2 * cores, running)
        self.assertGreater(int(self.flags["max_store_bytes"]), 0)

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

    def test_secret_generator_makes_fetchd_db_from_operator_files(self):
        with tempfile.TemporaryDirectory() as tmp:
            copy = os.path.join(tmp, "fetchd-db")
            shutil.copytree(DB_SECRETS, copy,
                            ignore=shutil.ignore_patterns("password", "ca.crt"))
            with open(os.path.join(copy, "password"), "w") as f:
                f.write("not-a-real-password")
            with open(os.path.join(copy, "ca.crt"), "w") as f:
                f.write("not a certificate\n")
            objects = render_dir(copy)
        self.assertEqual([o["kind"] for o in objects], ["Secret"])
        secret = objects[0]
        self.assertEqual(secret["metadata"]["name"], "fetchd-db")  # no hash
        self.assertEqual(secret["metadata"]["namespace"], OVERLAYS["prod"]["namespace"])
        self.assertEqual(secret["type"], "Opaque")
        self.assertEqual(sorted(secret["data"]), ["ca.crt", "password"])

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
        self.assertLessEqual({"auth_tokens", "token_key", "password", "*.crt"},
                             ignored)
        inside = subprocess.run(["git", "-C", ROOT, "rev-parse", "--git-dir"],
                                capture_output=True, timeout=60)
        if inside.returncode != 0:  # not a git checkout
            return
        for path in ("auth_tokens", "token_key", "fetchd-db/password",
                     "fetchd-db/ca.crt"):
            check = subprocess.run(
                ["git", "-C", ROOT, "check-ignore", "-q",
                 os.path.join(SECRETS, path)], timeout=60)
            self.assertEqual(check.returncode, 0, path)


class BaseTest(unittest.TestCase):
    """k8s/base rendered alone: its own flag file keeps jobs on the pod's
    emptyDir."""

    def test_base_keeps_sqlite_jobs_on_the_data_empty_dir(self):
        objects = render_dir(os.path.join(ROOT, "k8s", "base"))
        pod = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]
        configmap = next(o for o in objects if o["kind"] == "ConfigMap")
        flags = flags_of(configmap["data"]["fetchd.flags"])
        self.assertTrue(flags.get("job_store", "sqlite:").startswith("sqlite:"))
        check_data_dir_and_sqlite_store(self, pod, flags)


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
            self.assertFalse(names & {"auth_tokens", "token_key", "password"},
                             names)

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
