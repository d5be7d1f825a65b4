#!/usr/bin/env python3
# mpijob_test.py: launch/kubernetes/mpijob.yaml checked offline, as the cluster would check it:
# against the MPIJob v2beta1 CRD's OpenAPI schema (tests/launch/mpijob_v2beta1_schema.json,
# vendored from kubeflow/mpi-operator) with unknown fields refused (kubectl apply's default
# --validate=strict), then the mpi-operator's own admission rules (its
# pkg/apis/kubeflow/validation/validation.go after its defaults, re-stated below), then against
# the job it runs: the rank count of mpirun, the slots and the GPUs agree with examples/ppo.n3's
# world size and layout, which `n3rlhf validate` accepts. Mutated copies show each check refuses.
#   N3RLHF_BIN_DIR=build/bin .venv/bin/python tests/launch/mpijob_test.py [-v]
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import jsonschema
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(os.path.dirname(HERE))
MANIFEST = os.path.join(SOURCE_DIR, "launch", "kubernetes", "mpijob.yaml")
SCHEMA = os.path.join(HERE, "mpijob_v2beta1_schema.json")
BIN_DIR = os.environ.get("N3RLHF_BIN_DIR", os.path.join(SOURCE_DIR, "build", "bin"))


def strict(schema):
    """The CRD schema with unknown fields refused: every object schema that lists its properties
    and neither allows other keys (additionalProperties) nor keeps unknown fields
    (x-kubernetes-preserve-unknown-fields) gets additionalProperties: false. The API server
    prunes such fields, and kubectl apply (strict field validation) refuses them."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def load_validator():
    with open(SCHEMA) as f:
        schema = json.load(f)
    # The vendored file names its source; the schema itself starts below these keys.
    assert "kubeflow/mpi-operator" in schema["$comment"] and re.fullmatch(r"[0-9a-f]{40}", schema["x-source"]["commit"])
    schema = {k: v for k, v in schema.items() if k not in ("$comment", "x-source")}
    return jsonschema.Draft4Validator(strict(schema))


DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
OBJECT_META = {"name", "namespace", "labels", "annotations", "generateName"}


def operator_errors(job):
    """mpi-operator's ValidateMPIJob (pkg/apis/kubeflow/validation/validation.go at commit
    d164ea463d3d34781fd7d8ac30f0f772a887cd79) on the job after SetDefaults_MPIJob
    (pkg/apis/kubeflow/v2beta1/default.go), and ObjectMeta's own rules for the fields used here."""
    errors = []
    meta = job.get("metadata", {})
    unknown = set(meta) - OBJECT_META
    if unknown:
        errors.append(f"metadata: unknown fields {sorted(unknown)}")
    spec = copy.deepcopy(job.get("spec", {}))
    # Defaults.
    spec.setdefault("runPolicy", {}).setdefault("cleanPodPolicy", "None")
    spec.setdefault("slotsPerWorker", 1)
    spec.setdefault("sshAuthMountPath", "/root/.ssh")
    spec.setdefault("mpiImplementation", "OpenMPI")
    replicas = spec.get("mpiReplicaSpecs") or {}
    if "Launcher" in replicas:
        replicas["Launcher"].setdefault("restartPolicy", "OnFailure")
        replicas["Launcher"].setdefault("replicas", 1)
    if "Worker" in replicas:
        replicas["Worker"].setdefault("restartPolicy", "Never")
        replicas["Worker"].setdefault("replicas", 0)
    # validateMPIJobName: the last worker's pod hostname must be a DNS-1035 label.
    workers = replicas.get("Worker", {}).get("replicas") or 1
    hostname = f"{meta.get('name', '')}-worker-{max(workers, 1) - 1}"
    if len(hostname) > 63 or not DNS1035.fullmatch(hostname):
        errors.append(f"metadata.name: pod hostname {hostname!r} is not a DNS-1035 label")
    if spec["slotsPerWorker"] < 0:
        errors.append("spec.slotsPerWorker: must be non-negative")
    policy = spec["runPolicy"]
    if policy["cleanPodPolicy"] not in ("None", "Running", "All"):
        errors.append(f"spec.runPolicy.cleanPodPolicy: unsupported {policy['cleanPodPolicy']!r}")
    for field in ("ttlSecondsAfterFinished", "activeDeadlineSeconds", "backoffLimit"):
        if policy.get(field) is not None and policy[field] < 0:
            errors.append(f"spec.runPolicy.{field}: must be non-negative")
    if "managedBy" in policy and policy["managedBy"] not in ("kubeflow.org/mpi-operator", "kueue.x-k8s.io/multikueue"):
        errors.append(f"spec.runPolicy.managedBy: unsupported {policy['managedBy']!r}")
    if not spec["sshAuthMountPath"]:
        errors.append("spec.sshAuthMountPath: required")
    if spec["mpiImplementation"] not in ("OpenMPI", "Intel", "MPICH"):
        errors.append(f"spec.mpiImplementation: unsupported {spec['mpiImplementation']!r}")
    if not replicas:
        errors.append("spec.mpiReplicaSpecs: required")
        return errors
    if "Launcher" not in replicas:
        errors.append("spec.mpiReplicaSpecs[Launcher]: required")
    for role, rs in replicas.items():
        path = f"spec.mpiReplicaSpecs[{role}]"
        if rs.get("replicas") is None:
            errors.append(f"{path}.replicas: required")
        if rs.get("restartPolicy") not in ("Never", "OnFailure"):
            errors.append(f"{path}.restartPolicy: unsupported {rs.get('restartPolicy')!r}")
        if not rs.get("template", {}).get("spec", {}).get("containers"):
            errors.append(f"{path}.template.spec.containers: must define at least one container")
    if "Launcher" in replicas and replicas["Launcher"].get("replicas") != 1:
        errors.append("spec.mpiReplicaSpecs[Launcher].replicas: must be 1")
    if "Worker" in replicas and (replicas["Worker"].get("replicas") or 0) <= 0:
        errors.append("spec.mpiReplicaSpecs[Worker].replicas: must be greater than or equal to 1")
    return errors


def option_value(command, name):
    for i, part in enumerate(command[:-1]):
        if part == name:
            return command[i + 1]
    return None


def consistency_errors(job, bin_dir=BIN_DIR, example=True):
    """The MPIJob against the job it runs: ranks, slots, GPUs, the job file's mount and layout
    (the layout from the example of the job file's name, unless example is False)."""
    errors = []
    spec = job["spec"]
    launcher = spec["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    worker_spec = spec["mpiReplicaSpecs"]["Worker"]
    worker = worker_spec["template"]["spec"]["containers"][0]
    command = launcher.get("command", []) + launcher.get("args", [])
    if not command or os.path.basename(command[0]) != "mpirun":
        return [f"the launcher does not run mpirun: {command}"]
    np = int(option_value(command, "-np") or option_value(command, "-n") or 0)
    slots = spec.get("slotsPerWorker", 1) * worker_spec["replicas"]
    if np != slots:
        errors.append(f"mpirun -np {np} but slotsPerWorker x Worker replicas = {slots}")
    gpus = int(worker.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
    if gpus != spec.get("slotsPerWorker", 1):
        errors.append(f"a worker has {gpus} GPU(s) for {spec.get('slotsPerWorker', 1)} rank(s)")
    # Open MPI's daemons reach the workers over ssh: the workers must serve it.
    worker_command = worker.get("command", []) + worker.get("args", [])
    if not worker_command or os.path.basename(worker_command[0]) != "sshd" or "-D" not in "".join(worker_command[1:]):
        errors.append(f"the workers do not run sshd in the foreground: {worker_command}")
    # The job file: after n3rlhf-dist in the command, from a volume every worker mounts.
    dist = [i for i, part in enumerate(command) if part.endswith("/n3rlhf-dist")]
    if not dist:
        return errors + ["mpirun does not start n3rlhf-dist"]
    job_path = command[dist[0] + 1]
    mounts = {m["mountPath"]: m["name"] for m in worker.get("volumeMounts", [])}
    mount = next((p for p in mounts if job_path.startswith(p.rstrip("/") + "/")), None)
    if mount is None:
        return errors + [f"no worker volume holds the job file {job_path}"]
    volumes = {v["name"]: v for v in worker_spec["template"]["spec"].get("volumes", [])}
    if mounts[mount] not in volumes:
        errors.append(f"the worker mounts volume {mounts[mount]!r}, which the pod does not define")
    wdir = option_value(command, "-wdir") or option_value(command, "--wdir")
    if wdir and not any(wdir == p or wdir.startswith(p.rstrip("/") + "/") for p in mounts):
        errors.append(f"the ranks run in {wdir}, which no worker volume provides")
    if not example:
        return errors
    # The job file is the example of the same name (the ConfigMap is made from it).
    example = os.path.join(SOURCE_DIR, "examples", os.path.basename(job_path))
    if not os.path.isfile(example):
        return errors + [f"{job_path}: no examples/{os.path.basename(job_path)} to make the ConfigMap from"]
    sets = []
    for i, part in enumerate(command[dist[0] + 2:-1], start=dist[0] + 2):
        if part == "--set":
            sets += ["--set", command[i + 1]]
    result = subprocess.run([os.path.join(bin_dir, "n3rlhf"), "validate", "--world-size", str(np), example] + sets,
                            capture_output=True, text=True)
    if result.returncode != 0:
        return errors + [f"n3rlhf validate --world-size {np} {example}: {result.stderr}"]
    jobs = json.loads(result.stdout)["jobs"]
    if len(jobs) != 1:
        return errors + [f"{example} has {len(jobs)} jobs; the command names none (--job)"]
    distributed = jobs[0]["distributed"]
    # validate --world-size has checked the layout against the rank count; the job must be the
    # split one (roles on their own ranks), with no other world size.
    if distributed.get("world_size") not in (None, 0, np):
        errors.append(f"the job's world_size is {distributed['world_size']}, mpirun starts {np}")
    if distributed.get("layout", {}).get("kind") != "split":
        errors.append(f"the job's layout is not split: {distributed.get('layout')}")
    return errors


def load_manifest(path=MANIFEST):
    with open(path) as f:
        documents = [d for d in yaml.safe_load_all(f) if d]
    jobs = [d for d in documents if d.get("kind") == "MPIJob"]
    assert len(jobs) == 1, f"{path}: expected one MPIJob, found {len(jobs)}"
    return jobs[0]


class MpiJobManifest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.validator = load_validator()
        cls.job = load_manifest()

    def schema_errors(self, job):
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in self.validator.iter_errors(job)]

    def test_manifest_matches_the_crd_schema(self):
        self.assertEqual(self.job["apiVersion"], "kubeflow.org/v2beta1")
        self.assertEqual(self.job["kind"], "MPIJob")
        self.assertEqual(self.schema_errors(self.job), [])

    def test_manifest_passes_the_operators_validation(self):
        self.assertEqual(operator_errors(self.job), [])

    def test_manifest_runs_the_split_ppo_job_on_its_ranks(self):
        self.assertEqual(consistency_errors(self.job), [])
        command = self.job["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]["command"]
        self.assertIn("/jobs/ppo.n3", command)

    def test_schema_refuses_what_the_cluster_would(self):
        def mutated(change):
            job = copy.deepcopy(self.job)
            change(job)
            return self.schema_errors(job)

        # A misspelt field (kubectl apply refuses it; the server would drop it).
        self.assertTrue(any("slotPerWorker" in e for e in mutated(lambda j: j["spec"].update(slotPerWorker=4))))
        # A misspelt field deep in the pod template.
        self.assertTrue(any("volumeMount" in e for e in mutated(
            lambda j: j["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0].update(volumeMount=[]))))
        # A count as a string, an unknown MPI implementation, a container without a name.
        self.assertTrue(mutated(lambda j: j["spec"]["mpiReplicaSpecs"]["Worker"].update(replicas="2")))
        self.assertTrue(any("OpenMPI5" in e for e in mutated(lambda j: j["spec"].update(mpiImplementation="OpenMPI5"))))
        self.assertTrue(any("'name' is a required property" in e for e in mutated(
            lambda j: j["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0].pop("name"))))
        # A resource quantity that is neither a number nor a quantity string.
        self.assertTrue(mutated(lambda j: j["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
                                ["resources"]["limits"].update(memory="two gigabytes")))

    def test_operator_rules_refuse_what_the_operator_would(self):
        def mutated(change):
            job = copy.deepcopy(self.job)
            change(job)
            return operator_errors(job)

        self.assertTrue(mutated(lambda j: j["spec"]["mpiReplicaSpecs"]["Launcher"].update(replicas=2)))
        self.assertTrue(mutated(lambda j: j["spec"]["mpiReplicaSpecs"]["Worker"].update(restartPolicy="Always")))
        self.assertTrue(mutated(lambda j: j["spec"]["runPolicy"].update(cleanPodPolicy="Sometimes")))
        self.assertTrue(mutated(lambda j: j["metadata"].update(name="N3rlhf_PPO")))
        self.assertTrue(mutated(lambda j: j["metadata"].update(name="x" * 60)))

    def test_consistency_checks_refuse_a_mismatched_job(self):
        def mutated(change):
            job = copy.deepcopy(self.job)
            change(job)
            return consistency_errors(job)

        launcher = lambda j: j["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
        worker = lambda j: j["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]

        def ranks(j, n):
            command = launcher(j)["command"]
            command[command.index("-np") + 1] = str(n)
        # 16 ranks for 8 slots; and 16 slots for a job whose layout places 8.
        self.assertTrue(any("-np 16" in e for e in mutated(lambda j: ranks(j, 16))))
        errors = mutated(lambda j: (ranks(j, 16), j["spec"].update(slotsPerWorker=8), worker(j)["resources"]["limits"].update(
            {"nvidia.com/gpu": 8})))
        self.assertTrue(errors and "n3rlhf validate --world-size 16" in errors[0] and "RLHF004" in errors[0], errors)
        self.assertTrue(mutated(lambda j: worker(j)["resources"]["limits"].update({"nvidia.com/gpu": 8})))
        self.assertTrue(mutated(lambda j: worker(j).pop("command")))
        self.assertTrue(mutated(lambda j: worker(j).update(volumeMounts=[])))


class ServiceRenderedMpiJob(unittest.TestCase):
    """The MPIJob `n3rlhf serve` renders for a job submitted with launcher "kubernetes" passes the
    same checks: the CRD schema, the operator's rules, ranks = slots x workers with a GPU per
    rank, sshd on the workers, the job file from its ConfigMap on every pod, and the shared claim
    mounted where the ranks run and where the service saw the job's paths."""

    @classmethod
    def setUpClass(cls):
        sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "service", "py"))
        import harness  # noqa: E402 (the service tests' own: tokens, a free port, /health)

        cls.validator = load_validator()
        cls.work = tempfile.mkdtemp()
        serve = harness.Serve(os.path.join(BIN_DIR, "service_serve"), f"sqlite:{cls.work}/store.db", cls.work,
                              extra=["--k8s-slots", "8", "--k8s-shared-claim", "n3rlhf-shared", "--k8s-shared-path", cls.work])
        try:
            body = {"job_name": "Rendered", "algorithm": "dpo", "base_model": f"{cls.work}/models/m",
                    "dataset_path": f"{cls.work}/data/pairs.jsonl", "config": {"dpo": {"beta": 0.2}, "hyperparameters": {"batch_size": 24}},
                    "launcher": "kubernetes", "ranks": 12, "overrides": ["hyperparameters.max_steps=5"]}
            status, answer = serve.request("POST", "/api/rlhf/jobs", body=json.dumps(body), token="operator")
            assert status == 201, answer
            cls.record = answer
        finally:
            serve.stop()
        documents = [d for d in yaml.safe_load_all(cls.record["manifest"]) if d]
        cls.config_map = next(d for d in documents if d["kind"] == "ConfigMap")
        cls.job = next(d for d in documents if d["kind"] == "MPIJob")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.work, ignore_errors=True)

    def test_it_passes_the_schema_and_the_operators_rules(self):
        self.assertEqual([f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in self.validator.iter_errors(self.job)], [])
        self.assertEqual(operator_errors(self.job), [])

    def test_it_runs_the_submitted_job_on_its_ranks(self):
        self.assertEqual(consistency_errors(self.job, example=False), [])
        spec = self.job["spec"]
        self.assertEqual((spec["slotsPerWorker"], spec["mpiReplicaSpecs"]["Worker"]["replicas"]), (6, 2))  # 12 ranks
        launcher = spec["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]
        command = launcher["containers"][0]["command"]
        self.assertEqual(command[command.index("-np") + 1], "12")
        self.assertEqual(command[command.index("-wdir") + 1], self.work)
        sets = [command[i + 1] for i, part in enumerate(command[:-1]) if part == "--set"]
        self.assertIn("hyperparameters.max_steps=5", sets)
        # The output goes under the job's directory, on the shared claim.
        self.assertTrue(any(s.startswith(f"output.dir={self.work}/jobs/") for s in sets), sets)
        job_file = self.config_map["data"]["job.n3"]  # the seed's fields rendered as N3
        self.assertTrue(job_file.startswith('train rlhf "Rendered" {'), job_file)
        self.assertIn(f'base_model: "{self.work}/models/m"', job_file)
        self.assertEqual(self.config_map["metadata"]["name"],
                         next(v for v in launcher["volumes"] if v["name"] == "jobs")["configMap"]["name"])
        for role in ("Launcher", "Worker"):
            pod = spec["mpiReplicaSpecs"][role]["template"]["spec"]
            claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
            self.assertEqual(claims, ["n3rlhf-shared"], role)
            self.assertIn({"name": "shared", "mountPath": self.work}, pod["containers"][0]["volumeMounts"], role)


if __name__ == "__main__":
    unittest.main()
