"""Sentinel-1 product names: parse them, derive the relative orbit, match a study's orbits.

A Sentinel-1 product name (ESA naming convention of the SAFE products)::

    S1A_IW_GRDH_1SDV_20170110T054325_20170110T054350_014779_018103_1F6A.SAFE
    MMM_BB_TTTR_LFPP_YYYYMMDDTHHMMSS_YYYYMMDDTHHMMSS_OOOOOO_DDDDDD_CCCC

mission (S1A/S1B/S1C/S1D), beam mode (IW, EW, SM, WV), product type and resolution
(GRD + H/M/F), processing level (1), product class (S standard, A annotation),
polarisation (SV single VV, SH single HH, DV dual VV+VH, DH dual HH+HV), start
and stop time (UTC), absolute orbit, mission datatake id (hex), unique id (hex).

The relative orbit (the track, 1..175 in the 12-day repeat cycle) is derived from
the absolute orbit with each unit's offset: S1A ``(abs - 73) % 175 + 1``,
S1B ``(abs - 27) % 175 + 1``, S1C ``(abs - 172) % 175 + 1`` (the S1C offset as
used by MintPy ``mintpy/geometry/orbit.py``; S1C flies the former S1B phase). S1D names
parse, but its offset is not known yet: its relative orbit raises ``InputError``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from avalanche_hpc.errors import InputError, Problem
from avalanche_hpc.study import OrbitConfig, StudyConfig

# The product identifier: every Sentinel-1 unit (S1A..S1D); also the head of SNAP output names.
PRODUCT_ID = (
    r"(?P<mission>S1[A-D])_(?P<mode>IW|EW|SM|WV|S[1-6])_(?P<product_type>GRD[HMF]|SLC_|RAW_|OCN_)_"
    r"(?P<level>[0-2])(?P<product_class>[SA])(?P<polarisation>SH|SV|DH|DV|HH|HV|VV|VH)_"
    r"(?P<start>\d{8}T\d{6})_(?P<stop>\d{8}T\d{6})_(?P<absolute_orbit>\d{6})_"
    r"(?P<datatake>[0-9A-F]{6})_(?P<unique_id>[0-9A-F]{4})"
)
PRODUCT_RE = re.compile(rf"^{PRODUCT_ID}(?P<ext>\.SAFE|\.zip|\.SAFE\.zip)?$")
# A product identifier followed by '_' and anything (SNAP writes its operator suffixes there).
PRODUCT_PREFIX_RE = re.compile(rf"^{PRODUCT_ID}(?:_(?P<rest>.*))?$")
TIME_FORMAT = "%Y%m%dT%H%M%S"  # start/stop times in product and orbit-file names (UTC)
EXPECTED_PATTERN = (
    "S1X_MM_TTTR_LFPP_YYYYMMDDTHHMMSS_YYYYMMDDTHHMMSS_OOOOOO_DDDDDD_CCCC[.SAFE|.zip], "
    "e.g. S1A_IW_GRDH_1SDV_20170110T054325_20170110T054350_014779_018103_1F6A.zip"
)
# Offsets of absolute -> relative orbit per unit (relative = (absolute - offset) % 175 + 1).
RELATIVE_ORBIT_OFFSET = {"S1A": 73, "S1B": 27, "S1C": 172}
ORBITS_PER_CYCLE = 175
# Polarisation class -> bands in the product.
POLARISATION_BANDS = {"SV": ("VV",), "SH": ("HH",), "DV": ("VV", "VH"), "DH": ("HH", "HV"),
                      "VV": ("VV",), "HH": ("HH",), "VH": ("VH",), "HV": ("HV",)}
GRD_TYPES = ("GRDH", "GRDM", "GRDF")


def relative_orbit(mission: str, absolute_orbit: int) -> int:
    """Relative orbit (1..175) of an absolute orbit of one Sentinel-1 unit."""
    try:
        offset = RELATIVE_ORBIT_OFFSET[mission]
    except KeyError:
        raise InputError(Problem("", f"unit {mission}", f"no absolute -> relative orbit offset is known for "
                                 f"{mission!r} (known: {sorted(RELATIVE_ORBIT_OFFSET)})",
                                 "give the study orbit explicitly (--orbit)")) from None
    return (absolute_orbit - offset) % ORBITS_PER_CYCLE + 1


def parse_time(text: str) -> dt.datetime:
    """A ``YYYYMMDDTHHMMSS`` time of a product or orbit-file name (UTC, naive); ValueError if invalid."""
    return dt.datetime.strptime(text, TIME_FORMAT)


@dataclass(frozen=True)
class S1Product:
    """The fields of a Sentinel-1 product name, and the path it came from."""

    path: Path
    mission: str
    mode: str
    product_type: str
    level: int
    product_class: str
    polarisation: str  # "DV", "SV", ...
    start: dt.datetime  # UTC
    stop: dt.datetime  # UTC
    absolute_orbit: int
    datatake: str
    unique_id: str

    @property
    def name(self) -> str:
        """The product identifier without extension."""
        return (f"{self.mission}_{self.mode}_{self.product_type}_{self.level}{self.product_class}{self.polarisation}_"
                f"{self.start:%Y%m%dT%H%M%S}_{self.stop:%Y%m%dT%H%M%S}_{self.absolute_orbit:06d}_"
                f"{self.datatake}_{self.unique_id}")

    @property
    def relative_orbit(self) -> int:
        return relative_orbit(self.mission, self.absolute_orbit)

    @property
    def date(self) -> dt.date:
        """Acquisition date (UTC date of the start time): the scene folder YYYYMMDD."""
        return self.start.date()

    @property
    def bands(self) -> tuple[str, ...]:
        return POLARISATION_BANDS[self.polarisation]

    @property
    def is_grd(self) -> bool:
        return self.product_type in GRD_TYPES

    def study_orbit(self, config: StudyConfig) -> OrbitConfig:
        """The study orbit whose relative orbit this product flies; InputError if none."""
        rel = self.relative_orbit
        for o in config.orbits:
            if o.relative_orbit == rel:
                return o
        known = ", ".join(f"{o.id} (relative orbit {o.relative_orbit}, {o.direction})" for o in config.orbits)
        raise InputError(Problem(
            str(self.path), f"relative orbit {rel}",
            f"{self.mission} absolute orbit {self.absolute_orbit} is relative orbit {rel}, which is not one of the "
            f"study's orbits: {known}",
            "add this orbit to study.toml [[orbits]] (id, direction, relative_orbit) or leave the product out"))


def parse_product_name(path: str | Path) -> S1Product:
    """Parse a Sentinel-1 product path (``.SAFE`` directory, ``.zip`` or bare identifier).

    Raises ``InputError`` naming the file and the expected pattern when the name does not match.
    """
    p = Path(path)
    name = p.name.rstrip("/")
    m = PRODUCT_RE.match(name)
    if m is None:
        raise InputError(Problem(str(p), "file name", f"{name!r} is not a Sentinel-1 product name",
                                 f"products must keep their ESA names: {EXPECTED_PATTERN}"))
    return product_from_match(p, m)


def product_from_match(p: Path, m: re.Match[str]) -> S1Product:
    """The product of a ``PRODUCT_RE``/``PRODUCT_PREFIX_RE`` match; InputError on impossible times."""
    g = m.groupdict()
    try:
        start, stop = parse_time(g["start"]), parse_time(g["stop"])
    except ValueError as e:
        raise InputError(Problem(str(p), "file name", f"invalid start/stop time in {p.name!r}: {e}",
                                 f"products must keep their ESA names: {EXPECTED_PATTERN}")) from e
    if stop < start:
        raise InputError(Problem(str(p), "file name", f"stop time {stop} is before start time {start}",
                                 "check the product name; it must be the original ESA name"))
    return S1Product(
        path=p, mission=g["mission"], mode=g["mode"], product_type=g["product_type"], level=int(g["level"]),
        product_class=g["product_class"], polarisation=g["polarisation"], start=start, stop=stop,
        absolute_orbit=int(g["absolute_orbit"]), datatake=g["datatake"], unique_id=g["unique_id"],
    )


def list_products(source: str | Path | Sequence[str | Path]) -> list[S1Product]:
    """GRD products from a directory (``*.SAFE`` and ``*.zip`` in it), a text file listing paths, or a list.

    Every name is validated; all bad names are reported together (InputError). Sorted by start time.
    """
    paths: list[Path]
    if isinstance(source, str | Path):
        src = Path(source)
        if src.is_dir():
            paths = sorted(q for q in src.iterdir() if q.name.endswith((".SAFE", ".zip")))
            if not paths:
                raise InputError(Problem(str(src), "", "no Sentinel-1 products (*.SAFE, *.zip) in this directory",
                                         "point --products at the folder holding the downloaded GRD products"))
        elif src.is_file():
            lines = [ln.strip() for ln in src.read_text(encoding="utf-8").splitlines()]
            paths = [Path(ln) if Path(ln).is_absolute() else src.parent / ln
                     for ln in lines if ln and not ln.startswith("#")]
        else:
            raise InputError(Problem(str(src), "", "does not exist",
                                     "give a directory of products or a text file listing one product path per line"))
    else:
        paths = [Path(q) for q in source]
    problems: list[Problem] = []
    out: list[S1Product] = []
    for p in paths:
        try:
            prod = parse_product_name(p)
        except InputError as e:
            problems.extend(e.problems)
            continue
        if not prod.is_grd:
            problems.append(Problem(str(p), "product type", f"{prod.product_type} is not a GRD product",
                                    "the SNAP stage takes GRDH/GRDM products only"))
            continue
        out.append(prod)
    if problems:
        raise InputError(problems)
    return sorted(out, key=lambda q: (q.start, q.mission))
