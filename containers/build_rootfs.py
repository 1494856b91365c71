#!/usr/bin/env python3
"""Build the image of ``containers/avalanche.def`` as a directory with debootstrap + Charliecloud.

The same recipe Apptainer builds (``Bootstrap: debootstrap``), built where Apptainer is not
available: the definition's own header and sections are read at run time, nothing is copied.

1. ``debootstrap --variant=minbase --include=<Include:> <OSVersion> ROOT <MirrorURL>`` (what
   Apptainer's debootstrap bootstrap runs); the result is cached per header;
2. ``%files`` copied into the root filesystem (the project itself);
3. ``%post`` run inside it with ``ch-run -w`` (``{{ ARG }}`` replaced from ``%arguments`` and
   ``--build-arg``; Apptainer's comment rule: not after a ``#``), with this host's pip settings
   (local wheel folders bound in, its CA bundle) so the pinned torch installs from the local wheels;
4. ``%environment``, ``%runscript`` and ``%test`` written where Apptainer puts them
   (``/.singularity.d/``), then ``%test`` run inside the image (``ch-run``, read-only).

Build arguments that need servers this host cannot reach (ESA's SNAP installer, PyTorch's
weights) are switched off (``WITH_SNAP=0``, ``WITH_VGG16=0``) and the build says so, unless given
explicitly with ``--build-arg``.

Cache: ``$AVALANCHE_IMAGE_CACHE`` or ``/var/cache/avalanche-hpc``. The image is
``avalanche-<digest>`` (digest of the definition, ``pyproject.toml`` and the build arguments),
``avalanche`` links to the newest. A later run reuses it; when only the project's sources
(``%files``) changed it copies them again and re-runs ``%post`` in place (every step is
idempotent: pinned packages already there are kept), then ``%test``. ``--force`` rebuilds.

    python3 containers/build_rootfs.py [--def FILE] [--cache DIR] [--build-arg K=V]... [--force]
                                       [--mount-point DIR]... [--print-path]

Needs root (debootstrap), ``debootstrap`` and ``charliecloud-runtime`` (Debian packages).
Standard library only: it runs before the project's venv exists.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DEF = REPO / "containers" / "avalanche.def"
DEFAULT_CACHE = Path("/var/cache/avalanche-hpc")
LINK = "avalanche"
ENV_FILE = ".singularity.d/env/90-environment.sh"  # where Apptainer writes %environment
# build arguments that download from servers outside the package registries, and a URL to probe
REMOTE_ARGS = {"WITH_SNAP": "https://download.esa.int/", "WITH_VGG16": "https://download.pytorch.org/"}
# Build-route tools added to debootstrap's packages: dpkg runs under fakeroot during %post, since
# maintainer scripts chown to groups (staff, adm) that ch-run's single-id user namespace cannot map
# (FAKEROOTDONTTRYCHOWN: record the owner, skip the real chown). Removed from apt's path afterwards.
BUILD_TOOLS = ("fakeroot",)
APT_BUILD_CONF = "etc/apt/apt.conf.d/99-ch-run-build"
DPKG_WRAPPER = "usr/local/sbin/dpkg-under-fakeroot"
HOST_FILES = ("etc/hosts", "etc/resolv.conf")  # ch-run binds the host's copies over these
KEEP_IMAGES = 1  # image directories kept in the cache (~6.5 GB each): only the newest
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class BuildError(RuntimeError):
    """The build failed; the message says where and what to do."""


# -- the definition file ---------------------------------------------------------------------------
def parse_def(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """(header keywords, {section: body}) of an Apptainer definition file."""
    header: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^%(\w+)\s*$", line)
        if m:
            current = m.group(1)
            sections[current] = []
        elif current is None:
            if line.strip() and not line.lstrip().startswith("#"):
                k, _, v = line.partition(":")
                header[k.strip()] = v.strip()
        else:
            sections[current].append(line)
    return header, {k: "\n".join(v) for k, v in sections.items()}


def arguments(sections: dict[str, str]) -> dict[str, str]:
    """The defaults of ``%arguments``."""
    out = {}
    for ln in sections.get("arguments", "").splitlines():
        if "=" in ln and not ln.strip().startswith("#"):
            k, v = ln.strip().split("=", 1)
            out[k.strip()] = v.strip()
    return out


def substitute(text: str, args: dict[str, str]) -> str:
    """Replace ``{{ NAME }}`` like Apptainer: every line, except after a ``#`` (its comment rule)."""
    out = []
    for line in text.splitlines():
        def repl(m: re.Match[str], line: str = line) -> str:
            if re.search(r"#[^!]", line[:m.start()]):
                return m.group(0)
            if m.group(1) not in args:
                raise BuildError(f"{{{{ {m.group(1)} }}}} has no default in %arguments and no --build-arg")
            return args[m.group(1)]
        out.append(re.sub(r"\{\{\s*(\w+)\s*\}\}", repl, line))
    return "\n".join(out)


def dedent_section(body: str) -> str:
    lines = body.splitlines()
    indents = [len(ln) - len(ln.lstrip()) for ln in lines if ln.strip()]
    cut = min(indents) if indents else 0
    return "\n".join(ln[cut:] if ln[:cut].strip() == "" else ln for ln in lines).strip("\n") + "\n"


def files_entries(sections: dict[str, str]) -> list[tuple[str, str]]:
    out = []
    for ln in sections.get("files", "").splitlines():
        parts = ln.split()
        if parts and not parts[0].startswith("#"):
            out.append((parts[0], parts[1] if len(parts) > 1 else parts[0]))
    return out


# -- digests ---------------------------------------------------------------------------------------
def _walk(path: Path):
    if path.is_file():
        yield path
        return
    for p in sorted(path.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
            yield p


def stack_key(def_text: str, pyproject: str, args: dict[str, str], header: dict[str, str]) -> str:
    h = hashlib.sha256()
    for part in (def_text, pyproject, json.dumps(args, sort_keys=True), json.dumps(header, sort_keys=True)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def files_key(entries: list[tuple[str, str]], base: Path) -> str:
    h = hashlib.sha256()
    for src, dst in entries:
        for f in _walk(base / src):
            h.update(f"{f.relative_to(base)}\0{dst}\0".encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def base_key(header: dict[str, str]) -> str:
    parts = {k: header.get(k, "") for k in ("OSVersion", "MirrorURL", "Include")}
    return hashlib.sha256(json.dumps({**parts, "tools": BUILD_TOOLS}, sort_keys=True).encode()).hexdigest()


# -- host settings ---------------------------------------------------------------------------------
def reachable(url: str, timeout: float = 8.0) -> bool:
    """True when an HTTP server answers at ``url`` (any status)."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout)
        return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def host_pip_settings() -> tuple[dict[str, str], list[str]]:
    """(PIP_* environment for the build, host paths to bind) from this host's pip configuration.

    Local wheel folders (find-links) and file:// indexes are bound at the same paths; the CA
    bundle pip uses here (a site proxy's CA) is bound too.
    """
    conf: dict[str, str] = {}
    pip = shutil.which("pip") or shutil.which("pip3")
    if pip:
        r = subprocess.run([pip, "config", "list"], capture_output=True, text=True)
        for line in r.stdout.splitlines():
            m = re.match(r"^[^.]+\.([\w-]+)='(.*)'$", line.strip())
            if m:
                conf[m.group(1)] = m.group(2)
    for key in ("find-links", "extra-index-url", "index-url", "cert"):
        env = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if env:
            conf[key] = env
    env: dict[str, str] = {}
    binds: list[str] = []

    def local(url: str, up: int) -> None:
        path = Path(url[len("file://"):] if url.startswith("file://") else url)
        if path.exists():
            for _ in range(up):
                path = path.parent
            if str(path) not in binds:
                binds.append(str(path))

    for url in conf.get("find-links", "").split():
        local(url, 0)
    for url in (conf.get("index-url", "") + " " + conf.get("extra-index-url", "")).split():
        if url.startswith("file://"):
            local(url, 1)  # .../simple links to ../../files: bind the folder above
    if conf.get("find-links"):
        env["PIP_FIND_LINKS"] = conf["find-links"]
    if conf.get("extra-index-url"):
        env["PIP_EXTRA_INDEX_URL"] = conf["extra-index-url"]
    if conf.get("index-url"):
        env["PIP_INDEX_URL"] = conf["index-url"]
    cert = conf.get("cert")
    if cert and Path(cert).is_file():
        env["PIP_CERT"] = env["SSL_CERT_FILE"] = env["REQUESTS_CA_BUNDLE"] = "/opt/host-ca/" + Path(cert).name
        binds.append(f"{Path(cert).parent}:/opt/host-ca")
    return env, binds


# -- running things --------------------------------------------------------------------------------
def log(msg: str) -> None:
    print(f"[build_rootfs] {msg}", flush=True)


def run_logged(cmd: list[str], logfile: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run, echo the output and append it to ``logfile``; (return code, the output)."""
    out: list[str] = []
    with logfile.open("a", encoding="utf-8") as fh:
        fh.write(f"$ {shlex.join(cmd)}\n")
        fh.flush()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                             errors="replace")
        assert p.stdout is not None
        for line in p.stdout:
            sys.stdout.write(line)
            fh.write(line)
            out.append(line)
        return p.wait(), "".join(out)


def ch_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A clean environment for ch-run (it passes its own on; it needs USER)."""
    env = {"PATH": CLEAN_PATH, "HOME": "/root", "USER": os.environ.get("USER") or "root", "LANG": "C.UTF-8",
           "LC_ALL": "C.UTF-8"}
    env.update(extra or {})
    return env


def du_bytes(path: Path) -> int:
    r = subprocess.run(["du", "-sxb", str(path)], capture_output=True, text=True)
    return int(r.stdout.split()[0]) if r.returncode == 0 and r.stdout else -1


@contextlib.contextmanager
def locked(cache: Path):
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def copy_files(root: Path, entries: list[tuple[str, str]], base: Path) -> None:
    for src, dst in entries:
        s, d = base / src, root / dst.lstrip("/")
        if not s.exists():
            raise BuildError(f"%files: {s} does not exist (run from a full checkout)")
        if d.is_dir() and not d.is_symlink():
            shutil.rmtree(d)
        d.parent.mkdir(parents=True, exist_ok=True)
        if s.is_dir():
            shutil.copytree(s, d, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(s, d)


def write_scripts(root: Path, sections: dict[str, str], args: dict[str, str]) -> None:
    """%environment, %runscript, %test and %labels where Apptainer puts them."""
    sd = root / ".singularity.d"
    (sd / "env").mkdir(parents=True, exist_ok=True)
    (root / ENV_FILE).write_text(dedent_section(substitute(sections.get("environment", ""), args)))
    for name in ("runscript", "test"):
        f = sd / name
        f.write_text("#!/bin/sh\n" + dedent_section(substitute(sections.get(name, ""), args)))
        f.chmod(0o755)
    labels = {}
    for ln in substitute(sections.get("labels", ""), args).splitlines():
        if ln.strip():
            k, _, v = ln.strip().partition(" ")
            labels[k] = v.strip()
    (sd / "labels.json").write_text(json.dumps(labels, indent=1) + "\n")


def in_image(root: Path, script: str, *, write: bool = False, binds: list[str] = (),  # type: ignore[assignment]
             env: dict[str, str] | None = None, with_environment: bool = False) -> list[str]:
    """The ch-run command that runs a /bin/sh script in the image."""
    cmd = ["ch-run", "--private-tmp"]  # the image's own /tmp, not the host's
    if write:  # building: the image's own users and groups (dpkg's scripts look them up), not the host's
        cmd += ["-w", "--no-passwd"]
    for b in binds:
        cmd += ["-b", b]
    inner = f". /{ENV_FILE}; {script}" if with_environment else script
    return [*cmd, str(root), "--", "/bin/sh", "-c", inner]


def failed_step(output: str) -> str:
    steps = re.findall(r"^%post FAILED in step: (.+?) \(exit", output, re.M) or re.findall(
        r"^==> %post step: (.+)$", output, re.M)
    return steps[-1] if steps else "(before the first step)"


# -- the build -------------------------------------------------------------------------------------
def build(def_path: Path, cache: Path, build_args: dict[str, str], *, force: bool = False,
          mount_points: list[str] = (), base_dir: Path = REPO) -> Path:  # type: ignore[assignment]
    t_start = time.perf_counter()
    def_text = def_path.read_text(encoding="utf-8")
    header, sections = parse_def(def_text)
    if header.get("Bootstrap") != "debootstrap":
        raise BuildError(f"{def_path}: 'Bootstrap: {header.get('Bootstrap')}' -> this script builds the "
                         "'Bootstrap: debootstrap' route only (use apptainer build for a registry base)")
    for k in ("OSVersion", "MirrorURL"):
        if not header.get(k):
            raise BuildError(f"{def_path}: header keyword {k} missing (e.g. OSVersion: bookworm)")
    args = arguments(sections)
    unknown = set(build_args) - set(args)
    if unknown:
        raise BuildError(f"--build-arg {', '.join(sorted(unknown))}: not in %arguments of {def_path} "
                         f"(valid: {', '.join(args)})")
    for tool in ("debootstrap", "ch-run"):
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} not found -> apt-get install -y debootstrap charliecloud-runtime")
    for name, url in REMOTE_ARGS.items():
        if name in args and name not in build_args and args[name] == "1" and not reachable(url):
            build_args[name] = "0"
            log(f"{url} cannot be reached from here: building with {name}=0 "
                f"({'no ESA SNAP / gpt in this image' if name == 'WITH_SNAP' else 'no baked VGG16 weights'})")
    args.update(build_args)
    pyproject = (base_dir / "pyproject.toml").read_text(encoding="utf-8")
    entries = files_entries(sections)
    skey = stack_key(def_text, pyproject, args, header)
    fkey = files_key(entries, base_dir)
    image = cache / f"{LINK}-{skey[:16]}"
    meta_path = cache / f"{image.name}.json"
    logfile = cache / f"{image.name}.log"
    with locked(cache):
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        if force and image.exists():
            shutil.rmtree(image)
            meta = {}
        if image.is_dir() and meta.get("state") == "ok" and meta.get("files_key") == fkey:
            _mount_points(image, mount_points)
            _link(cache, image)
            log(f"cached image {image} (definition, pyproject.toml, build arguments and project unchanged)")
            return image
        logfile.write_text("")
        timings: dict[str, float] = {}
        fresh = not (image.is_dir() and meta.get("stack_key") == skey)
        work = image if not fresh else cache / f"{image.name}.tmp"
        if fresh:
            if work.exists():
                shutil.rmtree(work)
            base = cache / f"base-{base_key(header)[:16]}"
            t0 = time.perf_counter()
            if not (base / ".complete").is_file():
                if base.exists():
                    shutil.rmtree(base)
                tmp = Path(f"{base}.tmp")
                if tmp.exists():
                    shutil.rmtree(tmp)
                cmd = ["debootstrap", "--variant=minbase"]
                include = [*header.get("Include", "").replace(",", " ").split(), *BUILD_TOOLS]
                cmd.append("--include=" + ",".join(include))
                cmd += [header["OSVersion"], str(tmp), header["MirrorURL"]]
                log(f"debootstrap {header['OSVersion']} from {header['MirrorURL']}")
                rc, _ = run_logged(cmd, logfile)
                if rc != 0:
                    raise BuildError(f"debootstrap failed ({rc}); log {logfile}")
                (tmp / ".complete").write_text("")
                tmp.rename(base)
            timings["debootstrap_s"] = round(time.perf_counter() - t0, 1)
            t0 = time.perf_counter()
            subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(work)], check=True)
            (work / ".complete").unlink()
            timings["copy_base_s"] = round(time.perf_counter() - t0, 1)
        else:
            log(f"reusing {image}: only the project's files changed (or the last run did not finish): "
                "copying %files again and re-running %post in place")
        meta = {"state": "building", "stack_key": skey, "files_key": fkey, "args": args, "def": str(def_path),
                "header": header}
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
        # apt in a single-id user namespace: no _apt sandbox user; dpkg under fakeroot (BUILD_TOOLS)
        (work / APT_BUILD_CONF).parent.mkdir(parents=True, exist_ok=True)
        (work / APT_BUILD_CONF).write_text(f'APT::Sandbox::User "root";\nDir::Bin::dpkg "/{DPKG_WRAPPER}";\n')
        (work / DPKG_WRAPPER).parent.mkdir(parents=True, exist_ok=True)
        (work / DPKG_WRAPPER).write_text('#!/bin/sh\nFAKEROOTDONTTRYCHOWN=1 exec fakeroot-sysv /usr/bin/dpkg "$@"\n')
        (work / DPKG_WRAPPER).chmod(0o755)
        copy_files(work, entries, base_dir)
        write_scripts(work, sections, args)
        pip_env, binds = host_pip_settings()
        for b in binds:
            (work / b.split(":")[-1].lstrip("/")).mkdir(parents=True, exist_ok=True)
        post = dedent_section(substitute(sections.get("post", ""), args))
        (work / ".singularity.d" / "post.sh").write_text(post)
        log(f"%post in {work} (ch-run -w; binds: {', '.join(binds) or 'none'})")
        t0 = time.perf_counter()
        rc, out = run_logged(in_image(work, "exec /bin/sh -e /.singularity.d/post.sh", write=True, binds=binds),
                             logfile, env=ch_env(pip_env))
        timings["post_s"] = round(time.perf_counter() - t0, 1)
        for f in (APT_BUILD_CONF, DPKG_WRAPPER):  # apt in the finished image is Debian's own
            (work / f).unlink(missing_ok=True)
        for b in binds:  # the empty mount points of the build binds
            with contextlib.suppress(OSError):
                (work / b.split(":")[-1].lstrip("/")).rmdir()
        if rc != 0:
            step = failed_step(out)
            if fresh:
                shutil.rmtree(work, ignore_errors=True)
                meta_path.unlink(missing_ok=True)
            raise BuildError(f"%post of {def_path} failed in step '{step}' (exit {rc}); log {logfile}")
        _mount_points(work, mount_points)
        log("%test")
        t0 = time.perf_counter()
        rc, out = run_logged(in_image(work, "exec /bin/sh -e /.singularity.d/test", with_environment=True),
                             logfile, env=ch_env())
        timings["test_s"] = round(time.perf_counter() - t0, 1)
        if rc != 0:
            if fresh:
                shutil.rmtree(work, ignore_errors=True)
                meta_path.unlink(missing_ok=True)
            raise BuildError(f"%test of {def_path} failed (exit {rc}); log {logfile}")
        if fresh:
            work.rename(image)
        timings["total_s"] = round(time.perf_counter() - t_start, 1)
        size = du_bytes(image)
        meta.update({"state": "ok", "timings": timings, "size_bytes": size, "fresh": fresh,
                     "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
        _link(cache, image)
        _prune(cache, image, cache / f"base-{base_key(header)[:16]}")
        log(f"built {image} in {timings['total_s']} s ({'from scratch' if fresh else 'project refreshed'}; "
            f"{', '.join(f'{k} {v}' for k, v in timings.items())}); size {size / 2**30:.2f} GiB")
        return image


def _mount_points(image: Path, mount_points: list[str]) -> None:
    """Mount points ch-run needs in a read-only image: the files it binds from the host (it skips
    /etc/hosts when the image lacks it, and debootstrap's minbase has none: the node's own name
    would not resolve, and DDP's rendezvous waits for ever) and the ``--mount-point`` directories."""
    for f in HOST_FILES:
        (image / f).touch(exist_ok=True)
    for mp in mount_points:
        (image / mp.lstrip("/")).mkdir(parents=True, exist_ok=True)


def _link(cache: Path, image: Path) -> None:
    tmp = cache / f".{LINK}.link"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(image.name)
    os.replace(tmp, cache / LINK)


def _prune(cache: Path, keep: Path, base: Path | None = None) -> None:
    """Remove older images (keep KEEP_IMAGES) and debootstrap bases other than ``base``."""
    if base is not None:
        for old in cache.glob("base-*"):
            if old != base and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
    images = sorted((p for p in cache.glob(f"{LINK}-*") if p.is_dir() and not p.name.endswith(".tmp")),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [p for p in images if p != keep][KEEP_IMAGES - 1:]:
        log(f"removing the old image {old}")
        shutil.rmtree(old, ignore_errors=True)
        for suffix in (".json", ".log"):
            with contextlib.suppress(FileNotFoundError):
                (cache / f"{old.name}{suffix}").unlink()


def cache_dir() -> Path:
    return Path(os.environ.get("AVALANCHE_IMAGE_CACHE") or DEFAULT_CACHE)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--def", dest="def_path", type=Path, default=DEFAULT_DEF, help="the definition file")
    ap.add_argument("--cache", type=Path, default=None,
                    help=f"image cache (default $AVALANCHE_IMAGE_CACHE or {DEFAULT_CACHE})")
    ap.add_argument("--build-arg", action="append", default=[], metavar="NAME=VALUE",
                    help="override an %%arguments default (as apptainer build --build-arg)")
    ap.add_argument("--force", action="store_true", help="rebuild even when the cached image is current")
    ap.add_argument("--mount-point", action="append", default=[], metavar="DIR",
                    help="create DIR in the image so that ch-run can bind a host path there")
    ap.add_argument("--print-path", action="store_true", help="print only the image path on stdout at the end")
    a = ap.parse_args(argv)
    bargs = {}
    for kv in a.build_arg:
        if "=" not in kv:
            ap.error(f"--build-arg {kv!r}: expected NAME=VALUE")
        k, v = kv.split("=", 1)
        bargs[k] = v
    try:
        image = build(a.def_path.resolve(), (a.cache or cache_dir()).resolve(), bargs, force=a.force,
                      mount_points=a.mount_point)
    except BuildError as e:
        print(f"[build_rootfs] error: {e}", file=sys.stderr)
        return 1
    if a.print_path:
        print(image)
    return 0


if __name__ == "__main__":
    sys.exit(main())
