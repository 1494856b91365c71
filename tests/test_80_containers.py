"""The Apptainer definition and the SNAP graphs, checked statically (no Apptainer or SNAP on these machines).

The table of SNAP names below was read from SNAP's Java sources (operator alias in
``@OperatorMetadata(alias=...)``, parameter names from the ``@Parameter`` fields):

- senbox-org/snap-engine @ 048ce3a2538cd05a7bcc7ff0392a157ae6535bf7
    snap-gpf/src/main/java/org/esa/snap/core/gpf/common/ReadOp.java              (Read)
    snap-gpf/src/main/java/org/esa/snap/core/gpf/common/WriteOp.java             (Write)
    snap-core/src/main/java/org/esa/snap/core/dataop/resamp/ResamplingFactory.java (resampling names)
    snap-bigtiff/src/main/java/org/esa/snap/dataio/bigtiff/BigGeoTiffProductReaderPlugIn.java (GeoTIFF-BigTIFF)
- senbox-org/microwave-toolbox @ 7b8702814910136c8c81c39f9b7efb8eea394806
    sar-io-ephemeris/src/main/java/eu/esa/sar/orbits/gpf/ApplyOrbitFileOp.java    (Apply-Orbit-File)
    sar-io-ephemeris/src/main/java/eu/esa/sar/orbits/io/sentinel1/SentinelPODOrbitFile.java (orbit type names)
    sar-op-calibration/src/main/java/eu/esa/sar/calibration/gpf/Sentinel1RemoveThermalNoiseOp.java (ThermalNoiseRemoval)
    sar-op-calibration/src/main/java/eu/esa/sar/calibration/gpf/CalibrationOp.java (Calibration)
    sar-op-sar-processing/src/main/java/eu/esa/sar/sar/gpf/filtering/SpeckleFilterOp.java (Speckle-Filter)
    sar-op-sar-processing/src/main/java/eu/esa/sar/sar/gpf/geometric/RangeDopplerGeocodingOp.java (Terrain-Correction)
"""

from __future__ import annotations

import re
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from avalanche_hpc.hpc.container import python_command, python_setting
from avalanche_hpc.inputs.snap import gpt as gptmod

REPO = Path(__file__).resolve().parents[1]
DEF = REPO / "containers" / "avalanche.def"
GRAPHS = sorted((REPO / "containers" / "graphs").glob("*.xml"))

# operator alias -> its @Parameter names (complete lists from the sources cited above)
SNAP_OPERATORS: dict[str, set[str]] = {
    "Read": {"file", "formatName", "sourceBands", "sourceMasks", "pixelRegion", "geometryRegion", "vectorFile",
             "polygonRegion", "useAdvancedOptions", "copyMetadata"},
    "Apply-Orbit-File": {"orbitType", "polyDegree", "continueOnFail"},
    "ThermalNoiseRemoval": {"selectedPolarisations", "removeThermalNoise", "outputNoise", "reIntroduceThermalNoise",
                            "clipNegativeValues"},
    "Calibration": {"sourceBands", "auxFile", "externalAuxFile", "outputImageInComplex", "outputImageScaleInDb",
                    "createGammaBand", "createBetaBand", "selectedPolarisations", "outputSigmaBand", "outputGammaBand",
                    "outputBetaBand"},
    "Speckle-Filter": {"sourceBands", "filter", "filterSizeX", "filterSizeY", "dampingFactor", "estimateENL", "enl",
                       "numLooksStr", "windowSize", "targetWindowSizeStr", "sigmaStr", "anSize"},
    "Terrain-Correction": {"sourceBands", "demName", "externalDEMFile", "externalDEMNoDataValue", "externalDEMApplyEGM",
                           "demResamplingMethod", "imgResamplingMethod", "pixelSpacingInMeter", "pixelSpacingInDegree",
                           "mapProjection", "alignToStandardGrid", "standardGridOriginX", "standardGridOriginY",
                           "nodataValueAtSea", "saveDEM", "saveLatLon", "saveIncidenceAngleFromEllipsoid",
                           "saveLocalIncidenceAngle", "saveProjectedLocalIncidenceAngle", "saveSelectedSourceBand",
                           "saveLayoverShadowMask", "outputComplex", "applyRadiometricNormalization",
                           "saveSigmaNought", "saveGammaNought", "saveBetaNought", "incidenceAngleForSigma0",
                           "incidenceAngleForGamma0", "auxFile", "externalAuxFile"},
    "Write": {"file", "formatName", "deleteOutputOnFailure", "writeEntireTileRows", "clearCacheAfterRowWrite"},
}
# value sets of the enumerated parameters the graph sets (same sources)
SNAP_VALUE_SETS: dict[tuple[str, str], set[str]] = {
    ("Apply-Orbit-File", "orbitType"): {"Sentinel Precise (Auto Download)", "Sentinel Restituted (Auto Download)"},
    ("Speckle-Filter", "filter"): {"None", "Boxcar", "Median", "Frost", "Gamma Map", "Lee", "Refined Lee", "Lee Sigma",
                                   "IDAN", "MuLoG"},
    ("Terrain-Correction", "demResamplingMethod"): {"NEAREST_NEIGHBOUR", "BILINEAR_INTERPOLATION",
                                                    "CUBIC_CONVOLUTION", "BICUBIC_INTERPOLATION"},
    ("Terrain-Correction", "imgResamplingMethod"): {"NEAREST_NEIGHBOUR", "BILINEAR_INTERPOLATION",
                                                    "CUBIC_CONVOLUTION", "BICUBIC_INTERPOLATION"},
    ("Write", "formatName"): {"GeoTIFF", "GeoTIFF-BigTIFF", "BEAM-DIMAP"},
}
ORDER = ["Read", "Apply-Orbit-File", "ThermalNoiseRemoval", "Calibration", "Speckle-Filter", "Terrain-Correction",
         "Write"]


# -- the definition file -------------------------------------------------------------------------
def parse_def(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """(header keywords, {section name: body}) of an Apptainer definition file."""
    header: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^%(\w+)\s*$", line)
        if m:
            current = m.group(1)
            assert current not in sections, f"section %{current} appears twice"
            sections[current] = []
            continue
        if current is None:
            if line.strip() and not line.lstrip().startswith("#"):
                k, _, v = line.partition(":")
                header[k.strip()] = v.strip()
        else:
            sections[current].append(line)
    return header, {k: "\n".join(v) for k, v in sections.items()}


@pytest.fixture(scope="module")
def definition() -> tuple[dict[str, str], dict[str, str]]:
    return parse_def(DEF.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_def_has_pinned_base_and_every_section(definition):
    header, sections = definition
    # the tested route: Debian's own bootstrap (containers/build_rootfs.py builds the same here)
    assert header["Bootstrap"] == "debootstrap" and header["OSVersion"] == "bookworm"
    assert re.fullmatch(r"https?://\S+/debian/?", header["MirrorURL"])
    assert {"python3", "python3-venv"} <= set(header["Include"].split())
    # the documented registry alternative stays pinned to an exact version or digest
    alt = re.search(r"^#\s+From:\s*(\S+)", DEF.read_text(encoding="utf-8"), re.M)
    assert alt and re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*|[\w./-]+@sha256:[0-9a-f]{64}", alt.group(1)), \
        "the alternative registry base must be pinned to an exact version or digest"
    for s in ("arguments", "labels", "files", "environment", "post", "runscript", "test", "help"):
        assert s in sections, f"%{s} missing"
    env = sections["environment"]
    assert "HDF5_USE_FILE_LOCKING=FALSE" in env
    assert re.search(r"SNAP_USERDIR=\$\{TMPDIR", env), "the SNAP user dir must live on scratch"
    assert "TORCH_HOME=" in env
    assert "avalanche-hpc" in sections["runscript"]
    t = sections["test"]
    assert "gpt" in t and " -h" in t and "avalanche-hpc --help" in t and "import torch" in t


def _pins(post: str) -> dict[str, str]:
    return {m.group(1).lower(): m.group(2) for m in re.finditer(r"\b([A-Za-z][\w.-]*)==([\w.+-]+)", post)}


def test_def_python_pins_equal_pyproject(definition, pyproject):
    _, sections = definition
    pins = _pins(sections["post"])
    pins.pop("pip", None)
    reqs = [Requirement(r) for r in pyproject["project"]["dependencies"]]
    for req in reqs:
        name = req.name.lower()
        assert name in pins, f"{name} (pyproject dependency) is not pinned in %post"
        exact = [s.version for s in req.specifier if s.operator == "=="]
        if exact:
            assert pins[name] == exact[0], f"{name}: image {pins[name]} != pyproject {exact[0]}"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} violates {req.specifier}"
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    # nothing pinned in the image that the project does not depend on
    assert set(pins) <= {r.name.lower() for r in reqs}


def test_def_labels_carry_the_versions(definition, pyproject):
    _, sections = definition
    labels = dict(line.strip().split(None, 1) for line in sections["labels"].splitlines() if line.strip())
    assert labels["avalanche_hpc.version"] == pyproject["project"]["version"]
    assert labels["torch.version"] == "2.14.1" and labels["torchvision.version"] == "0.29.1"
    args = dict(line.strip().split("=", 1) for line in sections["arguments"].splitlines()
                if "=" in line and not line.strip().startswith("#"))
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["SNAP_VERSION"])
    assert labels["snap.version"] == "{{ SNAP_VERSION }}"
    assert args["SNAP_MAJOR"] == ".".join(args["SNAP_VERSION"].split(".")[:2])


def test_def_snap_install_is_headless_and_the_update_hang_is_bounded(definition):
    _, sections = definition
    post = sections["post"]
    assert re.search(r"-q -varfile \S+", post), "SNAP must install unattended from a response file"
    assert "sys.installationDir=" in post
    assert "--nogui" in post and "--update-all" in post
    assert "updates=0" in post, "the update must be stopped when it reports no more updates"
    assert re.search(r"/bin/kill -TERM -- \"-\$UPDATE_PID\"", post), "the hanging updater (process group) must be ended"
    assert re.search(r"-Xmx\{\{ GPT_XMX \}\}.*gpt\.vmoptions", post)
    assert "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0" in post
    assert "sha256sum -c" in post


def test_def_build_args_are_defined_and_substituted(definition):
    """Apptainer replaces {{ NAME }} from %arguments, but skips a line where '#' precedes it (its comment rule)."""
    _, sections = definition
    defaults = {ln.split("=", 1)[0].strip() for ln in sections["arguments"].splitlines()
                if "=" in ln and not ln.strip().startswith("#")}
    for n, line in enumerate(DEF.read_text(encoding="utf-8").splitlines(), 1):
        for m in re.finditer(r"\{\{\s*(\w+)\s*\}\}", line):
            assert m.group(1) in defaults, f"line {n}: {{{{ {m.group(1)} }}}} has no default in %arguments"
            assert not re.search(r"#[^!]", line[:m.start()]), f"line {n}: '#' before the build arg disables it"


@pytest.mark.parametrize("section", ["post", "test", "environment", "runscript"])
def test_def_scripts_parse_as_posix_sh(definition, section, tmp_path):
    """Apptainer runs these with /bin/sh (dash in the Debian base): `sh -n` checks their syntax here."""
    import shutil
    import subprocess

    sh = shutil.which("dash") or shutil.which("sh")
    if sh is None:
        pytest.skip("no POSIX sh on this machine")
    _, sections = definition
    defaults = dict(ln.strip().split("=", 1) for ln in sections["arguments"].splitlines()
                    if "=" in ln and not ln.strip().startswith("#"))
    body = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: defaults[m.group(1)], sections[section])
    script = tmp_path / f"{section}.sh"
    script.write_text(body + "\n", encoding="utf-8")
    r = subprocess.run([sh, "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, f"%{section}: {r.stderr}"


def test_def_files_exist_in_the_repository(definition):
    _, sections = definition
    for line in sections["files"].splitlines():
        if line.strip():
            src = line.split()[0]
            assert (REPO / src).exists(), f"%files source {src} missing"


def test_makefile_builds_the_container():
    mk = (REPO / "Makefile").read_text(encoding="utf-8")
    m = re.search(r"^container:.*\n((?:\t.*\n)+)", mk, re.M)
    assert m and " build " in m.group(1) and "containers/avalanche.def" in m.group(1)
    assert re.search(r"^APPTAINER \?= apptainer$", mk, re.M) and "--fakeroot" in mk


# -- the graphs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("graph", GRAPHS, ids=[g.name for g in GRAPHS])
def test_graph_uses_only_real_snap_names(graph):
    root = ET.parse(graph).getroot()  # well-formed XML
    assert root.tag == "graph"
    nodes = root.findall("node")
    ops = [n.findtext("operator") for n in nodes]
    assert ops == ORDER, f"processing chain {ops}"
    ids = {n.get("id") for n in nodes}
    for n in nodes:
        op = n.findtext("operator")
        assert op in SNAP_OPERATORS, f"{graph.name}: unknown SNAP operator {op}"
        for src in n.find("sources") or []:
            assert src.get("refid") in ids
        for p in n.find("parameters"):
            assert p.tag in SNAP_OPERATORS[op], f"{graph.name}: {op} has no parameter {p.tag!r}"
            value = (p.text or "").strip()
            if (op, p.tag) in SNAP_VALUE_SETS and "${" not in value:
                assert value in SNAP_VALUE_SETS[(op, p.tag)], f"{op}.{p.tag}={value!r}"
    tc = root.find("node[@id='Terrain-Correction']/parameters")
    assert tc.findtext("demName") == "External DEM"  # RangeDopplerGeocodingOp.externalDEMStr
    assert tc.findtext("externalDEMFile") == "${demFile}"
    assert tc.findtext("saveLayoverShadowMask") == "true" and tc.findtext("alignToStandardGrid") == "true"
    cal = root.find("node[@id='Calibration']/parameters")
    assert cal.findtext("outputSigmaBand") == "true" and cal.findtext("outputImageScaleInDb") == "false"
    text = graph.read_text(encoding="utf-8")
    for cite in ("microwave-toolbox", "snap-engine", "RangeDopplerGeocodingOp.java", "WriteOp.java"):
        assert cite in text, f"{graph.name}: the source citation comment must name {cite}"


@pytest.mark.parametrize("graph", GRAPHS, ids=[g.name for g in GRAPHS])
def test_graph_placeholders_are_all_supplied_by_gpt_py(graph, tmp_path):
    params = gptmod.graph_parameters(
        input_path=tmp_path / "in.zip", output_path=tmp_path / "out.tif", dem_path=tmp_path / "dem.tif",
        crs_epsg=32632, pixel_size_m=20.0, grid_origin=(300000.0, 5100000.0))
    needed = gptmod.graph_placeholders(graph)
    assert {"demFile", "pixelSpacing", "mapProjection", "polarisations"} <= needed
    assert needed == set(params), f"unsupplied: {needed - set(params)}, unused: {set(params) - needed}"
    assert params["mapProjection"] == "EPSG:32632" and params["pixelSpacing"] == "20.0"
    # the output band order (VV, VH, mask) is fixed by Terrain-Correction's sourceBands, not left to the reader
    assert params["sourceBands"] == "Sigma0_VV,Sigma0_VH"
    root = ET.parse(graph).getroot()
    assert root.findtext("node[@id='Terrain-Correction']/parameters/sourceBands") == "${sourceBands}"


# -- container-aware launching ---------------------------------------------------------------------
def test_python_command_from_profile(tmp_path):
    assert python_command({"partition": "gpu"}) is None
    assert python_command(None) is None
    prof = {"image": "/shared/avalanche.sif", "binds": ["/scratch", "/data/studies"]}
    cmd = python_command(prof, extra_binds=[tmp_path])
    assert cmd == ["apptainer", "exec", "--nv", "--bind", f"/scratch,/data/studies,{tmp_path}",
                   "/shared/avalanche.sif", "python"]
    # a TOML profile file works the same; the string form is what submitit's `python=` takes
    p = tmp_path / "cluster.toml"
    p.write_text('name = "c"\nimage = "/img/a b.sif"\nbinds = ["/data"]\nscratch = "/scratch"\n', encoding="utf-8")
    assert python_setting(p) == "apptainer exec --nv --bind /data,/scratch '/img/a b.sif' python"
    # a validated Profile object (the HPC layer's) works the same
    from avalanche_hpc.hpc.profiles import load_profile

    assert python_command(load_profile(p)) == python_command(p)


def test_python_command_rejects_a_string_of_binds():
    from avalanche_hpc.errors import ConfigError

    with pytest.raises(ConfigError, match="binds"):
        python_command({"image": "/x.sif", "binds": "/scratch"})


# -- runtimes: apptainer or charliecloud (per cluster profile) -----------------------------------------
def test_charliecloud_runtime_runs_ch_run_with_the_binds_and_the_image_environment(tmp_path):
    from avalanche_hpc.errors import ConfigError, MissingInputError
    from avalanche_hpc.hpc.container import IMAGE_ENV_FILE, container_prefix
    from avalanche_hpc.hpc.profiles import load_profile, parse_profile

    image = tmp_path / "rootfs"
    for d in ("data", "scratch", "opt"):
        (image / d).mkdir(parents=True)
    prof = {"runtime": "charliecloud", "image": str(image), "binds": ["/data", "/srv/x:/opt"], "scratch": "/scratch"}
    cmd = python_command(prof, extra_binds=[tmp_path / "study"])  # under /tmp: ch-run binds /tmp itself
    assert cmd == ["ch-run", "--unset-env=PYTHONPATH", "-b", "/data", "-b", "/srv/x:/opt", "-b", "/scratch",
                   str(image), "--", "/bin/sh", "-c", f'. {IMAGE_ENV_FILE} && exec "$@"', "avalanche", "python"]
    # the same string through a shell runs python with its arguments (what submitit's sbatch does)
    setting = python_setting(prof)
    assert setting.startswith("ch-run --unset-env=PYTHONPATH -b /data ") and setting.endswith(" avalanche python")
    # a bind whose mount point the read-only image lacks is refused with the fix
    with pytest.raises(MissingInputError, match=r"--mount-point /work"):
        container_prefix({**prof, "binds": ["/work"]})
    with pytest.raises(ConfigError, match="SRC\\[:DST\\]"):
        container_prefix({**prof, "binds": ["/data:/data:ro"]})
    with pytest.raises(MissingInputError, match="build_rootfs.py"):
        container_prefix({**prof, "image": str(tmp_path / "none")}, check_image=True)
    # validated per profile: only the two runtimes; a runtime needs an image; apptainer stays the default
    assert load_profile(REPO / "slurm" / "profiles" / "example-university.toml").runtime == "apptainer"
    assert load_profile(REPO / "slurm" / "profiles" / "local-charliecloud.toml").runtime == "charliecloud"
    with pytest.raises(ConfigError, match=r"runtime: unknown value 'docker' -> valid values: apptainer, charliecloud"):
        parse_profile({"name": "x", "image": "/i", "runtime": "docker"})
    with pytest.raises(ConfigError, match="'runtime' is 'charliecloud' but 'image' is not set"):
        parse_profile({"name": "x", "runtime": "charliecloud"})
    with pytest.raises(ConfigError, match="runtime"):
        python_command({"image": "/i", "runtime": "podman"})


# -- containers/build_rootfs.py: reading the definition (no build) ------------------------------------
def test_build_script_reads_the_definitions_own_sections(definition):
    from containers import build_rootfs

    header, sections = definition
    assert build_rootfs.parse_def(DEF.read_text(encoding="utf-8")) == (header, sections)
    args = build_rootfs.arguments(sections)
    assert args["WITH_SNAP"] == "1" and args["WITH_VGG16"] == "1"
    post = build_rootfs.substitute(sections["post"], {**args, "WITH_SNAP": "0"})
    assert 'if [ "0" = "1" ]; then' in post and "{{" not in post
    # Apptainer's comment rule: nothing is replaced after a '#'
    assert build_rootfs.substitute("echo {{ A }} # {{ A }}", {"A": "x"}) == "echo x # {{ A }}"
    with pytest.raises(build_rootfs.BuildError, match="NOPE"):
        build_rootfs.substitute("echo {{ NOPE }}", args)
    assert ("avalanche_hpc", "/opt/avalanche-hpc/avalanche_hpc") in build_rootfs.files_entries(sections)
    # every SNAP command sits behind the build argument that switches SNAP off
    snap_block = re.search(r'if \[ "\{\{ WITH_SNAP \}\}" = "1" \]; then\n(.*?)\n    fi\n\n', sections["post"], re.S)
    assert snap_block and "snap_installer.sh" in snap_block.group(1) and "gpt.vmoptions" in snap_block.group(1)
    assert "snap_installer" not in sections["post"].replace(snap_block.group(1), "")
    # each %post step is named; a failure names it (the EXIT trap)
    steps = re.findall(r'^\s*step "([^"]+)"', sections["post"], re.M)
    assert {"system packages", "python stack: torch", "avalanche-hpc"} <= set(steps)
    assert build_rootfs.failed_step("==> %post step: a\n%post FAILED in step: python stack: torch (exit 1)\n") \
        == "python stack: torch"


def test_build_cache_key_follows_the_definition_pyproject_and_project_files(tmp_path):
    from containers import build_rootfs

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    entries = [("pkg", "/opt/p/pkg")]
    k1 = build_rootfs.files_key(entries, tmp_path)
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    assert build_rootfs.files_key(entries, tmp_path) == k1  # bytecode does not count
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    assert build_rootfs.files_key(entries, tmp_path) != k1
    head = {"Bootstrap": "debootstrap"}
    s = build_rootfs.stack_key("def", "pyproject", {"WITH_SNAP": "1"}, head)
    assert s != build_rootfs.stack_key("def", "pyproject", {"WITH_SNAP": "0"}, head)
    assert s != build_rootfs.stack_key("def ", "pyproject", {"WITH_SNAP": "1"}, head)
    assert s != build_rootfs.stack_key("def", "pyproject2", {"WITH_SNAP": "1"}, head)


def test_build_script_refuses_the_registry_route_and_unknown_build_args(tmp_path):
    from containers import build_rootfs

    docker = tmp_path / "docker.def"
    docker.write_text("Bootstrap: docker\nFrom: python:3.11.7-slim-bookworm\n\n%post\n    true\n")
    with pytest.raises(build_rootfs.BuildError, match="'Bootstrap: debootstrap' route only"):
        build_rootfs.build(docker, tmp_path / "cache", {})
    with pytest.raises(build_rootfs.BuildError, match="--build-arg NOPE: not in %arguments"):
        build_rootfs.build(DEF, tmp_path / "cache", {"NOPE": "1"})
    assert not (tmp_path / "cache").exists()  # refused before anything was written
    assert build_rootfs.reachable("http://127.0.0.1:9/") is False  # the discard port: nothing listens
