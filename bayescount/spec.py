"""Template specs: load from the catalog, validate, canonicalize and hash.

A spec is a TOML file in ``models/`` (shipped in the wheel as
``bayescount/_models``) naming one registered part per section, with
hyperparameters. Validation reports every problem at once.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import SpecError
from .parts import REGISTRY, part_fields

SECTIONS = ("likelihood", "intercept", "coefficients", "dispersion", "zero_inflation", "random_effects")
#: Sections a likelihood asks for through its gene parameters.
LIKELIHOOD_SLOTS = ("dispersion", "zero_inflation")
TOP_KEYS = {"name", "description", *SECTIONS}


@dataclass(frozen=True)
class Spec:
    """A validated template: one part per section, hyperparameters filled in.

    Examples
    --------
    >>> spec = load_spec("nb_trend")
    >>> spec.name, type(spec.likelihood).__name__
    ('nb_trend', 'NegativeBinomial')
    >>> len(spec.hash)
    64
    """

    name: str
    description: str
    parts: dict  # section -> {"part": name, **hyperparameters}
    likelihood: object
    intercept: object
    coefficients: object
    dispersion: object | None
    zero_inflation: object | None = None
    random_effects: object | None = None

    def canonical(self) -> dict:
        return {"name": self.name, "description": self.description, **copy.deepcopy(self.parts)}

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): what is hashed and saved with fits."""
        return json.dumps(self.canonical(), sort_keys=True)

    @property
    def hash(self) -> str:
        return spec_hash(self.to_json())

    def prior(self, slot: str):
        return getattr(self, slot)

    def with_overrides(self, overrides: dict | None) -> "Spec":
        return spec_from_dict(self.canonical(), overrides)


def spec_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def catalog_dir() -> Path:
    """The template catalog: inside the installed package, else the source tree."""
    packaged = resources.files("bayescount") / "_models"
    if packaged.is_dir():
        return Path(str(packaged))
    source = Path(__file__).resolve().parent.parent / "models"
    if source.is_dir():
        return source
    raise SpecError("the template catalog (models/) is missing from this installation; reinstall bayescount")


def list_templates() -> list[str]:
    """Names of the templates in the catalog.

    Examples
    --------
    >>> "nb_trend" in list_templates() and "poisson" in list_templates()
    True
    """
    return sorted(p.stem for p in catalog_dir().glob("*.toml"))


def load_spec(name_or_path: str, overrides: dict | None = None) -> Spec:
    """Load a template by catalog name or TOML path, with optional overrides.

    Parameters
    ----------
    name_or_path : str
        A catalog name (see :func:`list_templates`) or a path to a TOML spec.
    overrides : dict, optional
        ``{section: {key: value}}`` merged over the template; unknown keys are errors.

    Examples
    --------
    >>> load_spec("nb_trend", {"dispersion": {"sigma_d_sigma": 0.5}}).dispersion.sigma_d_sigma
    0.5
    """
    if isinstance(name_or_path, Spec):
        return name_or_path.with_overrides(overrides) if overrides else name_or_path
    path = Path(str(name_or_path))
    if path.suffix != ".toml":
        path = catalog_dir() / f"{name_or_path}.toml"
        if not path.is_file():
            raise SpecError(f"unknown template {name_or_path!r}; available: {list_templates()}")
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SpecError(f"cannot read spec {str(path)!r}: {exc}") from None
    return spec_from_dict(raw, overrides)


def spec_from_json(text: str) -> Spec:
    return spec_from_dict(json.loads(text))


def spec_from_dict(raw: dict, overrides: dict | None = None) -> Spec:
    """Validate a spec dictionary (and overrides), reporting every error at once."""
    raw = copy.deepcopy(raw)
    errors: list[str] = []
    for section, values in (overrides or {}).items():
        if section not in SECTIONS:
            errors.append(f"override section {section!r} is unknown (sections: {list(SECTIONS)})")
        elif not isinstance(values, dict):
            errors.append(f"override for {section!r} must be a table of key = value")
        else:
            base = raw.setdefault(section, {})
            if "part" in values and values["part"] != base.get("part"):
                base.clear()
            base.update(values)
    for key in raw:
        if key not in TOP_KEYS:
            errors.append(f"unknown top-level key {key!r} (allowed: {sorted(TOP_KEYS)})")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        errors.append("spec needs a non-empty string 'name'")
    description = raw.get("description", "")
    if not isinstance(description, str):
        errors.append("'description' must be a string")

    parts, resolved = {}, {}
    for section in SECTIONS:
        table = raw.get(section)
        if table is None:
            continue
        if not isinstance(table, dict):
            errors.append(f"[{section}] must be a table")
            continue
        part_name = table.get("part")
        choices = REGISTRY[section]
        if part_name not in choices:
            errors.append(f"[{section}] part {part_name!r} is not registered (choose from {sorted(choices)})")
            continue
        cls = choices[part_name]
        defaults = part_fields(cls)
        values = dict(defaults)
        for key, value in table.items():
            if key == "part":
                continue
            if key not in defaults:
                errors.append(
                    f"[{section}] {key!r} is not a hyperparameter of part {part_name!r} "
                    f"(known: {sorted(defaults)})"
                )
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                errors.append(f"[{section}] {key} must be a finite number, got {value!r}")
                continue
            if ("sigma" in key or key.startswith("grid") or key.endswith("weight")) and value <= 0:
                errors.append(f"[{section}] {key} must be > 0, got {value!r}")
                continue
            if key == "n_grid" and (value != int(value) or value < 2):
                errors.append(f"[{section}] n_grid must be an integer >= 2, got {value!r}")
                continue
            if "sigma" in key and value <= 0:
                errors.append(f"[{section}] {key} must be > 0, got {value!r}")
                continue
            values[key] = float(value)
        parts[section] = {"part": part_name, **values}
        resolved[section] = cls(**values)

    for section in ("likelihood", "intercept", "coefficients"):
        if section not in raw:
            errors.append(f"spec needs a [{section}] section")
    lik = resolved.get("likelihood")
    if lik is not None:
        needed = set(lik.prior_slots.values())
        for slot in needed:
            if slot not in raw:
                errors.append(f"likelihood {parts['likelihood']['part']!r} needs a [{slot}] section")
        for slot in LIKELIHOOD_SLOTS:
            if slot in raw and slot not in needed:
                errors.append(f"[{slot}] is not used by likelihood {parts['likelihood']['part']!r}; remove it")
    if errors:
        raise SpecError("invalid spec:\n  - " + "\n  - ".join(errors))
    return Spec(
        name=name,
        description=description,
        parts=parts,
        likelihood=resolved["likelihood"],
        intercept=resolved["intercept"],
        coefficients=resolved["coefficients"],
        dispersion=resolved.get("dispersion"),
        zero_inflation=resolved.get("zero_inflation"),
        random_effects=resolved.get("random_effects"),
    )



__all__ = ["Spec", "load_spec", "list_templates", "spec_from_dict", "spec_from_json", "spec_hash", "catalog_dir"]
