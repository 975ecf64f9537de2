"""The one model loader: every stage that needs a model (evaluate, score, monitor, serve) loads it here.

Two rules hold for everything loaded (see docs/security.md):

- **skops only, with an explicit list of trusted types.** The artifact's ``MLmodel`` must say
  ``serialization_format: skops``; the ``.skops`` file is loaded with :func:`skops.io.load` and only the types
  of :func:`trusted_types` (sklearn, numpy, scipy internals and ``operator.methodcaller``). Pickle and
  cloudpickle are never opened, so nothing in an artifact runs on load.
- **Registered versions only if the gate blessed them.** When the gate registers a version
  (:func:`airloop.store.registry.register`), :func:`bless` tags it with ``airloop.blessing``: an HMAC-SHA256,
  under the model-signing key (:func:`airloop.settings.model_signing_key`), of the model name, the version,
  its run id and the sha256 of the artifact's files. A version without a valid tag, or whose bytes changed
  since, is refused with :class:`ModelRefused`: one log line, and a record in the lake's ``refusals/`` zone.

``version_uri`` names a version by number (``models:/NAME/VERSION``), so a concurrent alias move cannot mix
versions; ``load_version`` loads a registered version (blessing checked); ``load_uri`` loads any model URI,
checking the blessing when the URI names a registered version.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

from airloop.config import PipelineConfig
from airloop.errors import BadInput

log = logging.getLogger(__name__)

BLESSING_TAG = "airloop.blessing"
DIGEST_TAG = "airloop.artifact_sha256"
_BLESSING_SCHEME = "hmac-sha256-v1"
# Types a saved pipeline may reference beyond skops' defaults: sklearn/numpy/scipy internals (tree
# structures, dtypes) and the operator.methodcaller that casts categorical columns to text.
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.")
TRUSTED_EXACT = frozenset({"operator.methodcaller"})
# Written by MLflow into every download of a models:/NAME/VERSION URI; not part of the logged artifact.
_NOT_ARTIFACT = frozenset({"registered_model_meta"})
_VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)/?$")


class ModelRefused(BadInput):
    """A model Airloop will not load: not skops, a type outside the trusted list, or not blessed by the gate."""


def version_uri(cfg: PipelineConfig, version: str | int) -> str:
    """``models:/airloop-<pipeline>/<version>``."""
    return f"models:/{cfg.registered_model_name}/{version}"


def untrusted_beyond_allow_list(types: list[str]) -> list[str]:
    """The entries of ``types`` (skops' untrusted type names) that Airloop's allow-list does not trust."""
    return [t for t in types if not (t.startswith(TRUSTED_PREFIXES) or t in TRUSTED_EXACT)]


def trusted_types(skops_file: str | Path) -> list[str]:
    """The types to pass to ``skops.io.load`` for ``skops_file``; :class:`ModelRefused` if the file names
    any type outside the allow-list. Reads the file's schema only: nothing in it runs."""
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=skops_file)
    except Exception as err:  # not a skops archive at all
        raise ModelRefused(f"{skops_file}: not a readable skops file ({type(err).__name__}: {err})") from None
    unexpected = untrusted_beyond_allow_list(untrusted)
    if unexpected:
        raise ModelRefused(
            f"{skops_file}: references types outside the trusted list (sklearn., numpy., scipy., "
            f"operator.methodcaller): {unexpected}"
        )
    return list(untrusted)


def artifact_digest(model_dir: str | Path) -> str:
    """sha256 over the sorted (relative path, sha256 of bytes) of every file of a downloaded model."""
    root = Path(model_dir)
    outer = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in _NOT_ARTIFACT:
            continue
        inner = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                inner.update(chunk)
        outer.update(f"{rel}\0{inner.hexdigest()}\n".encode())
    return outer.hexdigest()


def _signature(name: str, version: str, run_id: str, digest: str) -> str:
    from airloop import settings

    message = f"{_BLESSING_SCHEME}\n{name}\n{version}\n{run_id}\n{digest}".encode()
    mac = hmac.new(settings.model_signing_key(), message, hashlib.sha256).hexdigest()
    return f"{_BLESSING_SCHEME}:{mac}"


def _download(uri: str, into: str) -> Path:
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=into))


def _load_skops_dir(model_dir: Path, where: str) -> Any:
    """The estimator saved in a downloaded sklearn-flavor model folder, through skops only."""
    import skops.io as sio
    import yaml

    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        raise ModelRefused(f"{where}: no MLmodel file; expected an MLflow sklearn model saved with skops")
    meta = yaml.safe_load(mlmodel.read_text()) or {}
    flavor = (meta.get("flavors") or {}).get("sklearn") or {}
    fmt = flavor.get("serialization_format")
    if fmt != "skops":
        raise ModelRefused(
            f"{where}: serialization_format is {fmt!r}, expected 'skops' (Airloop never loads pickle or "
            f"cloudpickle: unpickling runs code)"
        )
    data = (model_dir / str(flavor.get("pickled_model", "model.skops"))).resolve()
    if model_dir.resolve() not in data.parents or not data.is_file():
        raise ModelRefused(f"{where}: the skops file {flavor.get('pickled_model')!r} is not inside the model")
    return sio.load(data, trusted=trusted_types(data))


def _record_refusal(name: str, version: str | None, uri: str, reason: str) -> None:
    """One log line and one lake record per refusal; recording never hides the refusal itself."""
    log.error("model refused: %s: %s", uri, reason)
    try:
        import uuid

        from airloop.store import lake
        from airloop.store.lake import Lake

        at = dt.datetime.now(dt.UTC)
        pipeline = name.removeprefix("airloop-")
        record = {"event": "model_refused", "model": name, "version": version, "uri": uri, "reason": reason}
        record["at"] = at.isoformat(timespec="microseconds")
        key = f"{at:%Y%m%dT%H%M%S%fZ}-v{version or 'x'}-{uuid.uuid4().hex[:8]}.json"
        lake.write_json(lake.join(Lake(pipeline).zone("refusals"), key), record)
    except Exception as err:  # a refusal must not turn into a different error
        log.warning("could not record the refusal of %s: %s", uri, err)


def refusals(cfg: PipelineConfig) -> list[dict[str, Any]]:
    """Every recorded model refusal of the pipeline, oldest first (the lake's ``refusals/`` zone)."""
    from airloop.store import lake
    from airloop.store.lake import Lake

    uris = [u for u in lake.list_uris(Lake(cfg.name).zone("refusals")) if u.endswith(".json")]
    return sorted((lake.read_json(u) for u in uris), key=lambda r: r.get("at", ""))


def bless(name: str, version: str, run_id: str, model_uri: str) -> str:
    """Sign version ``version`` of registered model ``name`` (from ``run_id``, artifact ``model_uri``): tag it
    with the artifact digest and the blessing HMAC. Only the gate calls this (through registry.register).
    Refuses (ModelRefused) an artifact that is not skops with trusted types. Returns the blessing."""
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory(prefix="airloop-bless-") as tmp:
        model_dir = _download(model_uri, tmp)
        _load_skops_dir(model_dir, model_uri)  # never bless what we would refuse to load
        digest = artifact_digest(model_dir)
    blessing = _signature(name, str(version), run_id, digest)
    client = MlflowClient()
    client.set_model_version_tag(name, str(version), DIGEST_TAG, digest)
    client.set_model_version_tag(name, str(version), BLESSING_TAG, blessing)
    return blessing


def check_blessed(name: str, version: str, model_dir: Path, tags: dict[str, str], run_id: str) -> None:
    """ModelRefused unless ``tags`` carry a blessing valid for these bytes, this version and this run."""
    claimed = tags.get(BLESSING_TAG)
    if not claimed:
        raise ModelRefused(
            f"model {name!r} v{version}: not blessed by Airloop's gate (no {BLESSING_TAG} tag); versions "
            f"registered outside the gate are never loaded"
        )
    expected = _signature(name, str(version), run_id, artifact_digest(model_dir))
    if not hmac.compare_digest(claimed.encode(), expected.encode()):
        raise ModelRefused(
            f"model {name!r} v{version}: the {BLESSING_TAG} tag does not match this version's bytes, run and "
            f"the model-signing key (tampered with, copied from another version, or signed with another key)"
        )


def _load_registered(name: str, version: str, uri: str, *, load: bool = True) -> Any:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        mv = MlflowClient().get_model_version(name, str(version))
        with tempfile.TemporaryDirectory(prefix="airloop-load-") as tmp:
            model_dir = _download(uri, tmp)
            check_blessed(name, str(version), model_dir, dict(mv.tags or {}), mv.run_id or "")
            return _load_skops_dir(model_dir, uri) if load else None
    except ModelRefused as err:
        _record_refusal(name, str(version), uri, str(err))
        raise
    except MlflowException as err:
        if "RESOURCE_DOES_NOT_EXIST" in str(getattr(err, "error_code", "")):
            raise BadInput(f"{uri}: no such registered model version") from None
        raise


def load_uri(uri: str) -> Any:
    """The fitted sklearn object behind ``uri`` (``models:/NAME/VERSION``, ``models:/m-<id>``, ``runs:/``).

    Registered versions must carry a valid blessing; every model must be skops with trusted types.
    Raises :class:`ModelRefused` otherwise.
    """
    match = _VERSION_URI.match(uri)
    if match:
        return _load_registered(match["name"], match["version"], uri)
    if uri.startswith("models:/") and "@" in uri:
        raise ModelRefused(f"{uri}: load a version by number (registry.get_version), not through an alias")
    with tempfile.TemporaryDirectory(prefix="airloop-load-") as tmp:
        try:
            return _load_skops_dir(_download(uri, tmp), uri)
        except ModelRefused as err:
            log.error("model refused: %s: %s", uri, err)
            raise


def load_pyfunc(uri: str) -> Any:
    """The MLflow pyfunc model behind ``uri``, as ``mlflow models serve`` would load it, but only after
    :func:`load_uri`'s checks pass (a blessing for registered versions, skops with trusted types for all)."""
    import mlflow.pyfunc

    load_uri(uri)
    return mlflow.pyfunc.load_model(uri)


def load_version(cfg: PipelineConfig, version: str | int) -> Any:
    """The fitted sklearn object of version ``version`` of the pipeline's registered model (blessing checked)."""
    return _load_registered(cfg.registered_model_name, str(version), version_uri(cfg, version))


def verify_version(name: str, version: str | int) -> None:
    """ModelRefused (recorded) unless version ``version`` of ``name`` is blessed and its bytes unchanged."""
    _load_registered(name, str(version), f"models:/{name}/{version}", load=False)
