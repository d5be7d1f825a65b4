#!/usr/bin/env python3
# dockerfile_test.py: launch/docker/Dockerfile checked without pulling or building an image.
# Every COPY source exists in the context (the repository after setup.sh and build.sh) and is
# not left out by Dockerfile.dockerignore; the entrypoint is a binary the build produces, and it
# runs with the image's default arguments; every program the MPIJob manifest and the service's
# rendered MPIJobs start is in the image; and every shared library the two binaries need,
# followed through the libraries copied in, is found in the image: copied (through their run
# paths or the image's ld.so.conf), or from a Debian package the Dockerfile installs (or its
# dependencies, or the base image's required packages), or the GPU driver.
#   N3RLHF_BIN_DIR=build/bin .venv/bin/python tests/launch/dockerfile_test.py [-v]
import functools
import glob
import json
import os
import re
import shlex
import subprocess
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(os.path.dirname(HERE))
DOCKERFILE = os.path.join(SOURCE_DIR, "launch", "docker", "Dockerfile")
IGNORE_FILE = DOCKERFILE + ".dockerignore"
MANIFEST = os.path.join(SOURCE_DIR, "launch", "kubernetes", "mpijob.yaml")
BIN_DIR = os.path.realpath(os.environ.get("N3RLHF_BIN_DIR", os.path.join(SOURCE_DIR, "build", "bin")))
# Libraries of the GPU driver: the NVIDIA container toolkit mounts them from the host.
DRIVER_LIBRARIES = {"libcuda.so.1", "libnvidia-ml.so.1"}
# Programs of packages that need not be installed here, and the package that ships them.
KNOWN_PROGRAMS = {"/usr/sbin/sshd": "openssh-server", "/usr/bin/ssh": "openssh-client"}
STANDARD_LIBRARY_DIRS = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib"]


def instructions(path):
    """(INSTRUCTION, text) pairs: comments dropped, continuation lines joined."""
    out, pending = [], ""
    with open(path) as f:
        for line in f:
            stripped = line.strip()
            if not pending and (not stripped or stripped.startswith("#")):
                continue
            if pending and stripped.startswith("#"):
                continue
            if stripped.endswith("\\"):
                pending += stripped[:-1] + " "
                continue
            text = pending + stripped
            pending = ""
            keyword, _, rest = text.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def substitute(text, args):
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)


def exec_form(text):
    text = text.strip()
    return json.loads(text) if text.startswith("[") else shlex.split(text)


class Image:
    """What the Dockerfile puts where: COPY sources (context paths) by image path, apt packages,
    environment, entrypoint and command."""

    def __init__(self, path=DOCKERFILE):
        self.args, self.env, self.packages = {}, {}, []
        self.copies = []  # (context sources, image destination, flags)
        self.entrypoint, self.cmd, self.base = [], [], None
        for keyword, text in instructions(path):
            if keyword == "ARG":
                name, _, default = text.partition("=")
                self.args.setdefault(name.strip(), default.strip())
            elif keyword == "FROM":
                self.base = substitute(text.split()[0], self.args)
            elif keyword == "RUN":
                for command in re.split(r"&&|;", substitute(text, self.args)):
                    words = command.split()
                    if "apt-get" in words and "install" in words:
                        self.packages += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
            elif keyword == "COPY":
                words = exec_form(substitute(text, self.args))
                flags = [w for w in words if w.startswith("--")]
                paths = [w for w in words if not w.startswith("--")]
                self.copies.append((paths[:-1], paths[-1], flags))
            elif keyword == "ENV":
                for word in shlex.split(substitute(text, {**self.args, **self.env})):
                    name, _, value = word.partition("=")
                    self.env[name] = value
            elif keyword == "ENTRYPOINT":
                self.entrypoint = exec_form(text)
            elif keyword == "CMD":
                self.cmd = exec_form(text)

    @staticmethod
    def context_path(source):
        """A context path on this machine: build/bin/ is wherever this build put its binaries."""
        if source.startswith("build/bin/"):
            return os.path.join(BIN_DIR, source[len("build/bin/"):])
        return os.path.join(SOURCE_DIR, source)

    def expand(self, source):
        return sorted(glob.glob(self.context_path(source)))

    def files(self, patterns=None):
        """image path -> file on this machine, for every file the COPY lines put in the image
        (less what the ignore file keeps out of the context)."""
        patterns = ignore_patterns() if patterns is None else patterns
        files = {}
        for sources, dest, _ in self.copies:
            matches = [(s, m) for s in sources for m in self.expand(s)]
            into_dir = dest.endswith("/") or len(matches) > 1
            for source, match in matches:
                relative = context_relative(source, match)
                if os.path.isdir(match):
                    for root, _, names in os.walk(match, followlinks=True):
                        for name in names:
                            host = os.path.join(root, name)
                            inside = os.path.relpath(host, match)
                            if not ignored(os.path.normpath(os.path.join(relative, inside)), patterns):
                                files[os.path.normpath(os.path.join(dest, inside))] = host
                elif not ignored(relative, patterns):
                    target = os.path.join(dest, os.path.basename(match)) if into_dir else dest
                    files[os.path.normpath(target)] = match
        return files


def context_relative(source, match):
    """The context path of `match`, one of the files or directories `source` names."""
    if not any(c in source for c in "*?["):
        return os.path.normpath(source)
    return os.path.normpath(os.path.join(os.path.dirname(source), os.path.basename(match)))


def ignore_patterns(path=IGNORE_FILE):
    patterns = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            pattern = os.path.normpath(line.lstrip("!").lstrip("/"))
            regex = ""
            for part in re.split(r"(\*\*|\*|\?)", pattern):
                regex += {"**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
            patterns.append((re.compile(regex + r"\Z"), negated))
    return patterns


def ignored(relative, patterns):
    """Docker's rule: the last pattern that matches the path or one of its parent directories
    decides; a plain pattern leaves it out, a '!' pattern takes it back in."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for regex, negated in patterns:
        if any(regex.match(p) for p in prefixes):
            excluded = not negated
    return excluded


def elf_dynamic(path):
    """(NEEDED sonames, run path entries) of an ELF file; None if it is not one."""
    result = subprocess.run(["readelf", "-d", "-W", path], capture_output=True, text=True)
    if result.returncode != 0:
        return None
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", result.stdout)
    runpath = []
    for entries in re.findall(r"\((?:RPATH|RUNPATH)\)\s+Library r(?:un)?path: \[([^\]]*)\]", result.stdout):
        runpath += [e for e in entries.split(":") if e]
    return needed, runpath


def host_library_index():
    index = {}
    for line in subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout.splitlines()[1:]:
        m = re.match(r"\s*(\S+) \((.*?)\) => (\S+)", line)
        if m and "x86-64" in m.group(2):
            index.setdefault(m.group(1), m.group(3))
    return index


@functools.lru_cache(maxsize=None)
def owning_package(path):
    for candidate in dict.fromkeys([path, os.path.realpath(path), "/usr" + path if not path.startswith("/usr/") else path]):
        result = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        if result.returncode == 0:
            return result.stdout.split(":")[0].split(",")[0].strip()
    return None


@functools.lru_cache(maxsize=None)
def installed_packages():
    """name -> (dependency names, provides, priority, essential) of every installed package."""
    fields = "${Package}\t${Depends},${Pre-Depends}\t${Provides}\t${Priority}\t${Essential}\t${db:Status-Abbrev}\n"
    out = subprocess.run(["dpkg-query", "-W", "-f=" + fields], capture_output=True, text=True).stdout
    packages = {}
    for line in out.splitlines():
        name, depends, provides, priority, essential, status = (line.split("\t") + [""] * 6)[:6]
        if not status.startswith("ii"):
            continue
        names = lambda text: [a.strip().split(" ")[0].split(":")[0] for alts in text.split(",") for a in alts.split("|") if a.strip()]
        packages[name] = (names(depends), names(provides), priority, essential == "yes")
    return packages


def package_closure(packages):
    """The packages, what they depend on (as installed here), and the base image's: the
    packages of priority required (what debian:bookworm-slim holds)."""
    installed = installed_packages()
    providers = {}
    for name, (_, provides, _, _) in installed.items():
        for virtual in provides:
            providers.setdefault(virtual, []).append(name)
    todo = list(packages) + [n for n, (_, _, priority, essential) in installed.items() if priority == "required" or essential]
    closure = set()
    while todo:
        package = todo.pop()
        if package in closure:
            continue
        closure.add(package)
        if package in installed:
            todo += installed[package][0]
        todo += providers.get(package, [])
    return closure


class Dockerfile(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.image = Image()
        cls.files = cls.image.files()

    def test_every_copy_source_is_in_the_context(self):
        patterns = ignore_patterns()
        self.assertTrue(self.image.copies)
        for sources, dest, flags in self.image.copies:
            self.assertFalse([f for f in flags if f.startswith("--from")], "a COPY from another stage or image")
            for source in sources:
                matches = self.image.expand(source)
                self.assertTrue(matches, f"COPY {source} {dest}: nothing at {self.image.context_path(source)}")
                for match in matches:
                    relative = context_relative(source, match)
                    self.assertFalse(ignored(relative, patterns),
                                     f"COPY {source}: {relative} is left out by {os.path.basename(IGNORE_FILE)}")
        # Every COPY line brings at least one file (a directory whose files are all left out
        # would make an empty one).
        for sources, dest, _ in self.image.copies:
            image = Image.__new__(Image)
            image.copies = [(sources, dest, [])]
            self.assertTrue(image.files(patterns), f"COPY {' '.join(sources)} {dest}: every file is left out")

    def test_ignore_file_leaves_the_rest_out(self):
        patterns = ignore_patterns()
        for relative in ("build/CMakeCache.txt", "src/core/config.cpp", ".venv/bin/python",
                         ".venv/lib/python3.11/site-packages/transformers/__init__.py", ".git/HEAD", "build/bin/trainer_test",
                         ".venv/lib/python3.11/site-packages/nvidia/cu13/include/cublas.h",
                         ".venv/lib/python3.11/site-packages/nvidia/cu13/lib/libcudart_static.a"):
            self.assertTrue(ignored(relative, patterns), f"{relative} would be sent with the context")

    def test_entrypoint_is_a_built_binary_and_runs(self):
        self.assertTrue(self.image.entrypoint, "no ENTRYPOINT")
        target = self.image.entrypoint[0]
        self.assertTrue(target in self.files, f"ENTRYPOINT {target} is not copied into the image")
        host = self.files[target]
        self.assertEqual(os.path.dirname(host), BIN_DIR, f"ENTRYPOINT {target} is not a built binary ({host})")
        name = os.path.basename(host)
        targets = subprocess.run(["grep", "-rhoE", r"add_executable\(" + re.escape(name) + r"\b", "tools", "launch"],
                                 cwd=SOURCE_DIR, capture_output=True, text=True).stdout
        self.assertTrue(targets, f"no CMake target builds {name}")
        self.assertTrue(os.access(host, os.X_OK))
        result = subprocess.run([host] + self.image.entrypoint[1:] + self.image.cmd, capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, f"{target} {' '.join(self.image.cmd)}: {result.stderr}")

    def in_image(self, program):
        """Where a program the manifests start comes from: a copied file, or a package."""
        if program in self.files:
            return True
        if not program.startswith("/"):
            for directory in self.image.env.get("PATH", "").split(":") + ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin"]:
                if os.path.join(directory, program) in self.files:
                    return True
            host = subprocess.run(["sh", "-c", f"command -v {shlex.quote(program)}"], capture_output=True, text=True).stdout.strip()
            if not host:
                return False
            program = host
        package = owning_package(os.path.realpath(program)) or owning_package(program) or KNOWN_PROGRAMS.get(program)
        return package is not None and package in package_closure(self.image.packages)

    def test_programs_the_manifests_start_are_in_the_image(self):
        with open(MANIFEST) as f:
            job = next(d for d in yaml.safe_load_all(f) if d and d.get("kind") == "MPIJob")
        programs = []
        for role in job["spec"]["mpiReplicaSpecs"].values():
            for container in role["template"]["spec"]["containers"]:
                command = container.get("command", []) + container.get("args", [])
                programs += [command[0]] + [p for p in command[1:] if p.startswith("/opt/")]
        # The service's rendered MPIJobs start its default kubernetes_binary.
        with open(os.path.join(SOURCE_DIR, "src", "service", "service_options.hpp")) as f:
            programs += re.findall(r'kubernetes_binary = "([^"]+)"', f.read())
        self.assertIn("/usr/sbin/sshd", programs)
        # Rank 0's sidecars (push_to_hub, the W&B tracker) run N3RLHF_PYTHON's default, python3,
        # and the W&B sidecar script from beside the binaries.
        programs += ["/usr/bin/python3", "/opt/n3rlhf/build/bin/n3rlhf_wandb_sidecar.py"]
        for program in programs:
            self.assertTrue(self.in_image(program), f"{program} is not in the image")

    def test_every_library_the_binaries_need_is_in_the_image(self):
        missing, visited, from_packages = library_check(self.image, self.files)
        self.assertEqual(missing, [], "\n".join(missing))
        # The walk went through libtorch to the CUDA wheels, and found Open MPI by its package.
        for library in ("/opt/n3rlhf/python/torch/lib/libtorch_cpu.so", "/opt/n3rlhf/python/torch/lib/libtorch_cuda.so",
                        "/opt/n3rlhf/python/nvidia/cudnn/lib/libcudnn.so.9", "/opt/n3rlhf/python/pyarrow/libparquet.so.2500"):
            self.assertIn(library, visited)
        self.assertIn("libopenmpi3", from_packages)

    def test_library_check_finds_what_is_missing(self):
        # Without Open MPI's packages, and without the image's ld.so.conf.
        image = Image()
        image.packages = [p for p in image.packages if p not in ("libopenmpi3", "openmpi-bin")]
        missing, _, _ = library_check(image, self.files)
        self.assertTrue(any(m.startswith("libmpi.so.40 ") for m in missing), missing)
        files = {t: h for t, h in self.files.items() if not t.startswith("/etc/ld.so.conf.d/")}
        missing, _, _ = library_check(self.image, files)
        self.assertTrue(any(m.startswith("libtorch.so ") for m in missing), missing)


def library_check(image, files):
    """Follows the NEEDED entries from the two binaries through the libraries copied into the
    image. Returns (what is not found, the image paths visited, the packages that provide)."""
    ld_conf = []
    for target, host in files.items():
        if target.startswith("/etc/ld.so.conf.d/"):
            with open(host) as f:
                ld_conf += [line.strip() for line in f if line.strip() and not line.startswith("#")]
    by_dir = {}
    for target in files:
        by_dir.setdefault(os.path.dirname(target), set()).add(os.path.basename(target))
    host_index = host_library_index()
    closure = package_closure(image.packages)
    missing, from_packages = [], set()
    binaries = sorted(t for t in files if t.startswith("/opt/n3rlhf/build/bin/") and not t.endswith(".py"))
    assert [os.path.basename(b) for b in binaries] == ["n3rlhf", "n3rlhf-dist"], binaries
    todo, seen = list(binaries), set()
    while todo:
        target = todo.pop()
        if target in seen:
            continue
        seen.add(target)
        dynamic = elf_dynamic(files[target])
        assert dynamic is not None, f"{target} (from {files[target]}) is not an ELF file"
        needed, runpath = dynamic
        origin = os.path.dirname(target)
        # The loader's order: the run path, then ld.so.cache (the image's directories come
        # first: n3rlhf.conf sorts before x86_64-linux-gnu.conf), then the system's.
        dirs = [os.path.normpath(d.replace("${ORIGIN}", origin).replace("$ORIGIN", origin)) for d in runpath] + ld_conf
        for soname in needed:
            found = next((os.path.join(d, soname) for d in dirs if soname in by_dir.get(d, ())), None)
            if found:
                todo.append(found)
                continue
            if soname in DRIVER_LIBRARIES:
                continue
            host = host_index.get(soname)
            package = owning_package(host) if host else None
            if package and package in closure:
                from_packages.add(package)
                continue
            missing.append(f"{soname} (needed by {target}; here {host or 'not found'}, package {package})")
    return missing, seen, from_packages


if __name__ == "__main__":
    unittest.main()
